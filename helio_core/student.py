"""Stage `evaluate_students`: students trained from scratch on the distilled images, one per label mode.

Algorithm 1, lines 12-15: for each batch X of distilled images, A(X) = RandomResizedCrop + flip + CutMix,
Y* = projector(A(X)) computed online without gradient, loss MSE(f(A(X)), Y*) + beta * CE(f(A(X)), Y).
Beside it, on the very same augmented batches (one `ViewPlan` per seed), the baselines:
`teacher` (RDED: KL at temperature T to the full teacher's online logits), `hard` (CE only) and `stored`
(SRe2L/FKD: the teacher's logits for every planned view precomputed, written to disk, read back, and
replayed; the file's size is what that approach ships).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from helio_core import artifacts, models, report, storage
from helio_core.augment import ViewPlan, plan_views, render_views
from helio_core.data import DataPaths, ImageSet, load_classes, load_split
from helio_core.distilled import REFINED, DistilledPaths, load_distilled
from helio_core.errors import HelioError
from helio_core.params import LabelMode, Params, ProjectorParams, StudentParams
from helio_core.progress import progress_bar
from helio_core.projector import load_projector
from helio_core.projector_fit import ProjectorPaths, combine_teachers, distillation_kl, teacher_checkpoints
from helio_core.runtime import CPU, Runtime, model_device, optimizer_step
from helio_core.teachers import TeacherPaths, accuracy, load_teacher, lr_factor

SoftLabels = Callable[[int, slice, torch.Tensor], torch.Tensor | None]  # (epoch, positions, views) -> logits


@dataclass(frozen=True)
class StudentRun:
    """One trained student: its scores and its curve (epoch, train loss, validation accuracy or None)."""

    arch: str
    mode: LabelMode
    seed: int
    test_acc: float
    val_acc: float
    curve: list[tuple[int, float, float | None]]
    seconds: float

    @property
    def job(self) -> tuple[str, int, LabelMode]:
        return self.arch, self.seed, self.mode


def student_loss(
    mode: LabelMode,
    logits: torch.Tensor,
    soft: torch.Tensor | None,
    hard: torch.Tensor,
    params: StudentParams,
) -> torch.Tensor:
    """The loss of one label mode; `hard` holds the CutMix-mixed one-hot labels."""
    if mode == "hard":
        return F.cross_entropy(logits, hard)
    if mode == "projector":
        student = standardised(logits) if params.standardise else logits
        target = standardised(soft) if params.standardise else soft
        if params.projector_loss == "mse":
            matched = F.mse_loss(student, target)
        elif params.projector_loss == "kl":
            matched = distillation_kl(student, target, params.temperature)
        else:
            t = params.temperature
            matched = F.mse_loss(F.softmax(student / t, -1), F.softmax(target / t, -1), reduction="sum") / len(logits)
        return matched + params.beta * F.cross_entropy(logits, hard)
    return distillation_kl(logits, soft, params.temperature)


def standardised(logits: torch.Tensor) -> torch.Tensor:
    """Each logit vector z-scored: matches the shape of the distribution, not the labeller's logit scale."""
    return (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + 1e-7)


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

    def __init__(self, teachers: list[nn.Module], target: ProjectorParams) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.target = target

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return combine_teachers([teacher(images) for teacher in self.teachers], self.target)


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


def make_plan(n: int, size: int, params: StudentParams, crop_scale: list[float], seed: int) -> ViewPlan:
    generator = torch.Generator().manual_seed(seed)
    return plan_views(n, params.epochs, params.batch_size, size, crop_scale, params.flip, params.cutmix, generator)


