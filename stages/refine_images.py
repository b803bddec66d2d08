"""Stage `refine_images`: paper Eq. 7 through the adapted encoder -> artifacts/refined/ (the distilled set's
layout), metrics/refine.json and plots/refined_grid.png. With refine.enabled false the images pass unchanged;
either way the projector's agreement with the full teacher on the images is measured before and after. On the
`random` arm of the workspace the random baseline's images are refined the same way, through the projector rebuilt
from the distilled set it was fit with."""

from __future__ import annotations

import time

import torch

from helio_core import artifacts
from helio_core.data.distilled import load_distilled, read_record, write_distilled
from helio_core.data.splits import load_classes
from helio_core.methods.refinement import refine, save_before_after
from helio_core.models.checkpoints import load_teacher
from helio_core.models.projector import LABEL_BATCH, load_projector
from helio_core.params import Params, as_dict
from helio_core.progress import SILENT, Progress
from helio_core.runtime import CPU, Runtime
from helio_core.training.engine import agreement, predict_logits
from helio_core.workspace import Workspace


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    runtime.require_single("refine_images")
    started = time.perf_counter()
    config = params.refine
    _, class_hash = load_classes(workspace.classes)
    images, labels = load_distilled(workspace.distilled, class_hash)
    fit_images = load_distilled(workspace.projector_images, class_hash) if workspace.arm else (images, labels)
    projector, _ = load_projector(workspace.projector, *fit_images, class_hash)
    projector = projector.to(runtime.device)
    teacher_file = workspace.last_teacher()
    teacher, _ = load_teacher(teacher_file, class_hash, runtime.device)

    def measured(pixels: torch.Tensor) -> dict[str, float]:
        """The projector against the full teacher on these images."""
        projected = predict_logits(projector, pixels, batch_size=LABEL_BATCH)
        scores = agreement(projected, predict_logits(teacher, pixels), labels)
        return {"projector_acc": scores["acc"], "teacher_acc": scores["teacher_acc"], "agreement": scores["agreement"]}

    before, losses, refined = measured(images), {}, images
    if config.enabled:
        torch.manual_seed(params.seed)
        refined, losses = refine(projector, images, config, progress)
    after = measured(refined)
    record = artifacts.provenance(
        "refine_images", {"seed": params.seed, "refine": as_dict(config)},
        {"distilled": workspace.distilled, "projector": workspace.projector, "teacher": teacher_file,
         **({"projector_images": workspace.projector_images} if workspace.arm else {})},
    )  # fmt: skip
    write_distilled(workspace.refined, refined, {**read_record(workspace.distilled), "refined": record})
    save_before_after(workspace.refined_grid, images, refined, labels)
    metrics = {
        "enabled": config.enabled,
        "before": before,
        "after": after,
        **{key: round(value, 6) for key, value in losses.items()},
        "mean_abs_pixel_change": round((refined.float() - images.float()).abs().mean().item() / 255, 6),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(workspace.refine_metrics, metrics)
    return metrics


def summary(metrics: dict) -> list[str]:
    before, after = metrics["before"]["agreement"], metrics["after"]["agreement"]
    lines = [f"projector/teacher agreement on the distilled images {before:.4f} -> {after:.4f}"]
    if metrics["enabled"]:
        lines.append(f"Eq. 7 loss {metrics['loss_before']:.5f} -> {metrics['loss_after']:.5f}")
    return lines
