"""The `helio` command: the pipeline's stages for people outside DVC, and `info` on any artifact."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table
from torch.nn.utils import parametrize

from helio_core import artifacts, runtime
from helio_core.data import run_prepare
from helio_core.errors import HelioError
from helio_core.experiments import load_table, queue_commands
from helio_core.params import Params, load_params
from helio_core.projector import Projector
from helio_core.projector_fit import run_fit_projector
from helio_core.refine import run_refine_images
from helio_core.selection import run_select_patches
from helio_core.student import format_table, run_evaluate_students, table_lines, table_rows
from helio_core.teachers import run_train_teachers

app = typer.Typer(help="Dataset distillation with light labels.", no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()

ParamsFile = Annotated[Path, typer.Option("--params", "-p", help="params file (as DVC's params.yaml)")]
Overrides = Annotated[list[str] | None, typer.Option("--set", "-S", help="override, e.g. -S select.ipc=1")]


def _params(path: Path, overrides: list[str] | None) -> Params:
    try:
        return load_params(path, overrides)
    except HelioError as error:
        _fail(error)


def _fail(error: HelioError) -> None:
    console.print(f"[red]helio: error:[/red] {error}", highlight=False)
    raise typer.Exit(2)


def _run(stage, params: Params, on_device: bool = True) -> dict:
    """Run a stage function in the runtime params.runtime names; under torchrun only rank 0 goes on to print."""
    try:
        if not on_device:
            return stage(params)
        with runtime.started(params.runtime) as here:
            result = stage(params, runtime=here)
    except HelioError as error:
        _fail(error)
    if not here.is_main:
        raise typer.Exit(0)
    return result


@app.command()
def prepare(params: ParamsFile = Path("params.yaml"), set_: Overrides = None) -> None:
    """Load the data set named by data.name and write artifacts/data."""
    report = _run(run_prepare, _params(params, set_), on_device=False)
    console.print(
        f"prepared {report['train']} train / {report['val']} val / {report['test']} test images, "
        f"{report['classes']} classes"
    )


@app.command("train-teachers")
def train_teachers(params: ParamsFile = Path("params.yaml"), set_: Overrides = None) -> None:
    """Train one trajectory from scratch and keep the checkpoints of teachers.keep."""
    metrics = _run(run_train_teachers, _params(params, set_))
    console.print(f"last kept epoch {metrics['last_epoch']}: test accuracy {metrics['last_test_acc_full']:.4f}")


@app.command("select-patches")
def select_patches(params: ParamsFile = Path("params.yaml"), set_: Overrides = None) -> None:
    """Select RDED patches with the observer teacher and write the distilled PNGs."""
    report = _run(run_select_patches, _params(params, set_))
    console.print(f"{report['images']} distilled images, observer epoch {report['observer_epoch']}")


@app.command("fit-projector")
def fit_projector(params: ParamsFile = Path("params.yaml"), set_: Overrides = None) -> None:
    """Fit the projector's LoRA factors to the weak teachers and write artifacts/projector."""
    metrics = _run(run_fit_projector, _params(params, set_))
    after = metrics["after_lora"]
    console.print(
        f"projector {metrics['projector_bytes']:,} bytes: test accuracy {after['acc']:.4f}, "
        f"agreement with the weak teachers {after['agreement']:.4f}"
    )


@app.command("refine-images")
def refine_images(params: ParamsFile = Path("params.yaml"), set_: Overrides = None) -> None:
    """Refine the distilled images through the adapted encoder (Eq. 7) and write artifacts/refined."""
    metrics = _run(run_refine_images, _params(params, set_))
    before, after = metrics["before"]["agreement"], metrics["after"]["agreement"]
    console.print(f"projector/teacher agreement on the distilled images {before:.4f} -> {after:.4f}")