def train_student(
    model: nn.Module,
    mode: LabelMode,
    images: torch.Tensor,
    labels: torch.Tensor,
    plan: ViewPlan,
    soft_labels: SoftLabels | None,
    params: StudentParams,
    num_classes: int,
    score: Callable[[nn.Module], float],
    on_epoch: Callable[[int, float], None] | None = None,
    runtime: Runtime = CPU,
) -> list[tuple[int, float, float | None]]:
    """Train `model` (on the runtime's device) in place through the plan; return the curve (epoch, mean loss,
    curve score or None). Views are rendered on the CPU, then labelled and learnt from on the device."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay, fused=True)
    scaler = runtime.grad_scaler()
    steps_per_epoch = len(plan.batches())
    total = plan.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, 0))
    curve = []
    for epoch in range(plan.epochs):
        model.train()
        losses = []
        for batch in plan.batches():
            views, hard = (runtime.to_device(t) for t in render_views(images, labels, plan, epoch, batch, num_classes))
            with runtime.autocast():
                soft = soft_labels(epoch, batch, views) if soft_labels is not None else None
                logits = model(views.contiguous(memory_format=torch.channels_last))
            loss = student_loss(mode, logits.float(), soft, hard, params)
            optimizer_step(loss, optimizer, scaler)
            schedule.step()
            losses.append(loss.item())
        mean_loss = sum(losses) / len(losses)
        last = epoch + 1 == plan.epochs
        scored = score(model) if (epoch + 1) % params.eval_every == 0 or last else None
        curve.append((epoch + 1, mean_loss, scored))
        if on_epoch is not None:
            on_epoch(epoch + 1, mean_loss)
    return curve


def new_student(
    arch: str,
    num_classes: int,
    images: torch.Tensor,
    mean: list[float],
    std: list[float],
    seed: int,
    device: torch.device = CPU.device,
):
    """A freshly initialised student (the same initial weights for every label mode of a seed, drawn on the
    CPU whatever the device, so a seed means the same network everywhere)."""
    torch.manual_seed(seed)
    channels, size = images.shape[1], images.shape[-1]
    model = models.create_model(arch, num_classes, channels, size, mean, std)
    return model.to(device, memory_format=torch.channels_last)


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
                "seconds_per_student": round(statistics.fmean(r.seconds for r in group), 1),
            }
    return summary


def curve_rows(runs: list[StudentRun]) -> list[dict]:
    """Long-format rows for plots/student_curves.csv (one per run and epoch)."""
    rows = []
    for run in runs:
        for epoch, loss, val in run.curve:
            rows.append(
                {
                    "run": f"{run.arch}/{run.mode}/seed{run.seed}",
                    "arch": run.arch,
                    "mode": run.mode,
                    "seed": run.seed,
                    "epoch": epoch,
                    "train_loss": round(loss, 5),
                    "val_acc": "" if val is None else round(val, 5),
                }
            )
    return rows


@dataclass(frozen=True)
class StudentPaths:
    metrics: Path = Path("metrics/students.json")
    storage: Path | None = Path("metrics/storage.json")  # None: no storage report (the cross-arch stages)
    curves: Path = Path("plots/student_curves.csv")
    accuracy_plot: Path = Path("plots/accuracy_vs_storage.png")
    stored_labels: Path | None = Path("artifacts/stored_labels")  # None: no `stored` mode, no folder

    def stored_file(self, seed: int, folder: Path | None = None) -> Path:
        return (folder or self.stored_labels) / f"seed_{seed}.safetensors"


@dataclass(frozen=True)
class StudentInputs:
    """What students are trained and scored with: the refined images, the two label networks on the runtime's
    device (frozen), and the splits and normalisation of the data set."""

    classes: list[str]
    class_hash: str
    train_meta: dict
    val: ImageSet
    test: ImageSet
    images: torch.Tensor
    labels: torch.Tensor
    teacher: nn.Module
    teacher_file: Path
    projector: nn.Module
    weak_teachers: WeakTeachers | None = None
    weak_teacher_files: list[Path] = dataclasses.field(default_factory=list)


def load_student_inputs(
    runtime: Runtime,
    refined_paths: DistilledPaths = REFINED,
    distilled_paths: DistilledPaths = DistilledPaths(),
    projector_paths: ProjectorPaths = ProjectorPaths(),
    teacher_paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    weak_teachers: bool = False,
    teacher_batchnorm: str = "running",
) -> StudentInputs:
    """Read and check (one class list throughout) what `evaluate_students` and `evaluate_continual` share;
    with `weak_teachers`, also the teachers the projector was fit to (label mode `teachers`). With
    `teacher_batchnorm="batch"` the teachers normalise each batch of views by its own statistics."""
    normalised = models.batch_statistics if teacher_batchnorm == "batch" else lambda teacher: teacher
    classes, class_hash = load_classes(data_paths.classes)
    _, train_meta = load_split(data_paths.train, class_hash)
    val, _ = load_split(data_paths.val, class_hash)
    test, _ = load_split(data_paths.test, class_hash)
    images, labels = load_distilled(refined_paths, class_hash)
    distilled_images, distilled_labels = load_distilled(distilled_paths, class_hash)
    teacher_file = teacher_paths.last_kept()
    teacher = normalised(load_teacher(teacher_file, class_hash, runtime.device))
    projector, metadata = load_projector(projector_paths.file, distilled_images, distilled_labels, class_hash)
    projector.requires_grad_(False).eval().to(runtime.device)  # frozen: adapted weights computed once (cached)
    inputs = StudentInputs(classes, class_hash, train_meta, val, test, images, labels, teacher, teacher_file, projector)
    if not weak_teachers:
        return inputs
    files = teacher_checkpoints(teacher_paths, metadata["teacher_epochs"])
    fit = metadata["provenance"]["params"]["projector"]
    target = dataclasses.replace(ProjectorParams(), target=fit["target"], temperature=fit["temperature"])
    ensemble = WeakTeachers([normalised(load_teacher(file, class_hash, runtime.device)) for file in files], target)
    return dataclasses.replace(inputs, weak_teachers=ensemble.requires_grad_(False).eval(), weak_teacher_files=files)


def run_evaluate_students(
    params: Params,
    paths: StudentPaths = StudentPaths(),
    refined_paths: DistilledPaths = REFINED,
    distilled_paths: DistilledPaths = DistilledPaths(),
    projector_paths: ProjectorPaths = ProjectorPaths(),
    teacher_paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    runtime: Runtime = CPU,
) -> dict:
    """Train every (arch, label mode, seed) student on the refined images; write the side-by-side table.

    Under torchrun the students are dealt out to the ranks (each trains whole students: they are independent,
    so the table does not depend on the number of processes); rank 0 stores the teacher's labels first and
    writes the table at the end."""
    started = time.perf_counter()
    config = params.student
    inputs = load_student_inputs(
        runtime, refined_paths, distilled_paths, projector_paths, teacher_paths, data_paths,
        weak_teachers="teachers" in config.label_modes, teacher_batchnorm=config.teacher_batchnorm,
    )  # fmt: skip
    classes, class_hash, train_meta, val, test = (
        inputs.classes,
        inputs.class_hash,
        inputs.train_meta,
        inputs.val,
        inputs.test,
    )
    images, labels, teacher, teacher_file, projector = (
        inputs.images,
        inputs.labels,
        inputs.teacher,
        inputs.teacher_file,
        inputs.projector,
    )
    num_classes, size = len(classes), images.shape[-1]
    generator = torch.Generator().manual_seed(params.seed)
    curve_index = torch.randperm(len(val.labels), generator=generator)[: config.curve_images]
    curve_images, curve_labels = val.images[curve_index], val.labels[curve_index]
    crop_scale = params.student_crop_scale
    plans = {seed: make_plan(len(labels), size, config, crop_scale, seed) for seed in config.seeds}
    jobs = [(arch, seed, mode) for arch in config.archs for seed in config.seeds for mode in config.label_modes]

    runs: list[StudentRun] = []
    stored: dict[int, torch.Tensor] = {}

    def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
        with runtime.autocast():
            return accuracy(model, images, labels)

    with progress_bar(runtime.is_main) as bar, parametrize.cached():
        if "stored" in config.label_modes and paths.stored_labels is None:
            raise HelioError("student.label_modes lists `stored` but these students have no stored-label folder")
        with runtime.output(paths.stored_labels) if paths.stored_labels else contextlib.nullcontext() as folder:
            if folder is not None:
                folder.mkdir()  # left empty without the `stored` mode: the stage's output still exists
            if folder is not None and "stored" in config.label_modes:
                task = bar.add_task("store the teacher's labels", total=len(config.seeds), status="")
                for seed, plan in plans.items():
                    with runtime.autocast():
                        logits = teacher_view_logits(teacher, images, labels, plan, num_classes)
                    metadata = {"seed": seed, "batch_size": config.batch_size, "teacher": teacher_file.name,
                                "teacher_batchnorm": config.teacher_batchnorm,
                                "classes_sha256": class_hash}  # fmt: skip
                    save_stored_labels(paths.stored_file(seed, folder), logits, plan, metadata)
                    bar.advance(task)
        runtime.barrier()
        if "stored" in config.label_modes:
            for seed in config.seeds:
                stored[seed], plans[seed] = load_stored_labels(paths.stored_file(seed))
        sources: dict[str, Callable[[int], SoftLabels | None]] = {
            "projector": lambda seed: online_labels(projector),
            "teacher": lambda seed: online_labels(teacher),
            "teachers": lambda seed: online_labels(inputs.weak_teachers),
            "hard": lambda seed: None,
            "stored": lambda seed: replayed_labels(stored[seed]),
        }
        for arch, seed, mode in runtime.shard_list(jobs):
            run_started = time.perf_counter()
            model = new_student(arch, num_classes, images, train_meta["mean"], train_meta["std"], seed, runtime.device)
            task = bar.add_task(f"{arch} {mode} seed {seed}", total=config.epochs, status="")

            def progress(epoch: int, loss: float, task=task) -> None:
                bar.update(task, completed=epoch, status=f"loss {loss:.4f}")

            curve = train_student(
                model, mode, images, labels, plans[seed], sources[mode](seed), config, num_classes,
                lambda m: score(m, curve_images, curve_labels), progress, runtime,
            )  # fmt: skip
            test_acc, val_acc = score(model, test.images, test.labels), score(model, val.images, val.labels)
            bar.update(task, status=f"test {test_acc:.4f}")
            runs.append(StudentRun(arch, mode, seed, test_acc, val_acc, curve, time.perf_counter() - run_started))
    runs = sorted((run for share in runtime.gather(runs) for run in share), key=lambda run: jobs.index(run.job))
    if not runtime.is_main:
        return {}
    extra = {
        "projector": projector_paths.file.stat().st_size,
        "teacher": teacher_file.stat().st_size,
        "teachers": sum(file.stat().st_size for file in inputs.weak_teacher_files),
        "hard": 0,
        "stored": paths.stored_file(config.seeds[0]).stat().st_size if stored else 0,
    }
    image_files = sorted((refined_paths.folder / "images").glob("*.png"))
    summary = summarise(runs, extra)
    metrics = {
        "ipc": params.select.ipc,
        "epochs": config.epochs,
        "test_images": len(test.labels),
        "archs": config.archs,
        **summary,
        "images_bytes": storage.files_bytes(image_files),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(paths.metrics, metrics)
    if paths.storage is not None:
        report.write_storage(paths.storage, extra, len(labels), config, num_classes, metrics["images_bytes"])
    report.write_curves(paths.curves, curve_rows(runs))
    report.plot_accuracy_vs_storage(paths.accuracy_plot, summary, metrics["images_bytes"], params.select.ipc)
    return metrics


def cross_arch_paths(arch: str) -> StudentPaths:
    """Where the cross-architecture stage of `arch` writes: its own table, curves and plot; no stored labels."""
    return StudentPaths(
        metrics=Path(f"metrics/cross_arch/{arch}.json"),
        storage=None,
        curves=Path(f"plots/cross_arch/{arch}_curves.csv"),
        accuracy_plot=Path(f"plots/cross_arch/{arch}.png"),
        stored_labels=None,
    )


def run_evaluate_arch(
    params: Params,
    arch: str,
    paths: StudentPaths | None = None,
    refined_paths: DistilledPaths = REFINED,
    distilled_paths: DistilledPaths = DistilledPaths(),
    projector_paths: ProjectorPaths = ProjectorPaths(),
    teacher_paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    runtime: Runtime = CPU,
) -> dict:
    """The students of one architecture of the paper's Table 2: the `student` recipe on the refined images with
    the `cross_arch` section's label modes and seeds, and its learning rate for the arch where it sets one."""
    cross_arch = params.cross_arch
    if arch not in cross_arch.archs:
        raise HelioError(f"arch {arch!r} is not one of cross_arch.archs {cross_arch.archs}")
    student = dataclasses.replace(
        params.student,
        archs=[arch],
        label_modes=list(cross_arch.label_modes),
        seeds=list(cross_arch.seeds),
        lr=cross_arch.lr.get(arch, params.student.lr),
    )
    return run_evaluate_students(
        dataclasses.replace(params, student=student),
        paths or cross_arch_paths(arch),
        refined_paths, distilled_paths, projector_paths, teacher_paths, data_paths, runtime,
    )  # fmt: skip


