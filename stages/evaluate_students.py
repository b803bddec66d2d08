"""Stage `evaluate_students`: students per (arch, label mode, seed) on the refined images, every label mode on the
same augmented batches -> metrics/students.json (the side-by-side table), metrics/storage.json, the curves and
the accuracy-against-storage plot, and artifacts/stored_labels (the `stored` mode's files, SRe2L/FKD).

With `arch`, the same stage is one architecture of the paper's Table 2 (experiments/cross_arch/dvc.yaml): the
`student` recipe with the `cross_arch` section's label modes, seeds and learning rate for that arch, written to
metrics/cross_arch/<arch>.json and plots/cross_arch/, without stored labels or a storage report. With `full_data`
it is the full-data reference (experiments/fair/dvc.yaml): the same recipe on the whole train split, with
the `full_data` section's archs, label modes, seeds, epochs and batch size -> metrics/full_data.json. On the
`random` arm of the workspace (the same pipeline) it is the default recipe on the random baseline's refined images
under fair.random_label_modes -> metrics/random/students.json and artifacts/random/stored_labels. With `plain`,
DD-Ranking's no-augmentation students for its ARS: the default recipe without crop, flip or CutMix under
fair.random_label_modes, on the arm's images -> metrics/plain_students.json and artifacts/plain_stored_labels
(under metrics/random and artifacts/random on the random arm).

Under torchrun the students are dealt out to the ranks (each trains whole students: they are independent, so
the table does not depend on the number of processes); rank 0 stores the teacher's labels first and writes the
table at the end."""

from __future__ import annotations

import contextlib
import time

import torch

from helio_core import artifacts
from helio_core.data.splits import ImageSet
from helio_core.data.views import ViewPlan
from helio_core.errors import HelioError
from helio_core.params import Params
from helio_core.progress import SILENT, Progress
from helio_core.reporting import figures, storage
from helio_core.reporting.tables import format_table
from helio_core.runtime import CPU, Runtime
from helio_core.training.labels import (
    load_stored_labels,
    online_labels,
    replayed_labels,
    save_stored_labels,
    teacher_view_logits,
)
from helio_core.training.students import (
    StudentInputs,
    StudentRun,
    curve_rows,
    load_student_inputs,
    make_plan,
    summarise,
    train_students,
    with_quantised_teachers,
)
from helio_core.workspace import StudentOutputs, Workspace


def run(
    params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT, arch: str | None = None,
    full_data: bool = False, plain: bool = False,
) -> dict:  # fmt: skip
    started = time.perf_counter()
    params, outputs = _table_of(params, workspace, arch, full_data, plain)
    config = params.student
    if "stored" in config.label_modes and outputs.stored_labels is None:
        raise HelioError("student.label_modes lists `stored` but these students have no stored-label folder")
    modes = config.label_modes
    batchnorm = config.teacher_batchnorm
    inputs = load_student_inputs(workspace, runtime, batchnorm, "teachers" in modes, "label_net" in modes, full_data)
    inputs = with_quantised_teachers(inputs, modes)
    distilled, val = inputs.distilled, inputs.val
    curve = torch.randperm(len(val.labels), generator=torch.Generator().manual_seed(params.seed))[: config.curve_images]
    curve_set = ImageSet(val.images[curve], val.labels[curve], distilled.classes)
    size = distilled.images.shape[-1]
    plans = {
        seed: make_plan(len(distilled.labels), size, config, params.student_crop_scale, seed) for seed in config.seeds
    }
    stored, plans = _stored_labels(inputs, plans, params, outputs, runtime, progress)
    sources = {
        "projector": lambda seed: online_labels(inputs.projector),
        "label_net": lambda seed: online_labels(inputs.label_net),
        "teacher": lambda seed: online_labels(inputs.teacher),
        "teachers": lambda seed: online_labels(inputs.weak_teachers),
        "hard": lambda seed: None,
        "stored": lambda seed: replayed_labels(stored[seed]),
        **{mode: (lambda seed, net=net: online_labels(net)) for mode, (net, _) in inputs.quantised_teachers.items()},
    }
    jobs = [(a, seed, mode) for a in config.archs for seed in config.seeds for mode in config.label_modes]
    runs = train_students(runtime.shard_list(jobs), inputs, plans, sources, config, curve_set, runtime, progress)
    runs = sorted((run for share in runtime.gather(runs) for run in share), key=lambda run: jobs.index(run.job))
    if not runtime.is_main:
        return {}
    return _write_table(runs, inputs, params, workspace, outputs, stored, started)


def _table_of(
    params: Params, workspace: Workspace, arch: str | None, full_data: bool, plain: bool
) -> tuple[Params, StudentOutputs]:
    """The recipe and the outputs of the table asked for: the default one, one cross-architecture row, the
    full-data reference, or the default recipe (fair.random_label_modes) on a baseline arm's images or without
    augmentation."""
    if arch is not None and full_data:
        raise HelioError("evaluate-students: --arch and --full-data are two different tables; give one")
    flag = f"--{workspace.arm}" if workspace.arm else "--plain" if plain else None
    if flag and (arch is not None or full_data):
        raise HelioError(f"evaluate-students: {flag} trains the default recipe; give no --arch or --full-data")
    if full_data:
        return full_data_params(params), workspace.full_data()
    if arch is not None:
        return cross_arch_params(params, arch), workspace.cross_arch(arch)
    if not (workspace.arm or plain):
        return params, workspace.students()
    recipe = {"label_modes": list(params.fair.random_label_modes)}
    if plain:
        recipe |= {"crop": False, "crop_scale": None, "flip": False, "cutmix": False}
    student = params.student.model_copy(update=recipe)
    return params.model_copy(update={"student": student}), workspace.plain_students() if plain else workspace.students()


