"""helio: dataset distillation with light labels (the library).

Layers, each importing only the ones before it: errors, params, progress, artifacts, runtime and workspace (the
infrastructure); data (sources, prepared splits, the distilled set, augmented views); models (architectures and
checkpoints, backbones, LoRA, the projector); training (the engine, losses, label sources, the loops); methods
(RDED selection, the projector's fit, Eq. 7 refinement, continual splits); reporting (bytes, figures, tables).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("helio")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
