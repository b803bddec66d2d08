"""Fitting the projector's LoRA factors to the weak teachers (paper Eq. 5).

Loss: MSE(f(X), Y') + lambda * CE(f(X), Y), with Y' the weak teachers' combined logits on the same images (or,
with projector.loss=kl, a temperature-scaled KL to softmax(Y'/T)). With views=plain the targets are computed once
per image and view (identity and mirror) and reused every epoch; with views=student every fresh view is labelled
by the teachers as it is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from helio_core.data.shards import LazyRows
from helio_core.data.splits import ImageSet, JoinedRows, Rows
from helio_core.errors import HelioError
from helio_core.models.projector import LABEL_BATCH, Projector
from helio_core.params import ProjectorParams
from helio_core.progress import Progress
from helio_core.runtime import Runtime, model_device
from helio_core.training.engine import PREDICT_BATCH, Optimisation, agreement, make_optimizer, predict_logits
from helio_core.training.labels import Batches
from helio_core.training.losses import combine_teachers, projector_loss


def teachers_target(
    teachers: list[nn.Module], images: torch.Tensor | LazyRows, params: ProjectorParams, on_batch=None,
    mirrored: bool = False,
) -> torch.Tensor:  # fmt: skip
    """The teachers' combined target on uint8 images (mirrored left-right when asked), read a chunk at a time."""
    targets = []
    for chunk in images.split(PREDICT_BATCH):  # predict_logits' own batches
        views = chunk.flip(-1) if mirrored else chunk
        logits = [predict_logits(teacher, views, on_batch=on_batch) for teacher in teachers]
        targets.append(combine_teachers(logits, params.target, params.temperature))
    return torch.cat(targets)


@dataclass(frozen=True)
class FitSplits:
    """The images of one fit: the pool it learns from (train images, then the distilled ones if repeated), the
    held-out train images it stops on, and the test images it is measured on."""

    fit: ImageSet
    val: ImageSet
    test: ImageSet


def fit_splits(
    train: ImageSet, test: ImageSet, distilled: ImageSet, params: ProjectorParams, generator: torch.Generator,
    source: Path,
) -> FitSplits:  # fmt: skip
    """Seeded draws from the train split (`source`, named in errors): validation first, then the fit pool. Every
    set's images stay where they are (the splits' shards) and are read as they are used."""
    order = torch.randperm(len(train.labels), generator=generator)
    if params.val_images + (params.train_images or 1) > len(order):
        raise HelioError(f"projector.train_images + projector.val_images exceed the {len(order)} images of {source}")
    val_index = order[: params.val_images]
    fit_index = order[params.val_images :][: params.train_images]
    test_index = torch.randperm(len(test.labels), generator=generator)[: params.test_images or len(test.labels)]
    fit_rows, fit_labels = [Rows(train.images, fit_index)], train.labels[fit_index]
    if params.distilled_repeats:
        if distilled.images.shape[1:] != train.images.shape[1:]:
            raise HelioError(
                f"projector.distilled_repeats: distilled images are {tuple(distilled.images.shape[1:])}, "
                f"train images {tuple(train.images.shape[1:])}"
            )
        repeated = torch.arange(len(distilled.labels)).repeat(params.distilled_repeats)
        fit_rows.append(Rows(distilled.images, repeated))
        fit_labels = torch.cat([fit_labels, distilled.labels[repeated]])
    return FitSplits(
        ImageSet(JoinedRows(*fit_rows), fit_labels, train.classes),
        ImageSet(Rows(train.images, val_index), train.labels[val_index], train.classes),
        ImageSet(Rows(test.images, test_index), test.labels[test_index], test.classes),
    )


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
        for chunk in images.split(batch_size):  # a tensor or LazyRows
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
    inputs: Inputs, labels: torch.Tensor, targets: torch.Tensor, params: ProjectorParams, runtime: Runtime
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


def plain_batches(
    projector: Projector, teachers: list[nn.Module], fit: ImageSet, params: ProjectorParams, runtime: Runtime,
    progress: Progress,
) -> tuple[Batches, int]:  # fmt: skip
    """views=plain: the teachers' targets once per image and view, and the frozen prefix cached when LoRA leaves
    leading blocks alone (projector.cache_prefix); returns the batches and how many blocks are cached."""
    views = 2 if params.flip else 1
    task = progress.task(f"targets of {len(teachers)} teachers", total=len(teachers) * views * len(fit.labels))
    with runtime.autocast():
        targets = [teachers_target(teachers, fit.images, params, task.advance, mirrored=bool(v)) for v in range(views)]
    inputs, blocks = pixel_inputs(fit.images), projector.frozen_prefix_blocks() if params.cache_prefix else 0
    if blocks:
        caching = progress.task(f"cache {blocks} frozen blocks", total=views * len(fit.labels))
        with runtime.autocast():
            inputs = cached_prefix_inputs(projector, fit.images, views, blocks, params.batch_size, caching.advance)
    return fixed_views(inputs, fit.labels, torch.stack(targets, dim=1), params, runtime), blocks


def fit(
    projector: Projector,
    batches: Batches,
    steps_per_epoch: int,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    params: ProjectorParams,
    generator: torch.Generator,
    progress: Progress,
    runtime: Runtime,
    prefix_blocks: int = 0,
) -> list[dict[str, float]]:
    """Train the trainable tensors; keep the state of the epoch with the lowest validation loss.
    Under torchrun the gradients of each rank's shard are averaged (DDP); every rank scores the whole
    validation set, so all of them keep the same epoch. With `prefix_blocks` the batches hold cached prefix
    outputs (`cached_prefix_inputs`) instead of pixels."""
    model = PrefixFed(projector, prefix_blocks) if prefix_blocks else projector
    parallel = runtime.parallel(model, broadcast_buffers=False)
    optimizer = make_optimizer(projector.trainable_parameters(), "adamw", params.lr, params.weight_decay)
    total = params.epochs * steps_per_epoch
    optimisation = Optimisation(optimizer, total, total // 20, runtime)
    val_images, val_labels, val_targets = val
    best, history = (math.inf, None), []
    task = progress.task("fit projector", total=params.epochs)
    for epoch in range(1, params.epochs + 1):
        projector.train()
        for step, (batch, target, hard) in enumerate(batches(generator)):
            with runtime.autocast():
                logits = parallel(*batch)
            loss = projector_loss(logits.float(), target, hard, params)
            optimisation.step(loss)
            task.update(epoch - 1 + (step + 1) / steps_per_epoch)
        task.update(epoch, status=f"last loss {loss.item():.4f}")  # one host sync per epoch, not per step
        with runtime.autocast():
            val_logits = predict_logits(projector, val_images, batch_size=LABEL_BATCH)
        val_loss = projector_loss(val_logits, val_targets, val_labels, params).item()
        history.append(
            {"epoch": epoch, "val_loss": round(val_loss, 5), **agreement(val_logits, val_targets, val_labels)}
        )
        progress.note(f"projector epoch {epoch}: {history[-1]}")
        if val_loss < best[0]:
            best = (val_loss, {k: v.detach().clone() for k, v in projector.state_dict().items()})
    projector.load_state_dict(best[1])
    return history
