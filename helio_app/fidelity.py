"""`python -m helio_app.fidelity`: how faithful each light label source is to the full teacher on a student's own
view stream (one seed's `ViewPlan` over the refined images), beside what the students trained on it scored, so
that a table can say which fidelity measure predicts the students. Reads a finished run's workspace."""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table
from torch.nn.utils import parametrize

from helio_app.report import provenance
from helio_app.stage import fail
from helio_core import artifacts, runtime
from helio_core.data.views import ViewPlan
from helio_core.errors import HelioError
from helio_core.params import Params, load_params
from helio_core.training.fidelity import stream_fidelity
from helio_core.training.labels import SoftLabels, load_stored_labels, online_labels, replayed_labels
from helio_core.training.students import StudentInputs, load_student_inputs, make_plan
from helio_core.workspace import Workspace


class Source(str, Enum):
    projector = "projector"
    teachers = "teachers"  # the weak teachers the projector is fit to
    stored = "stored"


class Reference(str, Enum):
    teacher = "teacher"
    teachers = "teachers"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


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
        elif name == "teachers":
            sources[name] = online_labels(inputs.weak_teachers)
        else:
            file = workspace.students().stored_file(seed)
            logits, stored_plan = load_stored_labels(file)
            if stored_plan.tensors().keys() != plan.tensors().keys() or not all(
                torch.equal(stored_plan.tensors()[key], tensor) for key, tensor in plan.tensors().items()
            ):
                raise HelioError(f"{file}: stored for another view stream than these params draw (student.epochs?)")
            sources[name] = replayed_labels(logits)
    return sources, plan


def measure(params: Params, names: list[str], reference: str, seed: int, every: int, views: int) -> dict:
    """The fidelity rows of every source, joined with the students' scores of metrics/students.json where those
    students trained on this stream's length and IPC."""
    workspace = Workspace()
    weak = "teachers" in (*names, reference)
    with runtime.started(params.runtime) as here:
        inputs = load_student_inputs(workspace, here, params.student.teacher_batchnorm, weak)
        sources, plan = labellers(names, inputs, workspace, params, seed)
        judge = online_labels(inputs.teacher if reference == "teacher" else inputs.weak_teachers)
        epochs = list(range(0, plan.epochs, every))
        with parametrize.cached(), here.autocast():
            rows = stream_fidelity(
                judge, sources, inputs.distilled, plan, params.student.temperature, epochs, views, here.device
            )
    table = artifacts.read_json(workspace.students().metrics) if workspace.students().metrics.exists() else {}
    arch = params.student.archs[0]
    same_run = (table.get("epochs"), table.get("ipc")) == (plan.epochs, params.select.ipc)
    students = {name: table.get(arch, {}).get(name, {}) if same_run else {} for name in names}
    files = {"projector": [workspace.projector], "teachers": inputs.weak_teacher_files,
             "stored": [workspace.students().stored_file(seed)]}  # fmt: skip
    return {
        "seed": seed, "every": every, "views_per_epoch": views, "temperature": params.student.temperature,
        "reference": reference, "arch": arch, "student_epochs": plan.epochs,
        "sources": {
            name: {"bytes": sum(file.stat().st_size for file in files[name]), "all": rows[name][-1],
                   "epochs": rows[name][:-1], "students_val_acc": students[name].get("val_acc"),
                   "students_test_acc": students[name].get("acc")}
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


@app.command()
def main(
    params_file: Annotated[Path, typer.Option("--params", "-p", help="params file of the run")] = Path("params.yaml"),
    set_: Annotated[list[str] | None, typer.Option("--set", "-S", help="override, e.g. -S runtime.device=cpu")] = None,
    source: Annotated[list[Source] | None, typer.Option(help="label sources to measure")] = None,
    reference: Annotated[Reference, typer.Option(help="measured against the full teacher or the weak teachers")] = (
        Reference.teacher
    ),
    seed: Annotated[int, typer.Option(help="whose view stream: one of student.seeds")] = 0,
    every: Annotated[int, typer.Option(min=1, help="measure every Nth epoch of the stream")] = 10,
    views: Annotated[int, typer.Option(min=1, help="views per measured epoch (whole batches)")] = 256,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file of every row")] = Path("fidelity.json"),
) -> None:
    """Measure label sources' fidelity to a reference on a student's view stream; print it and write it."""
    names = [name.value for name in source or (Source.projector, Source.stored)]
    try:
        params = load_params(params_file, set_)
        if seed not in params.student.seeds:
            raise HelioError(f"--seed {seed} is not one of student.seeds {params.student.seeds}")
        result = measure(params, names, reference.value, seed, every, views)
    except HelioError as error:
        fail(error)
    command = shlex.join(["python", "-m", "helio_app.fidelity", *sys.argv[1:]])
    artifacts.write_json(output, {"command": command, **provenance(), **result})
    show(result)


if __name__ == "__main__":
    app()
