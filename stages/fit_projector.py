"""Stage `fit_projector`: the LoRA projector fitted to the weak teachers (paper Eq. 5) ->
artifacts/projector/projector.safetensors, measured as written against the teachers' target on the test split
-> metrics/projector.json.

Under torchrun every rank fits on its shard of each batch (DDP); rank 0 writes the file and the metrics."""

from __future__ import annotations

import math
import time
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from helio_core import artifacts
from helio_core.data.distilled import load_distilled
from helio_core.data.splits import ImageSet, load_classes, load_split
from helio_core.methods.projector_fit import FitSplits, fit, fit_splits, plain_batches, teachers_target
from helio_core.models.checkpoints import load_teacher
from helio_core.models.projector import (
    LABEL_BATCH,
    Projector,
    ProjectorSpec,
    build_projector,
    images_sha256,
    load_projector,
    save_projector,
)
from helio_core.params import Params, as_dict
from helio_core.progress import SILENT, Progress
from helio_core.runtime import CPU, Runtime
from helio_core.training.engine import agreement, predict_logits
from helio_core.training.labels import labelled_views
from helio_core.training.losses import combine_teachers
from helio_core.workspace import Workspace


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    started = time.perf_counter()
    config, lora = params.projector, params.lora
    classes, class_hash = load_classes(workspace.classes)
    train, _ = load_split(workspace.split("train"), classes)
    test, _ = load_split(workspace.split("test"), classes)
    distilled = ImageSet(*load_distilled(workspace.distilled, class_hash), classes)
    teacher_files = workspace.teacher_checkpoints(config.teachers)
    teachers = [load_teacher(file, class_hash, runtime.device, config.teacher_batchnorm)[0] for file in teacher_files]
    generator = torch.Generator().manual_seed(params.seed)
    splits = fit_splits(train, test, distilled, config, generator, workspace.split("train"))
    spec = ProjectorSpec(
        config.backbone, config.resolution, config.features, config.head_init,
        lora.rank, lora.alpha, lora.targets, lora.head_rank,
    )  # fmt: skip
    torch.manual_seed(params.seed)
    projector = build_projector(
        spec, classes, distilled.images, distilled.labels, logit_scale=config.logit_scale, seed=params.seed
    ).to(runtime.device)
    fitted = _fit(projector, teachers, splits, params, generator, runtime, progress)
    if not runtime.is_main:
        return {}
    record = artifacts.provenance(
        "fit_projector",
        {"seed": params.seed, "projector": as_dict(config), "lora": as_dict(lora), "runtime": runtime.record()},
        {
            "train": workspace.split_index("train"),
            "distilled": workspace.distilled,
            **{f.stem: f for f in teacher_files},
        },
    )
    extra = {
        "teacher_epochs": [int(f.stem.split("_")[1]) for f in teacher_files],
        "prototype_images_sha256": images_sha256(distilled.images),
        "provenance": record,
    }
    with artifacts.atomic_path(workspace.projector.parent) as folder:
        folder.mkdir()
        size = save_projector(folder / workspace.projector.name, projector, classes, class_hash, extra, config.dtype)
    shipped, metadata = load_projector(workspace.projector, distilled.images, distilled.labels, class_hash)
    with runtime.autocast():
        shipped_logits = predict_logits(shipped.to(runtime.device), splits.test.images, batch_size=LABEL_BATCH)
    teacher_bytes = teacher_files[-1].stat().st_size
    metrics = {
        "test_images": len(splits.test.labels),
        "before_lora": fitted.before,
        "after_lora": agreement(shipped_logits, fitted.test_targets, splits.test.labels),
        "history": fitted.history,
        "cached_prefix_blocks": fitted.prefix_blocks,
        "fit_seconds": round(fitted.seconds, 1),
        "stored_parameters": metadata["stored_parameters"],
        "head_form": metadata["head_form"],
        "projector_bytes": size,
        "teacher_checkpoint_bytes": teacher_bytes,
        "teacher_to_projector_ratio": round(teacher_bytes / size, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(workspace.projector_metrics, metrics)
    return metrics


class Fitted(NamedTuple):
    history: list[dict]  # per epoch: validation loss and agreement
    before: dict  # the projector against its target on the test images before fitting
    test_targets: torch.Tensor  # the teachers' target on the test images
    seconds: float  # of the fit loop
    prefix_blocks: int  # encoder blocks run once per image (views=plain, projector.cache_prefix)


def _fit(
    projector: Projector, teachers: list[nn.Module], splits: FitSplits, params: Params, generator: torch.Generator,
    runtime: Runtime, progress: Progress,
) -> Fitted:  # fmt: skip
    """The teachers' targets on the validation and test images, the projector measured before fitting, then the
    fit on the configured views."""
    config = params.projector
    scored = len(splits.val.labels) + len(splits.test.labels)
    task = progress.task(f"targets of {len(teachers)} teachers", total=len(teachers) * scored)
    with runtime.autocast():
        val_targets = teachers_target(teachers, splits.val.images, config, task.advance)
        test_targets = teachers_target(teachers, splits.test.images, config, task.advance)
        projected = predict_logits(projector, splits.test.images, batch_size=LABEL_BATCH)
    before = agreement(projected, test_targets, splits.test.labels)
    if config.views == "plain":
        batches, prefix_blocks = plain_batches(projector, teachers, splits.fit, config, runtime, progress)
    else:
        combine = partial(combine_teachers, target=config.target, temperature=config.temperature)
        batches, prefix_blocks = labelled_views(
            splits.fit.images, splits.fit.labels, teachers, len(splits.fit.classes), params.student,
            params.student_crop_scale, config.batch_size, combine, runtime,
        ), 0  # fmt: skip
    progress.note(f"projector before fitting (head init only): {before}")
    started = time.perf_counter()
    steps = math.ceil(len(splits.fit.labels) / config.batch_size)
    val = (splits.val.images, splits.val.labels, val_targets)
    history = fit(projector, batches, steps, val, config, generator, progress, runtime, prefix_blocks)
    return Fitted(history, before, test_targets, time.perf_counter() - started, prefix_blocks)


def summary(metrics: dict) -> list[str]:
    after, before = metrics["after_lora"], metrics["before_lora"]
    ratio = metrics["teacher_to_projector_ratio"]
    return [
        f"projector: {metrics['projector_bytes']:,} bytes, {ratio}x smaller than a teacher checkpoint",
        f"test accuracy {before['acc']:.4f} (head init only) -> {after['acc']:.4f} (fitted)",
        f"agreement with the weak teachers {before['agreement']:.4f} -> {after['agreement']:.4f}",
    ]
