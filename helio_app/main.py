"""`helio`, the program: a stage's command runs with the stage commands alone, every other command with the whole
CLI. A stage's process so never loads the file where the tools are declared, and adding a tool reruns no stage
(tests/test_architecture.py computes each stage's deps from this module's and stage_commands' imports)."""

from __future__ import annotations

import sys


def main() -> None:
    from helio_app.stage import STAGES

    if len(sys.argv) > 1 and sys.argv[1] in STAGES:
        from helio_app.stage_commands import app
    else:
        from helio_app.cli import app
    app(prog_name="helio")
