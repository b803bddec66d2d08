"""Batched, per-sample image augmentations on float tensors in [0, 1] (one random draw per image).

The students' augmentation A (RDED: RandomResizedCrop, flip, CutMix) is planned up front as a `ViewPlan`
and rendered batch by batch, so that stored labels can be replayed against exactly the views they label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image."""
    if padding == 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    rows = (top + torch.arange(height)).view(n, 1, height, 1)
    cols = (left + torch.arange(width)).view(n, 1, 1, width)
    batch = torch.arange(n).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


@dataclass(frozen=True)
class ViewPlan:
    """Every augmented batch of a student's training, drawn up front so that it can be replayed.

    The same plan gives every label mode the same batches (a side-by-side comparison), and is what a
    stored-label file must carry beside its labels (SRe2L/FKD store crop coordinates the same way).
    All tensors are int16 (image indices int32 beyond 32,767 images); positions index `order[epoch]`.
    """

    order: torch.Tensor  # (epochs, n): image index at each position
    boxes: torch.Tensor  # (epochs, n, 4): crop top, left, height, width in pixels
    flips: torch.Tensor  # (epochs, n): 1 = mirrored
    partners: torch.Tensor  # (epochs, n): position whose image is pasted into this one (CutMix)
    mix_boxes: torch.Tensor  # (epochs, batches, 4): pasted region top, left, height, width (0 size: none)
    batch_size: int

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in ("order", "boxes", "flips", "partners", "mix_boxes")}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], batch_size: int) -> ViewPlan:
        names = ("order", "boxes", "flips", "partners", "mix_boxes")
        return cls(**{name: tensors[name] for name in names}, batch_size=batch_size)

    @property
    def epochs(self) -> int:
        return self.order.shape[0]

    def batches(self) -> list[slice]:
        n = self.order.shape[1]
        return [slice(start, min(start + self.batch_size, n)) for start in range(0, n, self.batch_size)]


def crop_boxes(n: int, size: int, scale: list[float], generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes (top, left, height, width): area fraction in `scale`, aspect ratio in [3/4, 4/3]."""
    area = size * size * torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = log_ratio.exp()
    width = (area * ratio).sqrt().round().clamp(1, size)
    height = (area / ratio).sqrt().round().clamp(1, size)
    top = (torch.rand(n, generator=generator) * (size - height + 1)).floor()
    left = (torch.rand(n, generator=generator) * (size - width + 1)).floor()
    return torch.stack([top, left, height, width], dim=1).to(torch.int16)


def whole_boxes(n: int, size: int) -> torch.Tensor:
    """The box of the whole image for each of `n` views (no crop)."""
    return torch.tensor([0, 0, size, size], dtype=torch.int16).repeat(n, 1)


def cutmix_box(size: int, generator: torch.Generator) -> torch.Tensor:
    """CutMix's region (Yun et al. 2019): area fraction 1 - lambda, lambda ~ U(0, 1), centre uniform, clipped."""
    lam = torch.rand(1, generator=generator).item()
    side = size * math.sqrt(1 - lam)
    centre_y, centre_x = (torch.rand(2, generator=generator) * size).tolist()
    top, bottom = int(max(0.0, centre_y - side / 2)), int(min(size, centre_y + side / 2))
    left, right = int(max(0.0, centre_x - side / 2)), int(min(size, centre_x + side / 2))
    return torch.tensor([top, left, bottom - top, right - left], dtype=torch.int16)


def plan_views(
    n: int,
    epochs: int,
    batch_size: int,
    size: int,
    crop_scale: list[float] | None,
    flip: bool,
    cutmix: bool,
    generator: torch.Generator,
) -> ViewPlan:
    """Draw the augmentation of every image in every epoch (shuffled batches of `batch_size`); `crop_scale` None
    keeps every view whole."""
    batches = math.ceil(n / batch_size)
    order, boxes, flips, partners, mix_boxes = [], [], [], [], []
    for _ in range(epochs):
        order.append(torch.randperm(n, generator=generator))
        boxes.append(crop_boxes(n, size, crop_scale, generator) if crop_scale else whole_boxes(n, size))
        flips.append(torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool))
        partner, mix = torch.arange(n), torch.zeros(batches, 4, dtype=torch.int16)
        for b, start in enumerate(range(0, n, batch_size)):
            count = min(batch_size, n - start)
            if cutmix and count > 1:
                partner[start : start + count] = start + torch.randperm(count, generator=generator)
                mix[b] = cutmix_box(size, generator)
        partners.append(partner)
        mix_boxes.append(mix)
    index_dtype = torch.int16 if n <= torch.iinfo(torch.int16).max else torch.int32
    return ViewPlan(
        order=torch.stack(order).to(index_dtype),
        boxes=torch.stack(boxes),
        flips=torch.stack(flips).to(torch.int16),
        partners=torch.stack(partners).to(index_dtype),
        mix_boxes=torch.stack(mix_boxes),
        batch_size=batch_size,
    )


def render_views(
    images: torch.Tensor, labels: torch.Tensor, plan: ViewPlan, epoch: int, batch: slice, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One planned batch: float images in [0, 1] (crop + resize, flip, CutMix) and their mixed one-hot labels."""
    index = plan.order[epoch, batch].long()
    source = images[index].float() / 255
    size = images.shape[-1]
    top, left, height, width = plan.boxes[epoch, batch].float().unbind(1)
    rois = torch.stack([torch.arange(len(index)).float(), left, top, left + width, top + height], dim=1)
    # one bilinear sample at each output pixel centre: a full-image box gives back the image exactly
    views = roi_align(source, rois, output_size=size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    views = torch.where(plan.flips[epoch, batch].bool().view(-1, 1, 1, 1), views.flip(-1), views)
    targets = F.one_hot(labels[index], num_classes).float()
    mix_top, mix_left, mix_height, mix_width = plan.mix_boxes[epoch, batch.start // plan.batch_size].tolist()
    if mix_height and mix_width:
        partner = plan.partners[epoch, batch].long() - batch.start
        region = (slice(None), slice(None), slice(mix_top, mix_top + mix_height), slice(mix_left, mix_left + mix_width))
        views = views.clone()
        views[region] = views[partner][region]
        pasted = mix_height * mix_width / (size * size)
        targets = (1 - pasted) * targets + pasted * targets[partner]
    return views.clamp(0, 1), targets
