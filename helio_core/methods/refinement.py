"""Image refinement through the adapted encoder (paper Eq. 7, "LIC").

Each distilled image p is updated to minimise MSE(E_I(p), E_I(up(down(p)))): its features should not
depend on detail that a `scale`-times smaller copy loses. E_I is the projector's encoder with its LoRA,
and its normalised features are compared (they are all the head sees). The paper gives no schedule; here
Adam on the pixels, clamped to [0, 1] after every step. Whether it helps is measured, not assumed: the
projector's agreement with the full teacher on the images is recorded before and after.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from helio_core.data.distilled import save_grid
from helio_core.models.projector import Projector
from helio_core.params import RefineParams
from helio_core.progress import Progress
from helio_core.runtime import model_device


def low_resolution(images: torch.Tensor, scale: int) -> torch.Tensor:
    """up(down(images)): antialiased bilinear down-sampling by `scale`, bilinear back to full size."""
    size = images.shape[-1]
    small = F.interpolate(images, size=size // scale, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)


def consistency_loss(projector: Projector, images: torch.Tensor, scale: int) -> torch.Tensor:
    """Eq. 7 per image: mean squared difference of the normalised features of p and up(down(p))."""
    difference = projector.features(images) - projector.features(low_resolution(images, scale))
    return difference.pow(2).mean(1)


def refine(
    projector: Projector, images: torch.Tensor, params: RefineParams, progress: Progress
) -> tuple[torch.Tensor, dict]:
    """Refined uint8 images and the mean loss before and after. Pixels are optimised in fp32 on the projector's
    device (autocast would quantise their gradients)."""
    projector.requires_grad_(False).eval()  # frozen: its adapted weights can be computed once (parametrize.cached)
    refined, before, after = [], [], []
    task = progress.task("refine images", total=len(images))
    device = model_device(projector)
    with parametrize.cached():
        for chunk in images.split(params.batch_size):
            pixels = (chunk.to(device).float() / 255).requires_grad_(True)
            with torch.no_grad():
                before.append(consistency_loss(projector, pixels, params.scale))
            optimizer = torch.optim.Adam([pixels], lr=params.lr)
            for _ in range(params.steps):
                loss = consistency_loss(projector, pixels, params.scale)
                optimizer.zero_grad(set_to_none=True)
                loss.mean().backward()
                optimizer.step()
                with torch.no_grad():
                    pixels.clamp_(0, 1)
            quantised = (pixels.detach() * 255).round().to(torch.uint8)
            with torch.no_grad():
                after.append(consistency_loss(projector, quantised.float() / 255, params.scale))
            refined.append(quantised.cpu())
            task.advance(len(chunk))
    losses = {"loss_before": torch.cat(before).mean().item(), "loss_after": torch.cat(after).mean().item()}
    return torch.cat(refined), losses


def save_before_after(path: Path, before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor) -> None:
    """One row per class: up to 8 images before refinement, then the same images after."""
    rows = []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().flatten()[:8]
        rows.append(torch.cat([before[members], after[members]]))
    save_grid(path, torch.cat(rows), per_row=len(rows[0]))
