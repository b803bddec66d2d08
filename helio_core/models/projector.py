"""The projector: f(x) = s * normalize(E_I(x)) @ (W + dW)^T, a frozen encoder adapted by LoRA (paper 3.2-3.3).

What is stored is only what cannot be recomputed: the encoder's LoRA factors, the head's update
(LoRA factors, or the dense delta when that is smaller, as it is for few classes), the logit scale,
and W itself only for head_init=random. W for head_init=text is rebuilt from the class names with the
backbone's text tower; for head_init=prototypes from the distilled images (class means of the base
encoder's normalised features), which whoever uses the projector has anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from helio_core import artifacts
from helio_core.data.distilled import load_distilled
from helio_core.errors import HelioError
from helio_core.models import lora
from helio_core.models.backbones import Backbone, PooledStages, create_backbone

HeadInit = Literal["text", "prototypes", "random"]
LABEL_BATCH = 256  # images per forward pass when a projector labels a set of images


@dataclass(frozen=True)
class ProjectorSpec:
    """Everything needed to rebuild a projector's structure (stored in the file's metadata)."""

    backbone: str
    resolution: int | None
    features: str
    head_init: HeadInit
    rank: int
    alpha: float
    targets: str | list[str]
    head_rank: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DenseDelta(nn.Module):
    """Parametrization W -> W + delta, for a head update stored densely."""

    def __init__(self, delta: torch.Tensor) -> None:
        super().__init__()
        self.lora_dense = nn.Parameter(delta.clone(), requires_grad=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.lora_dense.to(weight.dtype)


class Projector(nn.Module):
    """Image-to-label projector over a frozen backbone. Takes images in [0, 1], returns logits."""

    def __init__(self, backbone: Backbone, spec: ProjectorSpec, head_weight: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.backbone_info = backbone
        self.spec = spec
        self.encoder = backbone.encoder
        if spec.rank > 0:
            lora.add_lora(self.encoder.trunk, spec.rank, spec.alpha, spec.targets)
        self.head = nn.Linear(backbone.feature_dim, head_weight.shape[0], bias=False)
        self.head.weight.data.copy_(head_weight)
        self.head.weight.requires_grad_(spec.head_init == "random")
        if spec.head_rank > 0:
            parametrize.register_parametrization(
                self.head, "weight", lora.LowRankDelta(self.head.weight, spec.head_rank, spec.head_rank)
            )
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(images), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * self.head(self.features(images))

    def frozen_prefix_blocks(self) -> int:
        """How many leading blocks of the trunk hold nothing trainable (their output can be cached); 0 when
        the stem is adapted or the trunk cannot be split (open_clip, torchvision trunks)."""
        trunk = self.encoder.trunk
        if not isinstance(trunk, PooledStages) or _trainable(trunk.stem):
            return 0
        return next((index for index, block in enumerate(trunk.blocks) if _trainable(block)), len(trunk.blocks))

    def prefix(self, images: torch.Tensor, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen part of the forward pass up to block `blocks` (see `PooledStages.prefix`)."""
        return self.encoder.trunk.prefix(self.encoder.preprocess(images), blocks)

    def from_prefix(self, x: torch.Tensor, pooled: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from a cached `prefix(images, start)`: the same as forward(images)."""
        features = F.normalize(self.encoder.trunk.suffix(x, pooled, start), dim=-1)
        return self.log_scale.exp() * self.head(features)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @classmethod
    def load(cls, path: str | Path, images_dir: str | Path | None = None) -> Projector:
        """A shipped projector, ready to label images in [0, 1]: ``Projector.load(file, images_dir=...)(batch)``.

        `images_dir` is the distilled set (PNGs + labels.json); a prototype-initialised head is rebuilt from it.
        """
        images = labels = None
        if images_dir is not None:
            class_hash = artifacts.read_metadata(path).get("classes_sha256", "")
            images, labels = load_distilled(Path(images_dir), class_hash)
        return load_projector(Path(path), images, labels)[0]


def _trainable(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


def images_sha256(images: torch.Tensor) -> str:
    """Hash of the uint8 images a prototype head is made from, recorded in and checked against the file."""
    return artifacts.sha256_bytes(images.contiguous().numpy().tobytes())


def prototype_head(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Normalised class means of the (base) encoder's normalised features; images uint8 NCHW."""
    with torch.inference_mode():
        features = torch.cat([F.normalize(encoder(chunk.float() / 255), dim=-1) for chunk in images.split(256)])
    if set(labels.tolist()) != set(range(num_classes)):
        raise HelioError(f"prototype head needs images of all {num_classes} classes")
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    return F.normalize(means, dim=-1).clone()


def initial_head(
    backbone: Backbone,
    head_init: HeadInit,
    classes: list[str],
    images: torch.Tensor | None,
    labels: torch.Tensor | None,
    seed: int,
) -> torch.Tensor:
    """W before any update, (C, feature_dim) unit rows."""
    if head_init == "text":
        if backbone.text_head is None:
            raise HelioError(f"projector.head_init=text needs a backbone with a text tower; {backbone.id} has none")
        return backbone.text_head(classes)
    if head_init == "prototypes":
        if images is None or labels is None:
            raise HelioError("projector.head_init=prototypes needs the distilled images")
        return prototype_head(backbone.encoder, images, labels, len(classes))
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(len(classes), backbone.feature_dim, generator=generator), dim=-1)


