"""Weights stored in fewer bits: what a network's file holds in fp32, fp16, int8 or int4, and the fp32 state that
file stands for. int8 and int4 are symmetric with one fp32 scale per output channel of every convolution and
linear weight (levels -127..127 and -7..7; int4 packs two levels per byte); every other tensor is stored in fp16
(fp32 under "fp32"). Tensors named in `exact` (e.g. the normalisation) stay fp32 whatever the dtype."""

from __future__ import annotations

import torch
from safetensors.torch import save

DTYPES = ("fp32", "fp16", "int8", "int4")
_LEVELS = {"int8": 127, "int4": 7}


def scale_name(name: str, dtype: str) -> str:
    """Where the per-channel scale of a quantised weight is stored: beside it, named for its dtype."""
    return f"{name}.{dtype}_scale"


def stored(state: dict[str, torch.Tensor], dtype: str, exact: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors a file of `state` in `dtype` holds (BatchNorm's step counters dropped)."""
    tensors = {}
    for name, tensor in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        tensor = tensor.detach().float().cpu().contiguous()  # a channels_last model's weights: safetensors needs rows
        if name in exact or dtype == "fp32":
            tensors[name] = tensor
        elif dtype in _LEVELS and tensor.dim() > 1:
            levels = _LEVELS[dtype]
            scale = tensor.abs().amax(dim=tuple(range(1, tensor.dim())), keepdim=True).clamp_min(1e-12) / levels
            quantised = (tensor / scale).round().clamp(-levels, levels).to(torch.int8)
            tensors[name] = quantised if dtype == "int8" else _packed(quantised)
            tensors[scale_name(name, dtype)] = scale.flatten()
        else:
            tensors[name] = tensor.half()
    return tensors


def restored(tensors: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """The fp32 state that stored tensors stand for; `shapes` (the model's state shapes) unpack int4 weights."""
    state = {}
    for name, tensor in tensors.items():
        if name.endswith(("int8_scale", "int4_scale")):
            continue
        if tensor.dtype in (torch.int8, torch.uint8):
            int8 = tensor.dtype == torch.int8
            levels = tensor if int8 else _unpacked(tensor, shapes[name])
            scale = tensors[scale_name(name, "int8" if int8 else "int4")]
            state[name] = levels.float() * scale.view(-1, *[1] * (levels.dim() - 1))
        else:
            state[name] = tensor.float()
    return state


def stored_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """The size of the safetensors file that holds `tensors` (its header included), without writing it."""
    return len(save(tensors))


def _packed(levels: torch.Tensor) -> torch.Tensor:
    """int4 levels (-7..7, int8) as uint8, two per byte along each output channel (low nibble first)."""
    flat = (levels.flatten(1) + 8).to(torch.uint8)  # 1..15
    if flat.shape[1] % 2:
        flat = torch.cat([flat, torch.full((flat.shape[0], 1), 8, dtype=torch.uint8)], dim=1)
    return flat[:, 0::2] | (flat[:, 1::2] << 4)


def _unpacked(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    pairs = torch.stack([packed & 15, packed >> 4], dim=2).flatten(1).to(torch.int8) - 8
    return pairs[:, : shape[1:].numel()].reshape(shape)
