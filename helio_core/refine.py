"""Stage `refine_images`: image refinement through the adapted encoder (paper Eq. 7, "LIC").

Each distilled image p is updated to minimise MSE(E_I(p), E_I(up(down(p)))): its features should not
depend on detail that a `scale`-times smaller copy loses. E_I is the projector's encoder with its LoRA,
and its normalised features are compared (they are all the head sees). The paper gives no schedule; here
Adam on the pixels, clamped to [0, 1] after every step. Whether it helps is measured, not assumed: the
projector's agreement with the full teacher on the images is recorded before and after.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from helio_core import artifacts
from helio_core.data import DataPaths, load_classes
from helio_core.distilled import REFINED, DistilledPaths, load_distilled, save_grid
from helio_core.params import Params, RefineParams, as_dict
from helio_core.progress import progress_bar
from helio_core.projector import Projector, load_projector
from helio_core.projector_fit import ProjectorPaths, project
from helio_core.runtime import CPU, Runtime, model_device
from helio_core.teachers import TeacherPaths, load_teacher, predict_logits


@dataclass(frozen=True)
class RefinePaths:
    images: DistilledPaths = REFINED
    metrics: Path = Path("metrics/refine.json")


def low_resolution(images: torch.Tensor, scale: int) -> torch.Tensor:
    """up(down(images)): antialiased bilinear down-sampling by `scale`, bilinear back to full size."""
    size = images.shape[-1]
    small = F.interpolate(images, size=size // scale, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)


def consistency_loss(projector: Projector, images: torch.Tensor, scale: int) -> torch.Tensor:
    """Eq. 7 per image: mean squared difference of the normalised features of p and up(down(p))."""
    difference = projector.features(images) - projector.features(low_resolution(images, scale))
    return difference.pow(2).mean(1)


def refine(projector: Projector, images: torch.Tensor, params: RefineParams, bar=None) -> tuple[torch.Tensor, dict]:
    """Refined uint8 images and the mean loss before and after."""
    projector.requires_grad_(False).eval()  # frozen: its adapted weights can be computed once (parametrize.cached)
    refined, before, after = [], [], []
    task = bar.add_task("refine images", total=len(images), status="") if bar is not None else None
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
            if task is not None:
                bar.advance(task, len(chunk))
    losses = {"loss_before": torch.cat(before).mean().item(), "loss_after": torch.cat(after).mean().item()}
    return torch.cat(refined), losses


def label_agreement(projector: Projector, teacher, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How the projector and the full teacher label the images: each one's accuracy and their top-1 agreement."""
    projected = project(projector, images).argmax(1)
    taught = predict_logits(teacher, images).argmax(1)
    return {
        "projector_acc": round((projected == labels).float().mean().item(), 5),
        "teacher_acc": round((taught == labels).float().mean().item(), 5),
        "agreement": round((projected == taught).float().mean().item(), 5),
    }


def save_before_after(path: Path, before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor) -> None:
    """One row per class: up to 8 images before refinement, then the same images after."""
    rows = []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().flatten()[:8]
        rows.append(torch.cat([before[members], after[members]]))
    save_grid(path, torch.cat(rows), per_row=len(rows[0]))


def run_refine_images(
    params: Params,
    paths: RefinePaths = RefinePaths(),
    distilled_paths: DistilledPaths = DistilledPaths(),
    projector_paths: ProjectorPaths = ProjectorPaths(),
    teacher_paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    runtime: Runtime = CPU,
) -> dict:
    """Refine the distilled images (or pass them through when refine.enabled is false) and measure the effect.
    Pixels are optimised in fp32 on the runtime's device (autocast would quantise their gradients)."""
    runtime.require_single("refine_images")
    started = time.perf_counter()
    config = params.refine
    _, class_hash = load_classes(data_paths.classes)
    images, labels = load_distilled(distilled_paths, class_hash)
    projector, _ = load_projector(projector_paths.file, images, labels, class_hash)
    projector = projector.to(runtime.device)
    teacher_file = teacher_paths.last_kept()
    teacher = load_teacher(teacher_file, class_hash, runtime.device)
    before = label_agreement(projector, teacher, images, labels)
    losses = {}
    refined = images
    if config.enabled:
        torch.manual_seed(params.seed)
        with progress_bar() as bar:
            refined, losses = refine(projector, images, config, bar)
    after = label_agreement(projector, teacher, refined, labels)
    record = artifacts.provenance(
        "refine_images",
        {"seed": params.seed, "refine": as_dict(config)},
        {"distilled": distilled_paths.folder, "projector": projector_paths.file, "teacher": teacher_file},
    )
    labels_record = artifacts.read_json(distilled_paths.folder / "labels.json")
    with artifacts.atomic_path(paths.images.folder) as folder:
        (folder / "images").mkdir(parents=True)
        for entry, image in zip(labels_record["images"], refined, strict=True):
            if config.enabled:
                artifacts.write_png(folder / entry["file"], image)
            else:
                shutil.copyfile(distilled_paths.folder / entry["file"], folder / entry["file"])
        artifacts.write_json(folder / "labels.json", {**labels_record, "refined": record})
    save_before_after(paths.images.grid, images, refined, labels)
    metrics = {
        "enabled": config.enabled,
        "before": before,
        "after": after,
        **{key: round(value, 6) for key, value in losses.items()},
        "mean_abs_pixel_change": round((refined.float() - images.float()).abs().mean().item() / 255, 6),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(paths.metrics, metrics)
    return metrics
