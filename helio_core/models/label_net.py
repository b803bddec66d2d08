"""A label network: a small network trained from scratch to reproduce a teacher's soft labels, shipped whole.

The honest "just compress the teacher" baseline to the projector: no pretrained encoder, no LoRA, only a network
sized to the byte budget and distilled on the kind of views the students will ask it to label, either a VGG-style
ConvNet or the teacher's own ResNet-18 layout made narrow (the student then imitates a function of its own
architecture family, as it does with the teacher). Its file holds
every weight, in fp32, fp16, or int8 (symmetric, one scale per output channel of each convolution and linear
layer; BatchNorm and biases in fp16), and the spec that rebuilds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from helio_core import artifacts
from helio_core.errors import HelioError, first_line
from helio_core.models import quantise

KIND = "label-net"
DTYPES = ("fp32", "fp16", "int8")
ARCHS = ("convnet", "resnet18")
RESNET_STAGES = 4


@dataclass(frozen=True)
class LabelNetSpec:
    """What rebuilds a label network (stored in its file)."""

    arch: str  # convnet | resnet18
    widths: tuple[int, ...]  # convnet: channels of each block; resnet18: of the stem and each of the four stages
    in_channels: int
    num_classes: int

    @classmethod
    def from_record(cls, path: Path, record: Any) -> LabelNetSpec:
        ok = isinstance(record, dict) and set(record) == {"arch", "widths", "in_channels", "num_classes"}
        ok = ok and record["arch"] in ARCHS and isinstance(record["widths"], list) and bool(record["widths"])
        ok = ok and (record["arch"] != "resnet18" or len(record["widths"]) == RESNET_STAGES)
        ok = ok and all(_positive(value) for value in [*record["widths"], record["in_channels"], record["num_classes"]])
        if not ok:
            raise HelioError(
                f"{path}: label-net spec must hold an arch of {', '.join(ARCHS)} and positive widths (four for "
                f"resnet18), in_channels and num_classes: {record}"
            )
        return cls(record["arch"], tuple(record["widths"]), record["in_channels"], record["num_classes"])


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def convnet_body(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Per width: two 3x3 conv-BN-ReLU, then a 2x2 max-pool."""
    layers: list[nn.Module] = []
    channels = in_channels
    for width in widths:
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


def resnet18_body(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """torchvision's ResNet-18 (the `resnet18` teacher: 7x7 stride-2 stem, max-pool, two BasicBlocks per stage,
    stages 2-4 at stride 2) with `widths` channels in its four stages instead of 64-128-256-512, and its init."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]  # fmt: skip
    channels = widths[0]
    for stage, width in enumerate(widths):
        stride = 1 if stage == 0 else 2
        shortcut = None if stride == 1 and channels == width else nn.Sequential(
            conv1x1(channels, width, stride), nn.BatchNorm2d(width)
        )  # fmt: skip
        layers += [BasicBlock(channels, width, stride, shortcut), BasicBlock(width, width)]
        channels = width
    body = nn.Sequential(*layers)
    for module in body.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return body


BODIES = {"convnet": convnet_body, "resnet18": resnet18_body}


class LabelNet(nn.Module):
    """A label network of `spec` behind the data set's normalisation; images in [0, 1] in, logits out."""

    def __init__(self, spec: LabelNetSpec, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.spec = spec
        self.body = BODIES[spec.arch](spec.in_channels, spec.widths)
        self.head = nn.Linear(spec.widths[-1], spec.num_classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body((images - self.mean) / self.std).mean((2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def stored_tensors(net: LabelNet, dtype: str) -> dict[str, torch.Tensor]:
    """The file's tensors: every weight and buffer in `dtype` (helio_core.models.quantise); the normalisation
    stays fp32."""
    return quantise.stored(net.state_dict(), dtype, exact=("mean", "std"))


def rebuilt(spec: LabelNetSpec, tensors: dict[str, torch.Tensor]) -> tuple[LabelNet, list[str]]:
    """A label network of `spec` in eval mode holding a file's tensors (its normalisation included), and the names
    of the state it lacked or had over (empty for a whole file). Raises RuntimeError on a shape that does not fit."""
    net = LabelNet(spec, [0.0] * spec.in_channels, [1.0] * spec.in_channels)
    shapes = {name: tensor.shape for name, tensor in net.state_dict().items()}
    missing, unexpected = net.load_state_dict(quantise.restored(tensors, shapes), strict=False)
    return net.eval(), [name for name in missing if not name.endswith("num_batches_tracked")] + unexpected


def shipped(net: LabelNet, dtype: str) -> LabelNet:
    """`net` as its file will give it back: the same structure with its weights rounded to `dtype`."""
    return rebuilt(net.spec, stored_tensors(net, dtype))[0].to(net.mean.device)


def save_label_net(
    path: Path, net: LabelNet, classes: list[str], classes_sha256: str, extra: dict[str, Any], dtype: str
) -> int:
    """Write the label network's file (atomically); return its size in bytes."""
    if dtype not in DTYPES:
        raise HelioError(f"label-net dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tensors = stored_tensors(net, dtype)
    metadata = {
        "kind": KIND,
        "format_version": artifacts.FORMAT_VERSION,
        "spec": {**asdict(net.spec), "widths": list(net.spec.widths)},
        "classes": classes,
        "classes_sha256": classes_sha256,
        "dtype": dtype,
        "stored_parameters": sum(t.numel() for name, t in tensors.items() if not name.endswith("int8_scale")),
        **extra,
    }
    artifacts.save_tensors(path, tensors, metadata)
    return path.stat().st_size


def load_label_net(path: Path, expected_classes_sha256: str | None = None) -> tuple[LabelNet, dict[str, Any]]:
    """Rebuild a label network from its file, in eval mode, checking kind, format, spec and class list."""
    tensors, metadata = artifacts.load_tensors(path)
    if metadata.get("kind") != KIND:
        raise HelioError(f"{path}: not a label-net file (kind={metadata.get('kind')!r})")
    if metadata.get("format_version") != artifacts.FORMAT_VERSION:
        raise HelioError(
            f"{path}: helio format version {metadata.get('format_version')}, "
            f"this helio reads version {artifacts.FORMAT_VERSION}"
        )
    spec = LabelNetSpec.from_record(path, metadata.get("spec"))
    classes = metadata.get("classes")
    if not isinstance(classes, list) or artifacts.sha256_json(classes) != metadata.get("classes_sha256"):
        raise HelioError(f"{path}: the class list does not match its recorded sha256 (edited or damaged)")
    if len(classes) != spec.num_classes:
        raise HelioError(f"{path}: {len(classes)} classes listed, the spec has {spec.num_classes}")
    if expected_classes_sha256 is not None and metadata["classes_sha256"] != expected_classes_sha256:
        raise HelioError(
            f"{path}: made for another class list (classes sha256 {metadata['classes_sha256'][:12]}…, "
            f"expected {expected_classes_sha256[:12]}…)"
        )
    int8 = [name for name, tensor in tensors.items() if tensor.dtype == torch.int8]
    unscaled = [name for name in int8 if quantise.scale_name(name, "int8") not in tensors]
    if unscaled:
        raise HelioError(f"{path}: int8 tensor {unscaled[0]!r} has no .int8_scale beside it")
    try:
        net, mismatched = rebuilt(spec, tensors)
    except RuntimeError as error:
        raise HelioError(f"{path}: weights do not fit its spec {spec} ({first_line(error)})") from None
    if mismatched:
        raise HelioError(f"{path}: weights do not fit its spec: missing or extra {mismatched[:3]}")
    return net, metadata
