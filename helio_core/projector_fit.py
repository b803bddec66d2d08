"""Stage `fit_projector`: fit the projector's LoRA factors to the weak teachers (paper Eq. 5).

Loss: MSE(f(X), Y') + lambda * CE(f(X), Y), with Y' the mean logits of the kept weak teachers on the
same images (or, with projector.loss=kl, a temperature-scaled KL to softmax(Y'/T)). With views=plain the
targets are computed once per image and view (identity and mirror) and reused every epoch; with
views=student every fresh view is labelled by the teachers as it is drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from helio_core import artifacts, models
from helio_core.augment import plan_views, render_views
from helio_core.data import DataPaths, load_classes, load_split
from helio_core.distilled import DistilledPaths, load_distilled
from helio_core.errors import HelioError
from helio_core.params import Params, ProjectorParams, StudentParams, as_dict
from helio_core.progress import progress_bar
from helio_core.projector import (
    Projector,
    ProjectorSpec,
    build_projector,
    images_sha256,
    load_projector,
    save_projector,
)
from helio_core.runtime import CPU, Runtime, model_device, optimizer_step
from helio_core.teachers import TeacherPaths, lr_factor, predict_logits


@dataclass(frozen=True)
class ProjectorPaths:
    file: Path = Path("artifacts/projector/projector.safetensors")
    metrics: Path = Path("metrics/projector.json")


def distillation_kl(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(target/T) || softmax(logits/T)), batch mean (Hinton et al.; RDED's student loss)."""
    log_p = F.log_softmax(logits / temperature, dim=-1)
    log_q = F.log_softmax(target_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")


def projector_loss(
    logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, params: ProjectorParams
) -> torch.Tensor:
    """Eq. 5: MSE to the target logits (or KL at temperature T) plus lambda * CE to the hard labels; loss=ce
    is the hard labels' cross-entropy alone (no teacher guidance)."""
    if params.loss == "ce":
        return F.cross_entropy(logits, labels)
    if params.loss == "mse":
        soft = F.mse_loss(logits, target)
    else:
        soft = distillation_kl(logits, target, params.temperature)
    return soft + params.lambda_ce * F.cross_entropy(logits, labels)


def combine_teachers(logits: list[torch.Tensor], params: ProjectorParams) -> torch.Tensor:
    """The weak teachers' joint target: their mean logits, or (target=mean_probs) T * log of their mean
    softmax at T, whose softmax at T is exactly the ensemble's averaged distribution."""
    if params.target == "mean_logits":
        return sum(logits) / len(logits)
    t = params.temperature
    log_probs = F.log_softmax(torch.stack(logits) / t, dim=-1)
    return t * (torch.logsumexp(log_probs, dim=0) - math.log(len(logits)))


def mean_teacher_logits(
    teachers: list[nn.Module], images: torch.Tensor, params: ProjectorParams, on_batch=None, mirrored: bool = False
) -> torch.Tensor:
    """The teachers' combined target on uint8 images (mirrored left-right when asked)."""
    views = images.flip(-1) if mirrored else images
    return combine_teachers([predict_logits(teacher, views, on_batch=on_batch) for teacher in teachers], params)


def agreement_metrics(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Classifier accuracy, top-1 agreement and logit MSE of the projector against the teachers' mean."""
    return {
        "acc": round((logits.argmax(1) == labels).float().mean().item(), 5),
        "teacher_acc": round((target.argmax(1) == labels).float().mean().item(), 5),
        "agreement": round((logits.argmax(1) == target.argmax(1)).float().mean().item(), 5),
        "mse": round(F.mse_loss(logits, target).item(), 5),
    }


@torch.inference_mode()
def project(projector: Projector, images: torch.Tensor, batch_size: int = 256, on_batch=None) -> torch.Tensor:
    """fp32 projector logits on the CPU of uint8 images, run on the projector's device under the caller's
    autocast (adapted weights computed once, not per batch)."""
    projector.eval()
    device = model_device(projector)
    out = []
    with parametrize.cached():
        for chunk in images.split(batch_size):
            out.append(projector(chunk.to(device).float() / 255).float().cpu())
            if on_batch is not None:
                on_batch(len(chunk))
    return torch.cat(out)


Batches = Callable[[torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


Inputs = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]  # (image index, view) -> model inputs


def pixel_inputs(images: torch.Tensor) -> Inputs:
    """The images as [0, 1] pixels, view 1 mirrored left-right."""

    def inputs(index: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = images[index].float() / 255
        return (torch.where(view.view(-1, 1, 1, 1) == 1, batch.flip(-1), batch),)

    return inputs


@torch.inference_mode()
def cached_prefix_inputs(
    projector: Projector, images: torch.Tensor, views: int, blocks: int, batch_size: int = 128, on_batch=None
) -> Inputs:
    """The projector's frozen prefix (preprocessing, stem and `blocks` unadapted blocks) run once per image and
    view and kept on the CPU: every epoch then only runs the adapted blocks. Same inputs as `pixel_inputs`."""
    device = model_device(projector)
    activations, pooled = [], []
    for view in range(views):
        parts = []
        for chunk in images.split(batch_size):
            pixels = chunk.to(device).float() / 255
            parts.append([t.float().cpu() for t in projector.prefix(pixels.flip(-1) if view else pixels, blocks)])
            if on_batch is not None:
                on_batch(len(chunk))
        activations.append(torch.cat([x for x, _ in parts]))
        pooled.append(torch.cat([p for _, p in parts]))
    activation_cache, pooled_cache = torch.stack(activations), torch.stack(pooled)

    def inputs(index: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return activation_cache[view, index], pooled_cache[view, index]

    return inputs


class PrefixFed(nn.Module):
    """The projector fed from its cached prefix, as a module (DistributedDataParallel hooks run in forward)."""

    def __init__(self, projector: Projector, start: int) -> None:
        super().__init__()
        self.projector, self.start = projector, start

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.projector.from_prefix(x.contiguous(memory_format=torch.channels_last), pooled, self.start)


def fixed_views(
    inputs: Inputs, labels: torch.Tensor, targets: torch.Tensor, params: ProjectorParams, runtime: Runtime = CPU
) -> Batches:
    """Shuffled batches of fixed views (the image, or its mirror at random when params.flip) with precomputed
    targets, this rank's shard of each, on the runtime's device.

    `targets` is (N, views, C): view 0 the image, view 1 its mirror when params.flip.
    """

    def epoch(generator: torch.Generator):
        for index in torch.randperm(len(labels), generator=generator).split(params.batch_size):
            view = torch.zeros(len(index), dtype=torch.int64)
            if params.flip:
                view = torch.randint(0, 2, (len(index),), generator=generator)
            index, view = runtime.shard(index), runtime.shard(view)
            batch = tuple(runtime.to_device(t) for t in inputs(index, view))
            yield batch, runtime.to_device(targets[index, view]), runtime.to_device(labels[index])

    return epoch


def student_views(
    images: torch.Tensor,
    labels: torch.Tensor,
    teachers: list[nn.Module],
    num_classes: int,
    student: StudentParams,
    crop_scale: list[float],
    params: ProjectorParams,
    runtime: Runtime = CPU,
) -> Batches:
    """Fresh student-style views every epoch (the students' RandomResizedCrop, flip and CutMix: what the
    projector will label), with the teachers' target computed on each view and CutMix-mixed hard labels.
    Every rank plans the same global batches (CutMix mixes within one) and keeps its shard."""

    def epoch(generator: torch.Generator):
        size = images.shape[-1]
        plan = plan_views(len(labels), 1, params.batch_size, size, crop_scale, student.flip, student.cutmix, generator)
        for batch in plan.batches():
            views, hard = render_views(images, labels, plan, 0, batch, num_classes)
            views, hard = runtime.to_device(runtime.shard(views)), runtime.to_device(runtime.shard(hard))
            with torch.no_grad(), runtime.autocast():
                channels_last = views.contiguous(memory_format=torch.channels_last)
                logits = [teacher.eval()(channels_last).float() for teacher in teachers]
            yield (views,), combine_teachers(logits, params), hard

    return epoch


def fit(
    projector: Projector,
    batches: Batches,
    steps_per_epoch: int,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    params: ProjectorParams,
    generator: torch.Generator,
    bar,
    runtime: Runtime = CPU,
    prefix_blocks: int = 0,
) -> list[dict[str, float]]:
    """Train the trainable tensors; keep the state of the epoch with the lowest validation loss.
    Under torchrun the gradients of each rank's shard are averaged (DDP); every rank scores the whole
    validation set, so all of them keep the same epoch. With `prefix_blocks` the batches hold cached prefix
    outputs (`cached_prefix_inputs`) instead of pixels."""
    trainable = projector.trainable_parameters()
    model = PrefixFed(projector, prefix_blocks) if prefix_blocks else projector
    parallel, scaler = runtime.parallel(model, broadcast_buffers=False), runtime.grad_scaler()
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay, fused=True)
    total = params.epochs * steps_per_epoch
    warmup = partial(lr_factor, total_steps=total, warmup_steps=total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    val_images, val_labels, val_targets = val
    best, history = (math.inf, None), []
    task = bar.add_task("fit projector", total=params.epochs, status="")
    for epoch in range(1, params.epochs + 1):
        projector.train()
        for step, (batch, target, hard) in enumerate(batches(generator)):
            with runtime.autocast():
                logits = parallel(*batch)
            loss = projector_loss(logits.float(), target, hard, params)
            optimizer_step(loss, optimizer, scaler)
            schedule.step()
            bar.update(task, completed=epoch - 1 + (step + 1) / steps_per_epoch, status=f"loss {loss.item():.4f}")
        with runtime.autocast():
            val_logits = project(projector, val_images)
        val_loss = projector_loss(val_logits, val_targets, val_labels, params).item()
        scores = agreement_metrics(val_logits, val_targets, val_labels)
        history.append({"epoch": epoch, "val_loss": round(val_loss, 5), **scores})
        bar.console.print(f"projector epoch {epoch}: {history[-1]}")
        if val_loss < best[0]:
            best = (val_loss, {k: v.detach().clone() for k, v in projector.state_dict().items()})
    projector.load_state_dict(best[1])
    return history


def run_fit_projector(
    params: Params,
    paths: ProjectorPaths = ProjectorPaths(),
    distilled_paths: DistilledPaths = DistilledPaths(),
    teacher_paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    runtime: Runtime = CPU,
) -> dict:
    """Fit the projector, write it, then measure the written file against the weak teachers on the test split.
    Under torchrun every rank fits on its shard of each batch; rank 0 writes the file and the metrics."""
    started = time.perf_counter()
    config, lora_config = params.projector, params.lora
    classes, class_hash = load_classes(data_paths.classes)
    train, _ = load_split(data_paths.train, class_hash)
    test, _ = load_split(data_paths.test, class_hash)
    distilled_images, distilled_labels = load_distilled(distilled_paths, class_hash)
    teacher_files = teacher_checkpoints(teacher_paths, config.teachers)
    teachers = []
    for file in teacher_files:
        teacher, metadata = models.load_checkpoint(file)
        if metadata.get("classes_sha256") != class_hash:
            raise HelioError(f"{file}: teacher made for another class list than {data_paths.classes}")
        if config.teacher_batchnorm == "batch":
            models.batch_statistics(teacher)
        teachers.append(teacher.to(runtime.device, memory_format=torch.channels_last))

    generator = torch.Generator().manual_seed(params.seed)
    order = torch.randperm(len(train.labels), generator=generator)
    if config.val_images + (config.train_images or 1) > len(order):
        raise HelioError(
            f"projector.train_images + projector.val_images exceed the {len(order)} images of {data_paths.train}"
        )
    val_index = order[: config.val_images]
    fit_index = order[config.val_images :][: config.train_images]
    test_index = torch.randperm(len(test.labels), generator=generator)[: config.test_images or len(test.labels)]
    fit_images, fit_labels = train.images[fit_index], train.labels[fit_index]
    if config.distilled_repeats:
        if distilled_images.shape[1:] != fit_images.shape[1:]:
            raise HelioError(
                f"projector.distilled_repeats: distilled images are {tuple(distilled_images.shape[1:])}, "
                f"train images {tuple(fit_images.shape[1:])}"
            )
        fit_images = torch.cat([fit_images, distilled_images.repeat(config.distilled_repeats, 1, 1, 1)])
        fit_labels = torch.cat([fit_labels, distilled_labels.repeat(config.distilled_repeats)])
    val_images, val_labels = train.images[val_index], train.labels[val_index]
    test_images, test_labels = test.images[test_index], test.labels[test_index]

    spec = ProjectorSpec(
        config.backbone, config.resolution, config.features, config.head_init,
        lora_config.rank, lora_config.alpha, lora_config.targets, lora_config.head_rank,
    )  # fmt: skip
    torch.manual_seed(params.seed)
    projector = build_projector(spec, classes, distilled_images, distilled_labels, config.logit_scale, params.seed)
    projector = projector.to(runtime.device)
    with progress_bar(runtime.is_main) as bar:
        views = (2 if config.flip else 1) if config.views == "plain" else 0
        task = bar.add_task(
            f"mean logits of {len(teachers)} teachers",
            total=len(teachers) * (views * len(fit_labels) + len(val_index) + len(test_index)),
            status="",
        )
        tick = partial(bar.advance, task)
        with runtime.autocast():
            if config.views == "plain":
                fit_targets = torch.stack(
                    [mean_teacher_logits(teachers, fit_images, config, tick, mirrored=bool(v)) for v in range(views)],
                    dim=1,
                )
            val_targets = mean_teacher_logits(teachers, val_images, config, tick)
            test_targets = mean_teacher_logits(teachers, test_images, config, tick)
            before = agreement_metrics(project(projector, test_images), test_targets, test_labels)
        prefix_blocks = projector.frozen_prefix_blocks() if config.views == "plain" and config.cache_prefix else 0
        if config.views == "plain":
            inputs = pixel_inputs(fit_images)
            if prefix_blocks:
                caching = bar.add_task(f"cache {prefix_blocks} frozen blocks", total=views * len(fit_labels), status="")
                with runtime.autocast():
                    inputs = cached_prefix_inputs(
                        projector, fit_images, views, prefix_blocks, config.batch_size, partial(bar.advance, caching)
                    )
            batches = fixed_views(inputs, fit_labels, fit_targets, config, runtime)
        else:
            batches = student_views(
                fit_images, fit_labels, teachers, len(classes), params.student, params.student_crop_scale, config,
                runtime,
            )  # fmt: skip
        bar.console.print(f"projector before fitting (head init only): {before}")
        val = (val_images, val_labels, val_targets)
        steps = math.ceil(len(fit_labels) / config.batch_size)
        fit_started = time.perf_counter()
        history = fit(projector, batches, steps, val, config, generator, bar, runtime, prefix_blocks)
        fit_seconds = time.perf_counter() - fit_started
    if not runtime.is_main:
        return {}
    record = artifacts.provenance(
        "fit_projector",
        {"seed": params.seed, "projector": as_dict(config), "lora": as_dict(lora_config), "runtime": runtime.record()},
        {"train": data_paths.train, "distilled": distilled_paths.folder, **{f.stem: f for f in teacher_files}},
    )
    extra = {
        "teacher_epochs": [int(f.stem.split("_")[1]) for f in teacher_files],
        "prototype_images_sha256": images_sha256(distilled_images),
        "provenance": record,
    }
    with artifacts.atomic_path(paths.file.parent) as folder:
        folder.mkdir()
        size = save_projector(folder / paths.file.name, projector, classes, class_hash, extra, config.dtype)
    shipped, metadata = load_projector(paths.file, distilled_images, distilled_labels, class_hash)
    with runtime.autocast():
        after = agreement_metrics(project(shipped.to(runtime.device), test_images), test_targets, test_labels)
    teacher_bytes = teacher_files[-1].stat().st_size
    metrics = {
        "test_images": len(test_index),
        "before_lora": before,
        "after_lora": after,
        "history": history,
        "cached_prefix_blocks": prefix_blocks,
        "fit_seconds": round(fit_seconds, 1),
        "stored_parameters": metadata["stored_parameters"],
        "head_form": metadata["head_form"],
        "projector_bytes": size,
        "teacher_checkpoint_bytes": teacher_bytes,
        "teacher_to_projector_ratio": round(teacher_bytes / size, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(paths.metrics, metrics)
    return metrics


def teacher_checkpoints(teacher_paths: TeacherPaths, epochs: list[int] | None) -> list[Path]:
    """The checkpoints of the chosen kept epochs (all kept when None), in epoch order."""
    if epochs is None:
        files = sorted(teacher_paths.folder.glob("epoch_*.safetensors"))
        if not files:
            raise HelioError(f"{teacher_paths.folder}: no teacher checkpoints (run `dvc repro train_teachers`)")
        return files
    files = [teacher_paths.checkpoint(epoch) for epoch in sorted(epochs)]
    for file in files:
        if not file.is_file():
            raise HelioError(f"projector.teachers: {file} not found (is its epoch in teachers.keep?)")
    return files
