"""RDED patch selection (paper Eq. 6), or its random baseline, and tiling into distilled images.

rded, for each class: `candidates` random train images, `crops` random square crops of each (size //
factor), each crop scored by the observer teacher's cross-entropy on it (resized to full size); each
image keeps its best crop; the `ipc * factor^2` lowest-CE crops of the class are tiled factor x factor,
image i taking crops i, i + ipc, i + 2 ipc, ... in row-major order.

random (the baseline DD-Ranking and "A Label is Worth a Thousand Images" compare against): `ipc * factor^2`
distinct train images of the class drawn at random, each whole image shrunk to a patch and tiled the same way,
so only the choice of patches differs; the observer still scores them, to report what RDED's choice buys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import RandomResizedCrop

from helio_core.data.distilled import image_name
from helio_core.data.splits import ImageSet, Rows
from helio_core.params import SelectParams
from helio_core.progress import Progress
from helio_core.runtime import model_device


def random_square_crops(image: torch.Tensor, count: int, out_size: int, scale: list[float]) -> torch.Tensor:
    """`count` RandomResizedCrop crops (aspect ratio 1) of one float CHW image, each resized to out_size."""
    crops = []
    for _ in range(count):
        top, left, height, width = RandomResizedCrop.get_params(image, scale=scale, ratio=[1.0, 1.0])
        crops.append(TF.resized_crop(image, top, left, height, width, [out_size, out_size], antialias=True))
    return torch.stack(crops)


@torch.inference_mode()
def crop_losses(observer: nn.Module, crops: torch.Tensor, label: int, full_size: int, batch_size: int) -> torch.Tensor:
    """Cross-entropy of the observer on each crop (float NCHW in [0, 1]), crops resized to full size, computed
    on the observer's device."""
    device = model_device(observer)
    losses = []
    for chunk in crops.split(batch_size):
        chunk = chunk.to(device)
        if chunk.shape[-1] != full_size:
            chunk = F.interpolate(
                chunk, size=(full_size, full_size), mode="bilinear", antialias=True, align_corners=False
            )
        logits = observer(chunk.contiguous(memory_format=torch.channels_last))
        target = torch.full((len(chunk),), label, dtype=torch.int64, device=device)
        losses.append(F.cross_entropy(logits.float(), target, reduction="none").cpu())
    return torch.cat(losses)


def select_lowest_ce(losses: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From per-crop losses (images x crops): each image's best crop, then the `count` lowest images.

    Returns (image index, crop index), ordered by increasing loss (ties keep image order).
    """
    best, crop_index = losses.min(dim=1)
    order = torch.sort(best, stable=True).indices[:count]
    return order, crop_index[order]


def tile(patches: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """(ipc * factor^2, C, s, s) patches -> (ipc, C, factor*s, factor*s); image i, cell j gets patch i + j*ipc."""
    count, channels, side, _ = patches.shape
    if count != ipc * factor**2:
        raise ValueError(f"expected {ipc * factor**2} patches, got {count}")
    cells = patches.view(factor, factor, ipc, channels, side, side)  # [row, col, image]
    return cells.permute(2, 3, 0, 4, 1, 5).reshape(ipc, channels, factor * side, factor * side)


def distill_class(
    observer: nn.Module, images: torch.Tensor, label: int, params: SelectParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distilled uint8 images of one class and the observer loss of each patch (patches x ...)."""
    chosen = _random_patches if params.method == "random" else _lowest_ce_patches
    patches, losses = chosen(observer, images, label, params)
    distilled = tile((patches * 255).round().clamp(0, 255).to(torch.uint8), params.ipc, params.factor)
    return distilled, losses.view(params.factor**2, params.ipc).T


def _lowest_ce_patches(
    observer: nn.Module, images: torch.Tensor, label: int, params: SelectParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """RDED: the class's `patches_per_class` lowest-CE crops (float, [0, 1]) and their losses, lowest first."""
    full_size = images.shape[-1]
    candidates = images[torch.randperm(len(images))[: params.candidates]].float() / 255
    crops = torch.stack(
        [
            random_square_crops(image, params.crops, full_size // params.factor, params.crop_scale)
            for image in candidates
        ]
    )
    losses = crop_losses(observer, crops.flatten(0, 1), label, full_size, params.batch_size).view(len(candidates), -1)
    image_index, crop_index = select_lowest_ce(losses, params.patches_per_class)
    return crops[image_index, crop_index], losses[image_index, crop_index]


def _random_patches(
    observer: nn.Module, images: torch.Tensor, label: int, params: SelectParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random baseline: `patches_per_class` distinct images of the class, whole, shrunk to patch size (float,
    [0, 1]), in the order drawn, and the observer's loss on each."""
    full_size = images.shape[-1]
    patches = images[torch.randperm(len(images))[: params.patches_per_class]].float() / 255
    if params.factor > 1:
        side = full_size // params.factor
        patches = F.interpolate(patches, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return patches, crop_losses(observer, patches, label, full_size, params.batch_size)


def distill(
    observer: nn.Module, train: ImageSet, classes: list[str], params: SelectParams, progress: Progress
) -> tuple[torch.Tensor, list[dict]]:
    """Every class's distilled images, in class order, and their labels.json entries (file, label, class name,
    the observer's CE on each patch). The global RNG draws the candidates and crops."""
    entries, distilled = [], []
    task = progress.task("select patches", total=len(classes))
    for label, name in enumerate(classes):
        members = Rows(train.images, (train.labels == label).nonzero().flatten())
        images, losses = distill_class(observer, members, label, params)
        distilled.append(images)
        for k in range(params.ipc):
            patch_ce = [round(v, 5) for v in losses[k].tolist()]
            entries.append({"file": image_name(label, k), "label": label, "class": name, "patch_ce": patch_ce})
        task.advance(status=name)
    return torch.cat(distilled), entries