@app.command("evaluate-students")
def evaluate_students(params: ParamsFile = Path("params.yaml"), set_: Overrides = None) -> None:
    """Train students per label mode and seed on the refined images; write metrics/students.json."""
    console.print(format_table(_run(run_evaluate_students, _params(params, set_))), highlight=False)


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
    try:
        target = runtime.choose_device(device, local_rank=0)
        projector = Projector.load(projector_file, images_dir=images_dir).to(target)
        classes = artifacts.read_metadata(projector_file)["classes"]
        batch = [artifacts.read_png(path).float() / 255 for path in images]
    except HelioError as error:
        _fail(error)
    with torch.inference_mode(), parametrize.cached():
        logits = torch.cat([projector(image[None].to(target)).cpu() for image in batch])
    probabilities = torch.softmax(logits / temperature, dim=-1)
    rows = [
        {"image": str(path), "logits": [round(v, 6) for v in row.tolist()], "top": classes[int(row.argmax())]}
        for path, row in zip(images, logits, strict=True)
    ]
    if output is not None and output.suffix == ".safetensors":
        artifacts.save_tensors(output, {"logits": logits}, {"kind": "soft-labels", "classes": classes,
                                                             "images": [str(p) for p in images]})  # fmt: skip
    elif output is not None:
        artifacts.write_json(output, {"classes": classes, "labels": rows})
    table = Table("image", "top class", "p(top)")
    for row, probs in zip(rows, probabilities, strict=True):
        table.add_row(row["image"], row["top"], f"{probs.max().item():.3f}")
    console.print(table)


@app.command()
def students(
    paths: Annotated[
        list[Path], typer.Argument(help="students' tables: metrics/students.json, metrics/cross_arch/*.json, ...")
    ],
) -> None:
    """Print students' tables as one: a row per (arch, label mode), e.g. the cross-architecture stages' files."""
    rows = []
    for path in paths:
        try:
            rows += table_rows(artifacts.read_json(path), str(path))
        except HelioError as error:
            _fail(error)
    typer.echo("\n".join(table_lines(rows)))


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="a .safetensors or .json artifact, or a folder holding labels.json")],
) -> None:
    """Show what an artifact is and what it was made from."""
    try:
        if path.is_dir():
            path = path / "labels.json"
        if path.suffix == ".safetensors":
            record = artifacts.read_metadata(path)
        else:
            record = artifacts.read_json(path)
    except HelioError as error:
        _fail(error)
    if not isinstance(record, dict):
        _fail(HelioError(f"{path}: expected a JSON object"))
    table = Table(title=f"{path} ({path.stat().st_size:,} bytes)", show_header=False)
    provenance = record.get("provenance", {})
    for key, value in record.items():
        if key not in ("provenance", "images"):
            table.add_row(key, _short(value))
    if "images" in record:
        table.add_row("images", f"{len(record['images'])} entries")
    for key in ("stage", "helio_version", "torch_version", "format_version"):
        if key in provenance:
            table.add_row(f"made by: {key}", str(provenance[key]))
    for name, digest in provenance.get("inputs", {}).items():
        table.add_row(f"input: {name}", f"sha256 {digest}")
    for key, value in provenance.get("params", {}).items():
        table.add_row(f"param: {key}", _short(value))
    console.print(table)


@app.command()
def queue(
    table: Annotated[str, typer.Argument(help="a table of the experiments file: ladder, ranks, windows, ...")],
    experiments: Annotated[Path, typer.Option(help="the experiments file")] = Path("experiments/paper.yaml"),
    params: ParamsFile = Path("params.yaml"),
    dry_run: Annotated[bool, typer.Option(help="print the dvc commands, queue nothing")] = False,
) -> None:
    """Queue a table of the paper as DVC experiments (every row checked first); run them with `dvc queue start`."""
    try:
        commands = queue_commands(load_table(experiments, table, params))
    except HelioError as error:
        _fail(error)
    for command in commands:
        typer.echo(shlex.join(command))  # unwrapped: the lines are meant to be copied
        if not dry_run:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    if not dry_run:
        console.print(f"queued {len(commands)} experiments; start them with: dvc queue start -j 1")


def _short(value: object, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    app()
