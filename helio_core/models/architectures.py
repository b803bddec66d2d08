"""Student and teacher architectures registered by name (timm-style).

Every model takes images scaled to [0, 1]; the data set's normalisation lives inside the model as
buffers, so a checkpoint is self-contained and no caller has to guess mean and std.

The paper's cross-architecture students (Table 2) are torchvision's networks as published above
`LOW_RES_MAX` px; at or below it each builder removes early down-sampling so that 28-32 px inputs still
reach the last stage as a grid larger than 1x1 (its docstring says exactly what changes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from helio_core.errors import HelioError

LOW_RES_MAX = 64  # inputs up to this size get the low-resolution variants (RDED's CIFAR stem up to 64 px)

_REGISTRY: dict[str, Callable[[int, int, int], nn.Module]] = {}


def register(name: str) -> Callable:
    def add(builder: Callable[[int, int, int], nn.Module]) -> Callable[[int, int, int], nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


class ImageClassifier(nn.Module):
    """A registered network behind a fixed per-channel normalisation."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def create_model(
    name: str, num_classes: int, in_channels: int, image_size: int, mean: list[float], std: list[float]
) -> ImageClassifier:
    """Build a registered architecture for `in_channels` x `image_size`^2 inputs in [0, 1]."""
    if name not in _REGISTRY:
        raise HelioError(f"unknown architecture {name!r} (known: {', '.join(list_models())})")
    if len(mean) != in_channels or len(std) != in_channels:
        raise HelioError(f"normalisation has {len(mean)} channels, the model {in_channels}")
    return ImageClassifier(_REGISTRY[name](num_classes, in_channels, image_size), mean, std)


@register("resnet18")
def resnet18(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18 as published (7x7 stride-2 stem + max-pool) at any resolution.

    At 28 px its last stage sees 1x1; it costs a fraction of the CIFAR variant's compute, which is why the
    CPU default uses it (`python bench/student_archs.py` gives the ratio).
    """
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


@register("resnet18_cifar")
def resnet18_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-18 for low-resolution inputs as in RDED/SRe2L on CIFAR: 3x3 stride-1 stem, no max-pool."""
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


@register("shufflenet_v2")
def shufflenet_v2(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ShuffleNet-V2 x1.0 (torchvision). Up to LOW_RES_MAX px: stem conv stride 1 and no max-pool, so the
    network down-samples 8x instead of 32x (28 and 32 px reach the last stage as 4x4)."""
    net = torchvision.models.shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    if image_size <= LOW_RES_MAX:
        _unstride(net.conv1)
        net.maxpool = nn.Identity()
    net.conv1[0] = _first_conv(net.conv1[0], in_channels)
    return net


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """MobileNet-V2 (torchvision). Up to LOW_RES_MAX px: stride 1 in the stem conv (features.0) and in the
    depthwise conv of the first 24-channel block (features.2), as in the usual CIFAR variant: 8x instead of
    32x down-sampling (28 and 32 px reach the last stage as 4x4)."""
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    if image_size <= LOW_RES_MAX:
        _unstride(net.features[0])
        _unstride(net.features[2])
    net.features[0][0] = _first_conv(net.features[0][0], in_channels)
    return net


@register("efficientnet_b0")
def efficientnet_b0(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """EfficientNet-B0 (torchvision). Up to LOW_RES_MAX px: stride 1 in the stem conv (features.0) and in the
    depthwise conv of the first block of stage 2 (features.2.0): 8x instead of 32x down-sampling (28 and 32 px
    reach the last stage as 4x4)."""
    net = torchvision.models.efficientnet_b0(weights=None, num_classes=num_classes)
    if image_size <= LOW_RES_MAX:
        _unstride(net.features[0])
        _unstride(net.features[2][0])
    net.features[0][0] = _first_conv(net.features[0][0], in_channels)
    return net


@register("swin_v2_t")
def swin_v2_t(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Swin-V2-Tiny (torchvision: embed 96, depths 2-2-6-2, heads 3-6-12-24, stochastic depth 0.2), patch 4 and
    window 8 as published. Up to LOW_RES_MAX px: patch 2 and window 4, so 32 px gives token grids of 16, 8, 4
    and 2 a side and 28 px 14, 7, 4 and 2; torchvision pads a grid that is not a window multiple (here 14, 7
    and 2, as it pads 28, 14 and 7 at 224 px) and does not shift a window that covers the whole grid."""
    low = image_size <= LOW_RES_MAX
    net = SwinTransformer(
        patch_size=[2, 2] if low else [4, 4],
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=[4, 4] if low else [8, 8],
        stochastic_depth_prob=0.2,
        num_classes=num_classes,
        block=SwinTransformerBlockV2,
        downsample_layer=PatchMergingV2,
    )
    net.features[0][0] = _first_conv(net.features[0][0], in_channels)
    return net


@register("vgg11")
def vgg11(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """VGG-11 without BatchNorm (torchvision `vgg11`): the VGG-11 student of RDED's code, against which the
    paper's Table 2 compares. Up to LOW_RES_MAX px: the first two max-pools (features.2 and .5) are
    removed, leaving 8x down-sampling (32 px ends at 4x4, 28 px at 3x3), and the head average-pools to 1x1
    instead of 7x7, so the classifier's first layer takes 512 features instead of 512*7*7 (hidden 4096 and
    dropout kept). Above it the published 7x7 pooling and classifier."""
    net = torchvision.models.vgg11(weights=None, num_classes=num_classes)
    if image_size <= LOW_RES_MAX:
        net.features[2] = nn.Identity()
        net.features[5] = nn.Identity()
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier[0] = nn.Linear(512, 4096)
        nn.init.normal_(net.classifier[0].weight, 0, 0.01)
        nn.init.zeros_(net.classifier[0].bias)
    net.features[0] = _first_conv(net.features[0], in_channels)
    return net


@register("convnet3")
def convnet3(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ConvNet-3, the student of DC, DSA, MTT, IDC and DANCE on 28-32 px data: three blocks of 3x3 conv (128
    channels), instance norm (GroupNorm with one group per channel, affine), ReLU and 2x2 average pooling, then
    one linear layer on the flattened map. As in their code, a one-channel input pads its first conv by 3, so
    28 px becomes 32 and ends at 4x4 (128 * 16 features), like 32 px colour images."""
    width, layers, channels = 128, [], in_channels
    side = image_size + 4 if in_channels == 1 else image_size
    for block in range(3):
        padding = 3 if in_channels == 1 and block == 0 else 1
        layers += [nn.Conv2d(channels, width, 3, padding=padding), nn.GroupNorm(width, width), nn.ReLU(inplace=True)]
        layers.append(nn.AvgPool2d(2, 2))
        channels, side = width, side // 2
    if side < 1:
        raise HelioError(f"convnet3 needs inputs of at least 8 px, got {image_size}")
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, num_classes))


def batch_statistics(model: nn.Module) -> nn.Module:
    """`model` (in place) with every BatchNorm normalising by the statistics of the batch it is given, in eval
    mode too: its running statistics are dropped, so nothing it sees changes it."""
    for norm in model.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.track_running_stats = False
            norm.running_mean = norm.running_var = norm.num_batches_tracked = None
    return model


def _unstride(module: nn.Module) -> None:
    """Every stride-2 convolution in `module` to stride 1 (padding unchanged keeps the grid size)."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            conv.stride = (1, 1)


def _first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """`conv` itself for 3 input channels, else a fresh conv of the same shape for `in_channels`."""
    if in_channels == conv.in_channels:
        return conv
    bias = conv.bias is not None
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=bias)
