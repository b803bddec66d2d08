"""helio: dataset distillation with light labels (library)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("helio")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"


def __getattr__(name: str):
    """`helio_core.Projector` without importing torch on every `import helio_core`."""
    if name == "Projector":
        from helio_core.projector import Projector

        return Projector
    raise AttributeError(f"module 'helio_core' has no attribute {name!r}")
