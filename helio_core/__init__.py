"""helio: dataset distillation with light labels (library)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("helio")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