def table_rows(metrics: dict, source: str = "students' metrics") -> list[tuple[str, str, dict]]:
    """(arch, label mode, summary row) of a students' table (metrics/students.json, metrics/cross_arch/<arch>.json)."""
    try:
        return [(arch, mode, row) for arch in metrics["archs"] for mode, row in metrics[arch].items()]
    except (KeyError, TypeError, AttributeError):
        raise HelioError(f"{source}: not a students' table (expected 'archs' and a row per arch and mode)") from None


def table_lines(rows: list[tuple[str, str, dict]]) -> list[str]:
    """A header and one plain-text line per (arch, label mode, summary row): accuracy, seeds, bytes, seconds."""
    lines = [
        f"{'arch':<16}{'label mode':<12}{'test acc %':>16}{'val %':>8}{'seeds':>6}{'extra bytes':>14}{'s/student':>10}"
    ]
    for arch, mode, row in rows:
        accuracy_text = f"{100 * row['acc']:.2f} ± {100 * row['acc_std']:.2f}"
        lines.append(
            f"{arch:<16}{mode:<12}{accuracy_text:>16}{100 * row['val_acc']:>8.2f}{row['seeds']:>6}"
            f"{row['extra_storage_bytes']:>14,}{row['seconds_per_student']:>10.0f}"
        )
    return lines


def format_table(metrics: dict) -> str:
    """The side-by-side table as plain text: accuracy (mean +- std over seeds) and extra storage per mode."""
    lines = [f"IPC {metrics['ipc']}, {metrics['epochs']} epochs, final-epoch test accuracy on {metrics['test_images']}"]
    lines += table_lines(table_rows(metrics))
    lines.append(f"images: {metrics['images_bytes']:,} bytes of PNG, shared by every mode")
    return "\n".join(lines)