def build_projector(
    spec: ProjectorSpec,
    classes: list[str],
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    logit_scale: float,
    seed: int,
) -> Projector:
    """A fresh (untrained) projector: base encoder + initial head, LoRA factors B = 0."""
    backbone = create_backbone(spec.backbone, spec.resolution, spec.features)
    head = initial_head(backbone, spec.head_init, classes, images, labels, seed)
    torch.manual_seed(seed)
    return Projector(backbone, spec, head, logit_scale)


def stored_tensors(projector: Projector, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], str]:
    """What the file holds, and the form of the head: 'merged' (random init: W + dW stored whole),
    'dense' (dW stored whole, cheaper than its factors), 'lora' (dW's factors) or 'none' (no head update)."""
    tensors = {f"encoder.{name}": t.to(dtype) for name, t in lora.lora_state(projector.encoder.trunk).items()}
    classes, dim = projector.head.weight.shape
    if projector.spec.head_init == "random":
        tensors["head.weight"] = projector.head.weight.detach().to(dtype)
        head_form = "merged"
    elif projector.spec.head_rank == 0:
        head_form = "none"
    elif classes * dim < projector.spec.head_rank * (classes + dim):
        delta = projector.head.parametrizations.weight[0]
        tensors["head.delta"] = (delta.scale * (delta.lora_b @ delta.lora_a)).detach().to(dtype)
        head_form = "dense"
    else:
        delta = projector.head.parametrizations.weight[0]
        tensors["head.lora_a"] = delta.lora_a.detach().to(dtype)
        tensors["head.lora_b"] = delta.lora_b.detach().to(dtype)
        head_form = "lora"
    tensors["logit_scale"] = projector.log_scale.detach().exp().reshape(1).float()
    return tensors, head_form


def save_projector(
    path: Path, projector: Projector, classes: list[str], classes_sha256: str, extra: dict[str, Any], dtype: str
) -> int:
    """Write the projector file; return its size in bytes."""
    tensors, head_form = stored_tensors(projector, torch.float16 if dtype == "fp16" else torch.float32)
    metadata = {
        "kind": "projector",
        "format_version": artifacts.FORMAT_VERSION,
        "spec": projector.spec.as_dict(),
        "backbone_weights_sha256": projector.backbone_info.weights_sha256,
        "feature_dim": projector.backbone_info.feature_dim,
        "classes": classes,
        "classes_sha256": classes_sha256,
        "head_form": head_form,
        "stored_parameters": sum(t.numel() for t in tensors.values()),
        "dtype": dtype,
        **extra,
    }
    artifacts.save_tensors(path, tensors, metadata)
    return path.stat().st_size