def cross_arch_params(params: Params, arch: str) -> Params:
    """The student recipe of one cross-architecture stage: its arch, the cross_arch section's label modes and
    seeds, and its learning rate where cross_arch.lr sets one."""
    cross_arch = params.cross_arch
    if arch not in cross_arch.archs:
        raise HelioError(f"arch {arch!r} is not one of cross_arch.archs {cross_arch.archs}")
    student = params.student.model_copy(update={
        "archs": [arch], "label_modes": list(cross_arch.label_modes), "seeds": list(cross_arch.seeds),
        "lr": cross_arch.lr.get(arch, params.student.lr),
    })  # fmt: skip
    return params.model_copy(update={"student": student})


def full_data_params(params: Params) -> Params:
    """The full-data reference's recipe: the `student` section with the `full_data` section's archs, label modes,
    seeds, epochs and batch size."""
    full = params.full_data
    student = params.student.model_copy(update={
        "archs": list(full.archs), "label_modes": list(full.label_modes), "seeds": list(full.seeds),
        "epochs": full.epochs, "batch_size": full.batch_size,
    })  # fmt: skip
    return params.model_copy(update={"student": student})


def _stored_labels(
    inputs: StudentInputs, plans: dict[int, ViewPlan], params: Params, outputs: StudentOutputs, runtime: Runtime,
    progress: Progress,
) -> tuple[dict[int, torch.Tensor], dict[int, ViewPlan]]:  # fmt: skip
    """The `stored` mode's labels: rank 0 writes the full teacher's logits for every planned view of each seed, then
    every rank reads them back with the plans they were written with, which it returns in place of `plans`."""
    config, stored, plans = params.student, {}, dict(plans)
    folder_or_none = runtime.output(outputs.stored_labels) if outputs.stored_labels else contextlib.nullcontext()
    with folder_or_none as folder:
        if folder is not None:
            folder.mkdir()  # left empty without the `stored` mode: the stage's output still exists
        if folder is not None and "stored" in config.label_modes:
            task = progress.task("store the teacher's labels", total=len(config.seeds))
            images, labels = inputs.distilled.images, inputs.distilled.labels
            for seed, plan in plans.items():
                with runtime.autocast():
                    logits = teacher_view_logits(inputs.teacher, images, labels, plan, len(inputs.distilled.classes))
                metadata = {"seed": seed, "batch_size": config.batch_size, "teacher": inputs.teacher_file.name,
                            "teacher_batchnorm": config.teacher_batchnorm,
                            "classes_sha256": inputs.classes_sha256}  # fmt: skip
                save_stored_labels(outputs.stored_file(seed, folder), logits, plan, metadata)
                task.advance()
    runtime.barrier()
    if "stored" in config.label_modes:
        for seed in config.seeds:
            stored[seed], plans[seed] = load_stored_labels(outputs.stored_file(seed))
    return stored, plans


def _write_table(
    runs: list[StudentRun], inputs: StudentInputs, params: Params, workspace: Workspace, outputs: StudentOutputs,
    stored: dict[int, torch.Tensor], started: float,
) -> dict:  # fmt: skip
    """The table (mean and std over seeds per arch and label mode, with each mode's extra bytes), its curves and
    plot, and the storage report where the outputs have one."""
    config = params.student
    extra = {
        "projector": workspace.projector.stat().st_size if inputs.projector is not None else 0,
        "label_net": workspace.label_net.stat().st_size if inputs.label_net is not None else 0,
        "teacher": inputs.teacher_file.stat().st_size,
        "teachers": sum(file.stat().st_size for file in inputs.weak_teacher_files),
        "hard": 0,
        "stored": outputs.stored_file(config.seeds[0]).stat().st_size if stored else 0,
        **{mode: size for mode, (_, size) in inputs.quantised_teachers.items()},
    }
    full_data = outputs == workspace.full_data()
    train_files = sorted(workspace.split("train").iterdir() if full_data else workspace.refined.glob("images/*.png"))
    images_bytes = storage.files_bytes(train_files)  # full data: the train split's shards and index
    table = summarise(runs, extra)
    metrics = {
        "ipc": None if full_data else params.select.ipc,
        "train_images": len(inputs.distilled.labels),
        "epochs": config.epochs,
        "student_seeds": config.seeds,  # in the order of every row's accs and val_accs
        "test_images": len(inputs.test.labels),
        "archs": config.archs,
        "augmentation": {"crop": config.crop, "flip": config.flip, "cutmix": config.cutmix},
        **table,
        "images_bytes": images_bytes,
        "label_files_sha256": label_files_sha256(workspace, inputs),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(outputs.metrics, metrics)
    if outputs.storage is not None:
        images = len(inputs.distilled.labels)
        storage.write_storage(outputs.storage, extra, images, config, len(inputs.distilled.classes), images_bytes)
    figures.write_curves(outputs.curves, curve_rows(runs))
    figures.plot_accuracy_vs_storage(outputs.accuracy_plot, table, images_bytes, metrics["ipc"])
    return metrics


def label_files_sha256(workspace: Workspace, inputs: StudentInputs) -> dict[str, str]:
    """Which projector and label network these students learned from, so that a later measurement of those files
    (`helio fidelity`) joins these accuracies only to the same files, not to a refit in the same workspace."""
    files = {"projector": workspace.projector if inputs.projector else None,
             "label_net": workspace.label_net if inputs.label_net else None}  # fmt: skip
    return {name: artifacts.sha256_file(file) for name, file in files.items() if file is not None and file.exists()}


def summary(metrics: dict) -> list[str]:
    return format_table(metrics).splitlines()
