"""Where a student's soft labels come from, batch by batch: a network run online on each augmented batch (the
projector, the full teacher, the weak teachers' ensemble), or a stored file replayed against the views it
labels (SRe2L/FKD's stored labels, with the `ViewPlan` beside them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from helio_core import artifacts
from helio_core.data.views import ViewPlan, plan_views, render_views
from helio_core.errors import HelioError
from helio_core.params import StudentParams
from helio_core.runtime import Runtime, model_device
from helio_core.training.losses import combine_teachers

SoftLabels = Callable[[int, slice, torch.Tensor], torch.Tensor | None]  # (epoch, positions, views) -> logits
# a fresh epoch of (model inputs, target logits, CutMix-mixed hard labels) batches for a generator
Batches = Callable[[torch.Generator], Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]]]


def online_labels(labeller: nn.Module) -> SoftLabels:
    """Soft labels from a network run on each augmented batch (on the batch's device, under the caller's
    autocast), without gradient."""

    def label(epoch: int, positions: slice, views: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return labeller(views.contiguous(memory_format=torch.channels_last)).float()

    return label


class WeakTeachers(nn.Module):
    """The projector's target as a labeller (label mode `teachers`): the weak teachers it was fit to, run on each
    view and combined as in its fit. What a perfectly faithful projector would give, at the cost of every one of
    those checkpoints: the ceiling the projector is measured against, not something to ship."""

    def __init__(self, teachers: list[nn.Module], target: str, temperature: float) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.target, self.temperature = target, temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return combine_teachers([teacher(images) for teacher in self.teachers], self.target, self.temperature)


def labelled_views(
    images: torch.Tensor, labels: torch.Tensor, teachers: list[nn.Module], num_classes: int, student: StudentParams,
    crop_scale: list[float] | None, batch_size: int, combine: Callable[[list[torch.Tensor]], torch.Tensor],
    runtime: Runtime,
) -> Batches:  # fmt: skip
    """Fresh student-style views every epoch (the students' RandomResizedCrop, flip and CutMix: what a label source
    will be asked to label), the teachers run on each view and `combine`d into one target. Every rank plans the
    same global batches (CutMix mixes within one) and keeps its shard."""

    def epoch(generator: torch.Generator):
        size = images.shape[-1]
        plan = plan_views(len(labels), 1, batch_size, size, crop_scale, student.flip, student.cutmix, generator)
        for batch in plan.batches():
            views, hard = render_views(images, labels, plan, 0, batch, num_classes)
            views, hard = runtime.to_device(runtime.shard(views)), runtime.to_device(runtime.shard(hard))
            with torch.no_grad(), runtime.autocast():
                channels_last = views.contiguous(memory_format=torch.channels_last)
                logits = [teacher.eval()(channels_last).float() for teacher in teachers]
            yield (views,), combine(logits), hard

    return epoch


def joined_views(main: Batches, extra: Batches) -> Batches:
    """Every batch of `main` with the next batch of `extra` appended; `extra` starts a fresh epoch (new views)
    whenever it runs out, so a pass over `main` sets the epoch's length however few images `extra` draws from."""

    def epoch(generator: torch.Generator):
        extra_batches = _endless(extra, generator)
        for (inputs,), target, hard in main(generator):
            (extra_inputs,), extra_target, extra_hard = next(extra_batches)
            yield (torch.cat([inputs, extra_inputs]),), torch.cat([target, extra_target]), torch.cat([hard, extra_hard])

    return epoch


def _endless(batches: Batches, generator: torch.Generator):
    while True:
        yield from batches(generator)


def replayed_labels(logits: torch.Tensor) -> SoftLabels:
    """Soft labels read from a stored (epochs, images, classes) tensor, indexed by planned position."""

    def label(epoch: int, positions: slice, views: torch.Tensor) -> torch.Tensor:
        return logits[epoch, positions].to(views.device).float()

    return label


def teacher_view_logits(
    teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, plan: ViewPlan, num_classes: int
) -> torch.Tensor:
    """The teacher's logits for every planned view, (epochs, images, classes) in fp16 on the CPU: what SRe2L
    stores. The teacher runs on its own device."""
    teacher.eval()
    label, device = online_labels(teacher), model_device(teacher)
    stored = torch.empty(plan.epochs, plan.order.shape[1], num_classes, dtype=torch.float16)
    for epoch in range(plan.epochs):
        for batch in plan.batches():
            views, _ = render_views(images, labels, plan, epoch, batch, num_classes)
            stored[epoch, batch] = label(epoch, batch, views.to(device)).to(torch.float16).cpu()
    return stored


def save_stored_labels(path: Path, logits: torch.Tensor, plan: ViewPlan, metadata: dict) -> int:
    """Write labels + the plan they label (save_tensors writes atomically); return the file's size in bytes."""
    artifacts.save_tensors(path, {"logits": logits, **plan.tensors()}, {"kind": "stored-labels", **metadata})
    return path.stat().st_size


def load_stored_labels(path: Path) -> tuple[torch.Tensor, ViewPlan]:
    tensors, metadata = artifacts.load_tensors(path)
    if metadata.get("kind") != "stored-labels":
        raise HelioError(f"{path}: not a stored-labels file (kind={metadata.get('kind')!r})")
    return tensors.pop("logits"), ViewPlan.from_tensors(tensors, metadata["batch_size"])
