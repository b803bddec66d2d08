"""LoRA for convolutions and linear layers of a frozen encoder (paper Eq. 4).

Each adapted layer's weight becomes W + (alpha / r) * reshape(B @ A), with A (r x fan_in) random and
B (out x r) zero, so an untrained adapter leaves the encoder exactly as it was. For a k x k conv this
is the same map as a k x k conv A into r channels followed by a 1x1 conv B, stored with the same
r * (in * k * k + out) numbers; applying it as a weight update through torch's parametrization keeps
every layer's own forward (TF "same" padding included) and costs one convolution, not two.
Only the A and B tensors are trained, exported and shipped.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from helio_core.errors import HelioError

LORA_PREFIX = "lora_"


class LowRankDelta(nn.Module):
    """Parametrization W -> W + scale * (B @ A).view_as(W)."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float) -> None:
        super().__init__()
        out_features = weight.shape[0]
        fan_in = weight[0].numel()
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, fan_in))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = (self.lora_b @ self.lora_a).view_as(weight)
        return weight + self.scale * delta.to(weight.dtype)


def adaptable_layers(encoder: nn.Module, targets: str | list[str] = "all") -> list[tuple[str, nn.Module]]:
    """Non-grouped Conv2d and Linear layers whose names match `targets` ("all" or fnmatch patterns)."""
    layers = []
    for name, module in encoder.named_modules():
        if (isinstance(module, nn.Conv2d) and module.groups == 1) or isinstance(module, nn.Linear):
            if targets == "all" or any(fnmatch.fnmatchcase(name, pattern) for pattern in targets):
                layers.append((name, module))
    return layers


def add_lora(encoder: nn.Module, rank: int, alpha: float, targets: str | list[str] = "all") -> list[str]:
    """Freeze `encoder` and adapt its matching layers in place; return the adapted layer names."""
    if rank <= 0:
        raise HelioError(f"lora.rank must be > 0, got {rank}")
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    layers = adaptable_layers(encoder, targets)
    if not layers:
        raise HelioError(f"lora.targets={targets!r} matches no Conv2d or Linear layer of the encoder")
    for _, module in layers:
        parametrize.register_parametrization(module, "weight", LowRankDelta(module.weight, rank, alpha))
    return [name for name, _ in layers]


def lora_parameters(module: nn.Module) -> Iterable[nn.Parameter]:
    return (p for name, p in module.named_parameters() if name.rsplit(".", 1)[-1].startswith(LORA_PREFIX))


def lora_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors of `module`, by their full names."""
    return {
        name: tensor.detach()
        for name, tensor in module.state_dict().items()
        if name.rsplit(".", 1)[-1].startswith(LORA_PREFIX)
    }


def load_lora_state(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy LoRA tensors into an adapted module; names and shapes must match exactly."""
    expected = lora_state(module)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise HelioError(
            f"{source}: LoRA tensors do not fit this encoder "
            f"({len(missing)} missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            expected_shape = tuple(expected[name].shape)
            raise HelioError(f"{source}: {name} has shape {tuple(tensor.shape)}, expected {expected_shape}")
    module.load_state_dict(tensors, strict=False)


def lora_parameter_count(layers: Iterable[nn.Module], rank: int) -> int:
    """r * (fan_in + out) per layer: what the adapters of these layers store."""
    return sum(rank * (layer.weight[0].numel() + layer.weight.shape[0]) for layer in layers)
