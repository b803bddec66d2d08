"""The whole `helio` command: the stage commands (helio_app/stage_commands.py) and the tools beside them, each
importing what it needs when it runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from helio_app.stage import fail
from helio_app.stage_commands import PARAMS, Overrides, ParamsFile, app


@app.command()
def label(
    projector_file: Annotated[Path, typer.Argument(help="a projector.safetensors or label_net.safetensors")],
    images: Annotated[list[Path], typer.Argument(help="image files (PNG, JPEG, ...)")],
    images_dir: Annotated[
        Path | None, typer.Option(help="the distilled set the projector was made with (prototype heads)")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write .json or .safetensors")] = None,
    temperature: Annotated[float, typer.Option(help="softmax temperature for the printed probabilities")] = 1.0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda")] = "auto",
) -> None:
    """Soft labels (logits and probabilities) for images from a shipped projector or label network."""
    from helio_app.tools import label_images

    label_images(projector_file, images, images_dir, output, temperature, device)


@app.command()
def students(
    paths: Annotated[
        list[Path], typer.Argument(help="students' tables: metrics/students.json, metrics/cross_arch/*.json, ...")
    ],
    scores: Annotated[Path | None, typer.Option(help="DD-Ranking's scores to print below (helio dd-ranking)")] = None,
) -> None:
    """Print students' tables as one: a row per (arch, label mode), e.g. the cross-architecture stages' files."""
    from helio_app.tools import students_table

    typer.echo(students_table(paths, scores))


class LabelSource(str, Enum):
    projector = "projector"
    label_net = "label_net"  # the distilled label network (stage fit_label_net)
    teachers = "teachers"  # the weak teachers the projector is fit to
    teacher_int8 = "teacher_int8"  # the full teacher with int8 weights (a yardstick)
    teacher_int4 = "teacher_int4"
    stored = "stored"


class Reference(str, Enum):
    teacher = "teacher"
    teachers = "teachers"


@app.command()
def fidelity(
    params: ParamsFile = PARAMS,
    set_: Overrides = None,
    source: Annotated[list[LabelSource] | None, typer.Option(help="label sources (default: projector, stored)")] = None,
    reference: Annotated[Reference, typer.Option(help="measured against the full teacher or the weak teachers")] = (
        Reference.teacher
    ),
    seed: Annotated[int, typer.Option(help="whose view stream: one of student.seeds")] = 0,
    every: Annotated[int, typer.Option(min=1, help="measure every Nth epoch of the stream")] = 10,
    views: Annotated[int, typer.Option(min=1, help="views per measured epoch (whole batches)")] = 256,
    students: Annotated[
        list[Path] | None,
        typer.Option(help="students' tables to join, first match wins (default: metrics/students.json)"),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file of every row")] = Path("fidelity.json"),
) -> None:
    """Label sources' fidelity to a reference on a student's own view stream (KL at the students' temperature,
    agreement, dark-knowledge rank correlation, entropy), beside the students trained on them."""
    from helio_app.fidelity import fidelity_command

    names = [name.value for name in source or (LabelSource.projector, LabelSource.stored)]
    fidelity_command(params, set_, names, reference.value, seed, every, views, students, output)


@app.command()
def info(
    path: Annotated[
        Path,
        typer.Argument(help="a .safetensors or .json artifact, a prepared split's folder, or one holding labels.json"),
    ],
) -> None:
    """Show what an artifact is and what it was made from."""
    from helio_app.tools import show_info

    show_info(path)


@app.command()
def queue(
    table: Annotated[str, typer.Argument(help="a table of the experiments file: ladder, ranks, windows, sources")],
    experiments: Annotated[Path, typer.Option(help="the experiments file")] = Path("experiments/paper.yaml"),
    params: ParamsFile = PARAMS,
    set_: Overrides = None,
    dry_run: Annotated[bool, typer.Option(help="print the dvc commands, queue nothing")] = False,
) -> None:
    """Queue a table of the paper as DVC experiments (every row checked first); run them with `dvc queue start`."""
    import shlex
    import subprocess

    from helio_app.experiments import load_table, queue_commands
    from helio_core.errors import HelioError

    try:
        commands = queue_commands(load_table(experiments, table, params, set_))
    except HelioError as error:
        fail(error)
    for command in commands:
        typer.echo(shlex.join(command))  # unwrapped: the lines are meant to be copied
        if not dry_run:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    if not dry_run:
        typer.echo(f"queued {len(commands)} experiments; start them with: dvc queue start -j 1")


@app.command()
def report(
    documents: Annotated[list[Path] | None, typer.Argument(help="Markdown files (default: README.md, docs/)")] = None,
    check: Annotated[bool, typer.Option(help="change nothing; exit 1 if a table is out of date")] = False,
) -> None:
    """Regenerate the result tables in the docs from the metrics files and results/ records they name."""
    from helio_app.report import publish

    raise typer.Exit(publish(documents, check))


@app.command()
def record(
    name: Annotated[str, typer.Argument(help="the record's name: results/<name>.json")],
    command: Annotated[str, typer.Option(help="the command that made the metrics")],
    note: Annotated[str, typer.Option(help="what the run is for")] = "",
    students: Annotated[
        Path | None, typer.Option(help="record only this students' table, e.g. metrics/full_data.json")
    ] = None,
    merge: Annotated[bool, typer.Option(help="add --students' rows to the existing record <name>")] = False,
) -> None:
    """Keep this workspace's metrics files as results/<name>.json, with the command, date and commit (e.g. after
    `dvc exp apply`), so that the docs' tables can be generated from them. A record is never overwritten; with
    --merge, rows it lacks (another student, say) are added from a table of the same images, splits, recipe and
    seeds, the merge keeping its own command, date and commit."""
    from helio_app.records import record_run

    record_run(name, command, note, students, merge)
