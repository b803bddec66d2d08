"""The pipeline's stages as `helio` subcommands: the very commands dvc.yaml runs, torchrun launches
(`torchrun --nproc-per-node N --no-python helio fit-projector`) and people type. A stage's process loads this
module and the stage's own (dvc.yaml's deps); the tools are declared elsewhere (helio_app/cli.py), so adding one
reruns no stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helio_app.stage import run_stage
from helio_core.workspace import RANDOM_ARM, Workspace

app = typer.Typer(help="Dataset distillation with light labels.", no_args_is_help=True, pretty_exceptions_enable=False)

ParamsFile = Annotated[Path, typer.Option("--params", "-p", help="params file (as DVC's params.yaml)")]
Overrides = Annotated[list[str] | None, typer.Option("--set", "-S", help="override, e.g. -S select.ipc=1")]
PARAMS = Path("params.yaml")
Random = Annotated[
    bool, typer.Option("--random", help="the random baseline's arm: artifacts/random, metrics/random, plots/random")
]


def arm(random: bool) -> Workspace:
    """The checkout's distilled set, or with --random the random train images beside it (experiments/fair)."""
    return Workspace(arm=RANDOM_ARM) if random else Workspace()


@app.command()
def prepare(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Load the data set named by data.name and write artifacts/data."""
    run_stage("prepare", params, set_)


@app.command("train-teachers")
def train_teachers(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Train one trajectory from scratch and keep the checkpoints of teachers.keep."""
    run_stage("train-teachers", params, set_)


@app.command("select-patches")
def select_patches(params: ParamsFile = PARAMS, set_: Overrides = None, random: Random = False) -> None:
    """Select RDED patches with the observer teacher and write the distilled PNGs (with --random, random train
    images: select.method=random)."""
    run_stage("select-patches", params, [*(set_ or []), "select.method=random"] if random else set_, arm(random))


@app.command("fit-projector")
def fit_projector(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Fit the projector's LoRA factors to the weak teachers and write artifacts/projector."""
    run_stage("fit-projector", params, set_)


@app.command("fit-label-net")
def fit_label_net(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Distil the label network from the teacher on student-style views and write artifacts/label_net."""
    run_stage("fit-label-net", params, set_)


@app.command("refine-images")
def refine_images(params: ParamsFile = PARAMS, set_: Overrides = None, random: Random = False) -> None:
    """Refine the distilled images through the adapted encoder (Eq. 7) and write artifacts/refined."""
    run_stage("refine-images", params, set_, arm(random))


@app.command("evaluate-students")
def evaluate_students(
    params: ParamsFile = PARAMS,
    set_: Overrides = None,
    arch: Annotated[str | None, typer.Option(help="one of cross_arch.archs: that architecture's Table 2 row")] = None,
    full_data: Annotated[bool, typer.Option(help="the full_data section's students on the whole train split")] = False,
    random: Random = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="no crop, flip or CutMix: DD-Ranking's no-augmentation students (ARS)")
    ] = False,
) -> None:
    """Train students per label mode and seed on the refined images; write metrics/students.json (or, with
    --arch, metrics/cross_arch/<arch>.json; with --full-data, metrics/full_data.json; with --random, the random
    images' students under fair.random_label_modes, metrics/random/students.json; with --plain, the same modes'
    students without augmentation, metrics/[random/]plain_students.json)."""
    run_stage("evaluate-students", params, set_, arm(random), arch=arch, full_data=full_data, plain=plain)


@app.command("evaluate-continual")
def evaluate_continual(params: ParamsFile = PARAMS, set_: Overrides = None) -> None:
    """Class-incremental students (GDumb, the paper's Fig. 2); write metrics/continual.json."""
    run_stage("evaluate-continual", params, set_)


@app.command("dd-ranking")
def dd_ranking(
    params: ParamsFile = PARAMS,
    set_: Overrides = None,
    distilled: Annotated[
        Path | None, typer.Argument(help="students on the distilled set (default: metrics/students.json) or a record")
    ] = None,
    random: Annotated[
        Path | None, typer.Option(help="students on random images, same IPC, epochs and seeds (metrics/random/...)")
    ] = None,
    full: Annotated[
        Path | None, typer.Option(help="students on the whole train split (metrics/full_data.json)")
    ] = None,
    distilled_plain: Annotated[Path | None, typer.Option(help="the distilled set's students, no augmentation")] = None,
    random_plain: Annotated[Path | None, typer.Option(help="the random images' students, no augmentation")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="(default: metrics/dd_ranking.json)")] = None,
) -> None:
    """DD-Ranking's IOR, HLR, label-robust score (LRS) and ARS per label mode (w: fair.weight), of this checkout's
    tables (experiments/fair/dvc.yaml, the no-augmentation ones from `evaluate-students --plain`) or of the files
    given (ARS only where both no-augmentation tables are given)."""
    tables = {"distilled": distilled, "random": random, "full": full, "distilled_plain": distilled_plain,
              "random_plain": random_plain, "output": output}  # fmt: skip
    run_stage("dd-ranking", params, set_, **tables)
