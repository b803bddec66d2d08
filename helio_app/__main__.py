"""`python -m helio_app ...` is the `helio` command (for launchers that want a module, e.g. `torchrun -m`)."""

from helio_app.main import main

main()
