"""The `helio` command. Each pipeline stage is one subcommand, the very command dvc.yaml runs, torchrun launches
(`torchrun --nproc-per-node N --no-python helio fit-projector`) and people type; the tools beside them import
what they need when they run, so that a stage's process loads only the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helio_app.stage import fail, run_stage

app = typer.Typer(help="Dataset distillation with light labels.", no_args_is_help=True, pretty_exceptions_enable=False)

ParamsFile = Annotated[Path, typer.Option("--params", "-p", help="params file (as DVC's params.yaml)")]
Overrides = Annotated[list[str] | None, typer.Option("--set", "-S", help="override, e.g. -S select.ipc=1")]
PARAMS = Path("params.yaml")


@app.command()
def prepare(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Load the data set named by data.name and write artifacts/data."""
    run_stage("prepare", params, set_)


@app.command("train-teachers")
def train_teachers(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Train one trajectory from scratch and keep the checkpoints of teachers.keep."""
    run_stage("train-teachers", params, set_)


@app.command("select-patches")
def select_patches(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Select RDED patches with the observer teacher and write the distilled PNGs."""
    run_stage("select-patches", params, set_)


@app.command("fit-projector")
def fit_projector(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Fit the projector's LoRA factors to the weak teachers and write artifacts/projector."""
    run_stage("fit-projector", params, set_)


@app.command("refine-images")
def refine_images(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Refine the distilled images through the adapted encoder (Eq. 7) and write artifacts/refined."""
    run_stage("refine-images", params, set_)


@app.command("evaluate-students")
def evaluate_students(
    params: ParamsFile = PARAMS,
    set_: Overrides = None,
    arch: Annotated[str | None, typer.Option(help="one of cross_arch.archs: that architecture's Table 2 row")] = None,
) -> None:
    """Train students per label mode and seed on the refined images; write metrics/students.json (or, with
    --arch, metrics/cross_arch/<arch>.json)."""
    run_stage("evaluate-students", params, set_, arch=arch)


@app.command("evaluate-continual")
def evaluate_continual(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Class-incremental students (GDumb, the paper's Fig. 2); write metrics/continual.json."""
    run_stage("evaluate-continual", params, set_)


@app.command()
def label(
    projector_file: Annotated[Path, typer.Argument(help="a projector.safetensors")],
    images: Annotated[list[Path], typer.Argument(help="image files (PNG, JPEG, ...)")],
    images_dir: Annotated[
        Path | None, typer.Option(help="the distilled set the projector was made with (prototype heads)")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write .json or .safetensors")] = None,
    temperature: Annotated[float, typer.Option(help="softmax temperature for the printed probabilities")] = 1.0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda")] = "auto",
) -> None:
    """Soft labels (logits and probabilities) for images from a shipped projector."""
    from helio_app.tools import label_images

    label_images(projector_file, images, images_dir, output, temperature, device)


@app.command()
def students(
    paths: Annotated[
        list[Path], typer.Argument(help="students' tables: metrics/students.json, metrics/cross_arch/*.json, ...")
    ],
) -> None:
    """Print students' tables as one: a row per (arch, label mode), e.g. the cross-architecture stages' files."""
    from helio_app.tools import students_table

    typer.echo(students_table(paths))


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="a .safetensors or .json artifact, or a folder holding labels.json")],
) -> None:
    """Show what an artifact is and what it was made from."""
    from helio_app.tools import show_info

    show_info(path)


@app.command()
def queue(
    table: Annotated[str, typer.Argument(help="a table of the experiments file: ladder, ranks, windows, ...")],
    experiments: Annotated[Path, typer.Option(help="the experiments file")] = Path("experiments/paper.yaml"),
    params: ParamsFile = PARAMS,
    dry_run: Annotated[bool, typer.Option(help="print the dvc commands, queue nothing")] = False,
) -> None:
    """Queue a table of the paper as DVC experiments (every row checked first); run them with `dvc queue start`."""
    import shlex
    import subprocess

    from helio_app.experiments import load_table, queue_commands
    from helio_core.errors import HelioError

    try:
        commands = queue_commands(load_table(experiments, table, params))
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
    command: Annotated[str, typer.Option(help="the command that made this workspace's metrics")],
    note: Annotated[str, typer.Option(help="what the run is for")] = "",
) -> None:
    """Keep this workspace's metrics files as results/<name>.json, with the command, date and commit (e.g. after
    `dvc exp apply`), so that the docs' tables can be generated from them."""
    from helio_app.report import record_run

    record_run(name, command, note)


def main() -> None:
    app(prog_name="helio")


if __name__ == "__main__":
    main()
