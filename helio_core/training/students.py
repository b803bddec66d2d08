"""Students trained from scratch on a distilled set (Algorithm 1, lines 12-15), one per (arch, label mode, seed).

For each batch X of distilled images, A(X) = RandomResizedCrop + flip + CutMix, the soft target is computed on
A(X) by the label mode's source, and the student learns from it beside the CutMix-mixed hard labels. Every label
mode of a seed trains on the very same augmented batches (one `ViewPlan` per seed), so the table compares label
sources and nothing else.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from helio_core.data.distilled import load_distilled
from helio_core.data.splits import ImageSet, load_classes, load_split
from helio_core.data.views import ViewPlan, plan_views, render_views
from helio_core.errors import HelioError
from helio_core.models import quantise
from helio_core.models.architectures import create_model
from helio_core.models.checkpoints import load_teacher
from helio_core.models.label_net import load_label_net
from helio_core.models.projector import load_projector
from helio_core.params import LabelMode, StudentParams
from helio_core.progress import Progress
from helio_core.runtime import Runtime
from helio_core.training.engine import Optimisation, accuracy, make_optimizer
from helio_core.training.labels import SoftLabels, WeakTeachers
from helio_core.training.losses import student_loss
from helio_core.workspace import Workspace

Curve = list[tuple[int, float, float | None]]  # (epoch, mean train loss, curve score or None)


@dataclass(frozen=True)
class StudentRun:
    """One trained student: its scores and its curve."""

    arch: str
    mode: LabelMode
    seed: int
    test_acc: float
    val_acc: float
    curve: Curve
    seconds: float

    @property
    def job(self) -> tuple[str, int, LabelMode]:
        return self.arch, self.seed, self.mode


def make_plan(n: int, size: int, params: StudentParams, crop_scale: list[float] | None, seed: int) -> ViewPlan:
    generator = torch.Generator().manual_seed(seed)
    return plan_views(n, params.epochs, params.batch_size, size, crop_scale, params.flip, params.cutmix, generator)


def train_student(
    model: nn.Module,
    mode: LabelMode,
    data: ImageSet,
    plan: ViewPlan,
    soft_labels: SoftLabels | None,
    params: StudentParams,
    score: Callable[[nn.Module], float],
    runtime: Runtime,
    on_epoch: Callable[[int, float], None] | None = None,
) -> Curve:
    """Train `model` (on the runtime's device) in place through the plan; return its curve. Views are rendered on
    the CPU, then labelled and learnt from on the device; `score` runs every `eval_every` epochs and at the end."""
    optimizer = make_optimizer(model.parameters(), "adamw", params.lr, params.weight_decay)
    optimisation = Optimisation(optimizer, plan.epochs * len(plan.batches()), 0, runtime)
    num_classes, curve = len(data.classes), []
    for epoch in range(plan.epochs):
        model.train()
        losses = []
        for batch in plan.batches():
            rendered = render_views(data.images, data.labels, plan, epoch, batch, num_classes)
            views, hard = (runtime.to_device(t) for t in rendered)
            with runtime.autocast():
                soft = soft_labels(epoch, batch, views) if soft_labels is not None else None
                logits = model(views.contiguous(memory_format=torch.channels_last))
            loss = student_loss(mode, logits.float(), soft, hard, params)
            optimisation.step(loss)
            losses.append(loss.detach())  # read once per epoch: no host sync per step on a GPU
        mean_loss = sum(torch.stack(losses).tolist()) / len(losses)
        last = epoch + 1 == plan.epochs
        scored = score(model) if (epoch + 1) % params.eval_every == 0 or last else None
        curve.append((epoch + 1, mean_loss, scored))
        if on_epoch is not None:
            on_epoch(epoch + 1, mean_loss)
    return curve


def new_student(
    arch: str, num_classes: int, images: torch.Tensor, mean: list[float], std: list[float], seed: int,
    device: torch.device,
) -> nn.Module:  # fmt: skip
    """A freshly initialised student (the same initial weights for every label mode of a seed, drawn on the
    CPU whatever the device, so a seed means the same network everywhere)."""
    torch.manual_seed(seed)
    channels, size = images.shape[1], images.shape[-1]
    model = create_model(arch, num_classes, channels, size, mean, std)
    return model.to(device, memory_format=torch.channels_last)


@dataclass(frozen=True)
class StudentInputs:
    """What students are trained and scored with: the refined images, the label networks on the runtime's device
    (frozen), and the splits and normalisation of the data set."""

    distilled: ImageSet  # the refined images the students train on (the full-data reference: the train split)
    classes_sha256: str
    mean: list[float]
    std: list[float]
    val: ImageSet
    test: ImageSet
    teacher: nn.Module
    teacher_file: Path
    projector: nn.Module | None  # None for the full-data reference, which reads nothing of the distilled set
    weak_teachers: WeakTeachers | None = None
    weak_teacher_files: list[Path] = field(default_factory=list)
    label_net: nn.Module | None = None
    quantised_teachers: dict[str, tuple[nn.Module, int]] = field(default_factory=dict)  # dtype: (net, file bytes)


def quantised_teacher(teacher: nn.Module, dtype: str) -> tuple[nn.Module, int]:
    """The teacher as a file of its weights in `dtype` would give it back (helio_core.models.quantise; the
    normalisation exact), and that file's size in bytes."""
    state = teacher.state_dict()
    tensors = quantise.stored(state, dtype, exact=("mean", "std"))
    model = copy.deepcopy(teacher)
    missing, unexpected = model.load_state_dict(quantise.restored(tensors, {n: t.shape for n, t in state.items()}),
                                                strict=False)  # fmt: skip
    if unexpected or any(not name.endswith("num_batches_tracked") for name in missing):
        raise HelioError(f"quantised teacher ({dtype}): state mismatch {missing[:3]} {unexpected[:3]}")
    return model.requires_grad_(False).eval(), quantise.stored_bytes(tensors)


def with_quantised_teachers(inputs: StudentInputs, modes: list[str]) -> StudentInputs:
    """`inputs` with the teacher quantised for each of `modes` that asks for it (teacher_int8, teacher_int4)."""
    quantised = {mode: quantised_teacher(inputs.teacher, mode.removeprefix("teacher_")) for mode in modes
                 if mode in ("teacher_int8", "teacher_int4")}  # fmt: skip
    return replace(inputs, quantised_teachers=quantised)


def load_student_inputs(
    workspace: Workspace, runtime: Runtime, batchnorm: str, weak_teachers: bool = False, label_net: bool = False,
    full_data: bool = False,
) -> StudentInputs:  # fmt: skip
    """Read and check (one class list throughout) what the students' stages share; with `weak_teachers`, also the
    teachers the projector was fit to (label mode `teachers`), with `label_net` the label network (label mode
    `label_net`). `batchnorm` is how the teachers normalise the views they label (their checkpoints' statistics,
    or each batch's own). With `full_data` the students train on the whole train split and nothing of the
    distilled set is read (no refined images, no projector), so its stage depends only on the data and teachers."""
    if full_data and (weak_teachers or label_net):
        raise HelioError("the full-data reference labels with the teacher or hard labels only")
    classes, class_hash = load_classes(workspace.classes)
    train, train_meta = load_split(workspace.split("train"), classes)
    val, _ = load_split(workspace.split("val"), classes)
    test, _ = load_split(workspace.split("test"), classes)
    teacher_file = workspace.last_teacher()
    teacher, _ = load_teacher(teacher_file, class_hash, runtime.device, batchnorm)
    inputs = StudentInputs(
        train, class_hash, train_meta["mean"], train_meta["std"], val, test, teacher, teacher_file, None
    )  # fmt: skip
    if full_data:
        return inputs
    images, labels = load_distilled(workspace.refined, class_hash)
    distilled_images, distilled_labels = load_distilled(workspace.projector_images, class_hash)
    projector, metadata = load_projector(workspace.projector, distilled_images, distilled_labels, class_hash)
    projector.requires_grad_(False).eval().to(runtime.device)  # frozen: adapted weights computed once (cached)
    inputs = replace(inputs, distilled=ImageSet(images, labels, classes), projector=projector)
    if label_net:
        network = load_label_net(workspace.label_net, class_hash)[0].requires_grad_(False)
        inputs = replace(inputs, label_net=network.to(runtime.device, memory_format=torch.channels_last))
    if not weak_teachers:
        return inputs
    files = workspace.teacher_checkpoints(metadata["teacher_epochs"])
    fit = metadata["provenance"]["params"]["projector"]
    members = [load_teacher(file, class_hash, runtime.device, batchnorm)[0] for file in files]
    ensemble = WeakTeachers(members, fit["target"], fit["temperature"]).requires_grad_(False).eval()
    return replace(inputs, weak_teachers=ensemble, weak_teacher_files=files)


def train_students(
    jobs: list[tuple[str, int, LabelMode]],
    inputs: StudentInputs,
    plans: dict[int, ViewPlan],
    sources: dict[str, Callable[[int], SoftLabels | None]],
    params: StudentParams,
    curve_set: ImageSet,
    runtime: Runtime,
    progress: Progress,
) -> list[StudentRun]:
    """Train and score each (arch, seed, label mode) student; `sources[mode](seed)` gives its soft labels."""

    def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
        with runtime.autocast():
            return accuracy(model, images, labels)

    runs = []
    with parametrize.cached():  # the frozen projector's adapted weights are computed once for every batch
        for arch, seed, mode in jobs:
            started = time.perf_counter()
            data = inputs.distilled
            model = new_student(arch, len(data.classes), data.images, inputs.mean, inputs.std, seed, runtime.device)
            task = progress.task(f"{arch} {mode} seed {seed}", total=params.epochs)
            curve = train_student(
                model, mode, data, plans[seed], sources[mode](seed), params,
                lambda m: score(m, curve_set.images, curve_set.labels), runtime,
                lambda epoch, loss, task=task: task.update(epoch, status=f"loss {loss:.4f}"),
            )  # fmt: skip
            test_acc = score(model, inputs.test.images, inputs.test.labels)
            val_acc = score(model, inputs.val.images, inputs.val.labels)
            task.update(params.epochs, status=f"test {test_acc:.4f}")
            runs.append(StudentRun(arch, mode, seed, test_acc, val_acc, curve, time.perf_counter() - started))
    return runs


def summarise(runs: list[StudentRun], extra_storage: dict[str, int]) -> dict:
    """Mean and std over seeds per (arch, mode): the shape of metrics/students.json."""
    table: dict[str, dict] = {}
    for run in runs:
        table.setdefault(run.arch, {}).setdefault(run.mode, []).append(run)
    summary = {}
    for arch, modes in table.items():
        summary[arch] = {}
        for mode, group in modes.items():
            accs = [r.test_acc for r in group]
            summary[arch][mode] = {
                "acc": round(statistics.fmean(accs), 5),
                "acc_std": round(statistics.stdev(accs), 5) if len(accs) > 1 else 0.0,
                "seeds": len(accs),
                "extra_storage_bytes": extra_storage[mode],
                "accs": [round(a, 5) for a in accs],
                "val_acc": round(statistics.fmean(r.val_acc for r in group), 5),
                "val_accs": [round(r.val_acc, 5) for r in group],  # per seed, in the order of `accs`: for pairing
                "seconds_per_student": round(statistics.fmean(r.seconds for r in group), 1),
            }
    return summary


def curve_rows(runs: list[StudentRun]) -> list[dict]:
    """Long-format rows for the curves CSV (one per run and epoch)."""
    return [
        {
            "run": f"{run.arch}/{run.mode}/seed{run.seed}",
            "arch": run.arch,
            "mode": run.mode,
            "seed": run.seed,
            "epoch": epoch,
            "train_loss": round(loss, 5),
            "val_acc": "" if val is None else round(val, 5),
        }
        for run in runs
        for epoch, loss, val in run.curve
    ]
