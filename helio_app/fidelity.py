"""`helio fidelity`: how faithful each light label source is to the full teacher on a student's own
view stream (one seed's `ViewPlan` over the refined images), beside what the students trained on it scored, so
that a table can say which fidelity measure predicts the students. Reads a finished run's workspace."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.nn.utils import parametrize

from helio_app.records import provenance
from helio_app.stage import fail
from helio_core import artifacts, runtime
from helio_core.data.views import ViewPlan
from helio_core.errors import HelioError
from helio_core.params import Params, load_params
from helio_core.training.fidelity import stream_fidelity
from helio_core.training.labels import SoftLabels, load_stored_labels, online_labels, replayed_labels
from helio_core.training.students import StudentInputs, load_student_inputs, make_plan, with_quantised_teachers
from helio_core.workspace import Workspace


def labellers(
    names: list[str], inputs: StudentInputs, workspace: Workspace, params: Params, seed: int
) -> tuple[dict[str, SoftLabels], ViewPlan]:
    """The label sources by name, and the plan they are replayed on: the seed's plan as evaluate_students draws it,
    which stored labels must have been written for."""
    size = inputs.distilled.images.shape[-1]
    plan = make_plan(len(inputs.distilled.labels), size, params.student, params.student_crop_scale, seed)
    sources: dict[str, SoftLabels] = {}
    for name in names:
        if name == "projector":
            sources[name] = online_labels(inputs.projector)
        elif name == "label_net":
            sources[name] = online_labels(inputs.label_net)
        elif name == "teachers":
            sources[name] = online_labels(inputs.weak_teachers)
        elif name in inputs.quantised_teachers:
            sources[name] = online_labels(inputs.quantised_teachers[name][0])
        else:
            file = workspace.students().stored_file(seed)
            logits, stored_plan = load_stored_labels(file)
            stored_tensors = stored_plan.tensors()
            if not all(torch.equal(stored_tensors[key], tensor) for key, tensor in plan.tensors().items()):
                raise HelioError(f"{file}: stored for another view stream than these params draw (student.epochs?)")
            sources[name] = replayed_labels(logits)
    return sources, plan


REFITTED = ("projector", "label_net")  # label files a study refits in one workspace


def joined_students(
    tables: list[dict], names: list[str], arch: str, stream: tuple[int, int | None], seed: int, hashes: dict[str, str]
) -> dict[str, dict]:
    """Each source's row of the first students' table whose students trained on this stream's (epochs, IPC), among
    them this seed where the table records its seeds, and, for a refitted source, on the file of these `hashes`
    (recorded in the table's label_files_sha256); else {}."""

    def joins(table: dict, name: str) -> bool:
        same_run = (table.get("epochs"), table.get("ipc")) == stream and seed in table.get("student_seeds", [seed])
        same_file = name not in REFITTED or table.get("label_files_sha256", {}).get(name) == hashes[name]
        return same_run and same_file and name in table.get(arch, {})

    return {name: next((table[arch][name] for table in tables if joins(table, name)), {}) for name in names}


def measure(
    params: Params, names: list[str], reference: str, seed: int, every: int, views: int, students: list[Path] | None
) -> dict:
    """The fidelity rows of every source, joined with the students' scores of the first of `students` (default:
    metrics/students.json) whose students trained on this stream's length, IPC and seed and, for the projector and
    the label network, on these very files (a refit in the same workspace has other students)."""
    workspace = Workspace()
    weak = "teachers" in (*names, reference)
    with runtime.started(params.runtime) as here:
        inputs = load_student_inputs(workspace, here, params.student.teacher_batchnorm, weak, "label_net" in names)
        inputs = with_quantised_teachers(inputs, names)
        sources, plan = labellers(names, inputs, workspace, params, seed)
        judge = online_labels(inputs.teacher if reference == "teacher" else inputs.weak_teachers)
        epochs = list(range(0, plan.epochs, every))
        with parametrize.cached(), here.autocast():
            rows = stream_fidelity(
                judge, sources, inputs.distilled, plan, params.student.temperature, epochs, views, here.device
            )
    outputs = workspace.students()
    paths = students or ([outputs.metrics] if outputs.metrics.exists() else [])
    tables = [artifacts.read_json(path) for path in paths]
    arch = params.student.archs[0]
    files = {"projector": [workspace.projector], "label_net": [workspace.label_net],
             "teachers": inputs.weak_teacher_files,
             "stored": [outputs.stored_file(seed)]}  # fmt: skip
    hashes = {name: artifacts.sha256_file(files[name][0]) for name in names if name in REFITTED}
    quantised = inputs.quantised_teachers  # no file: sized as one would be written
    sizes = {name: quantised[name][1] if name in quantised else sum(file.stat().st_size for file in files[name])
             for name in names}  # fmt: skip
    joined = joined_students(tables, names, arch, (plan.epochs, params.select.ipc), seed, hashes)
    return {
        "seed": seed, "every": every, "views_per_epoch": views, "temperature": params.student.temperature,
        "reference": reference, "arch": arch, "student_epochs": plan.epochs, "ipc": params.select.ipc,
        "sources": {
            name: {"bytes": sizes[name], "all": rows[name][-1], "epochs": rows[name][:-1],
                   "students_val_acc": joined[name].get("val_acc"), "students_test_acc": joined[name].get("acc")}
            for name in names
        },
    }  # fmt: skip


def show(result: dict) -> None:
    table = Table(
        "source", "bytes", "KL·T²", "agreement", "dark rank corr", "entropy (ref / source)", "students val / test %"
    )
    for name, source in result["sources"].items():
        row = source["all"]
        val, test = source["students_val_acc"], source["students_test_acc"]
        accuracy = "–" if val is None else f"{100 * val:.2f} / {100 * test:.2f}"
        entropy = f"{row['entropy_reference']:.3f} / {row['entropy_labeller']:.3f}"
        scores = (f"{row[key]:.4f}" for key in ("kl", "agreement", "dark_rank_corr"))
        table.add_row(name, f"{source['bytes']:,}", *scores, entropy, accuracy)
    Console().print(table)


def fidelity_command(
    params_file: Path, overrides: list[str] | None, names: list[str], reference: str, seed: int, every: int,
    views: int, students: list[Path] | None, output: Path,
) -> None:  # fmt: skip
    """`helio fidelity`: measure, print, and write the rows with the command, date and commit that made them."""
    try:
        params = load_params(params_file, overrides)
        if seed not in params.student.seeds:
            raise HelioError(f"--seed {seed} is not one of student.seeds {params.student.seeds}")
        result = measure(params, names, reference, seed, every, views, students)
    except HelioError as error:
        fail(error)
    command = shlex.join(["helio", *sys.argv[1:]])
    artifacts.write_json(output, {"command": command, **provenance(), **result})
    show(result)