def load_projector(
    path: Path,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    expected_classes_sha256: str | None = None,
) -> tuple[Projector, dict[str, Any]]:
    """Rebuild a projector from its file, checking format, class list and backbone weights."""
    tensors, metadata = artifacts.load_tensors(path)
    if metadata.get("kind") != "projector":
        raise HelioError(f"{path}: not a projector file (kind={metadata.get('kind')!r})")
    if metadata.get("format_version") != artifacts.FORMAT_VERSION:
        raise HelioError(
            f"{path}: helio format version {metadata.get('format_version')}, "
            f"this helio reads version {artifacts.FORMAT_VERSION}"
        )
    spec = _checked_record(path, metadata, tensors)
    if expected_classes_sha256 is not None and metadata["classes_sha256"] != expected_classes_sha256:
        raise HelioError(
            f"{path}: made for another class list (classes sha256 {metadata['classes_sha256'][:12]}…, "
            f"expected {expected_classes_sha256[:12]}…)"
        )
    backbone = create_backbone(spec.backbone, spec.resolution, spec.features)
    if backbone.weights_sha256 != metadata["backbone_weights_sha256"]:
        raise HelioError(
            f"{path}: made for other {spec.backbone} weights (sha256 {metadata['backbone_weights_sha256'][:12]}…, "
            f"these are {backbone.weights_sha256[:12]}…)"
        )
    _check_head_shapes(path, tensors, metadata["head_form"], (len(metadata["classes"]), backbone.feature_dim))
    if metadata["head_form"] == "merged":
        head = tensors["head.weight"].float()
    else:
        if spec.head_init == "prototypes" and images is not None:
            if images_sha256(images) != metadata.get("prototype_images_sha256"):
                raise HelioError(f"{path}: these images are not the ones its prototype head was made from")
        head = initial_head(backbone, spec.head_init, metadata["classes"], images, labels, 0)
    scale = float(tensors["logit_scale"][0])
    structure = spec if metadata["head_form"] == "lora" else ProjectorSpec(**{**spec.as_dict(), "head_rank": 0})
    projector = Projector(backbone, structure, head, scale)
    projector.spec = spec
    encoder_state = {k.removeprefix("encoder."): v.float() for k, v in tensors.items() if k.startswith("encoder.")}
    lora.load_lora_state(projector.encoder.trunk, encoder_state, str(path))
    if metadata["head_form"] == "dense":
        parametrize.register_parametrization(projector.head, "weight", DenseDelta(tensors["head.delta"].float()))
    elif metadata["head_form"] == "lora":
        delta = projector.head.parametrizations.weight[0]
        delta.lora_a.data.copy_(tensors["head.lora_a"].float())
        delta.lora_b.data.copy_(tensors["head.lora_b"].float())
    return projector.eval(), metadata


_HEAD_TENSORS = {
    "merged": ("head.weight",), "dense": ("head.delta",), "lora": ("head.lora_a", "head.lora_b"), "none": (),
}  # fmt: skip
_RECORD_TYPES = {"classes_sha256": str, "backbone_weights_sha256": str, "classes": list, "spec": dict, "head_form": str}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_SPEC_CHECKS = {
    "backbone": lambda v: isinstance(v, str),
    "resolution": lambda v: v is None or (_is_count(v) and v > 0),
    "features": lambda v: isinstance(v, str),
    "head_init": lambda v: v in ("text", "prototypes", "random"),
    "rank": _is_count,
    "alpha": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "targets": lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(t, str) for t in v)),
    "head_rank": _is_count,
}


def _checked_record(path: Path, metadata: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ProjectorSpec:
    """The file's spec, once its record and tensors are known to hold what loading reads (else one HelioError)."""
    for key, kind in _RECORD_TYPES.items():
        if not isinstance(metadata.get(key), kind):
            got = type(metadata.get(key)).__name__
            raise HelioError(f"{path}: projector record needs {key!r} as a {kind.__name__}, got {got}")
    classes, spec = metadata["classes"], metadata["spec"]
    names_ok = all(isinstance(name, str) for name in classes)
    if not names_ok or artifacts.sha256_json(classes) != metadata["classes_sha256"]:
        raise HelioError(f"{path}: the class list does not match its recorded sha256 (edited or damaged)")
    bad = sorted(set(spec) ^ set(_SPEC_CHECKS)) or [key for key, check in _SPEC_CHECKS.items() if not check(spec[key])]
    if bad:
        raise HelioError(f"{path}: projector spec has a missing, unknown or malformed {bad[0]!r}: {spec}")
    if metadata["head_form"] not in _HEAD_TENSORS:
        raise HelioError(f"{path}: unknown head_form {metadata['head_form']!r} (expected {', '.join(_HEAD_TENSORS)})")
    missing = [name for name in ("logit_scale", *_HEAD_TENSORS[metadata["head_form"]]) if name not in tensors]
    if missing:
        raise HelioError(f"{path}: projector file lacks the tensors {missing}")
    scale = tensors["logit_scale"]
    if scale.shape != (1,) or not bool(torch.isfinite(scale).all()) or float(scale[0]) <= 0:
        raise HelioError(f"{path}: logit_scale must be one finite positive number")
    return ProjectorSpec(**spec)


def _check_head_shapes(path: Path, tensors: dict[str, torch.Tensor], head_form: str, head: tuple[int, int]) -> None:
    """The head tensors must fit (classes, feature_dim); a wrong shape would otherwise fail deep inside torch."""
    classes, dim = head
    expected = {"head.weight": head, "head.delta": head}
    if head_form == "lora":
        rank = tensors["head.lora_a"].shape[0] if tensors["head.lora_a"].dim() == 2 else -1
        expected = {"head.lora_a": (rank, dim), "head.lora_b": (classes, rank)}
    for name in _HEAD_TENSORS[head_form]:
        if tuple(tensors[name].shape) != expected[name]:
            raise HelioError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, expected {expected[name]}")
