"""How `helio <stage>` runs a stage, whoever starts it (DVC, torchrun, a person): read params, join the runtime
(and torchrun's process group), show progress, print the stage's summary on rank 0, and turn bad input into one
line on stderr with exit status 2."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from helio_app.progress import RichProgress
from helio_core.errors import HelioError
from helio_core.params import load_params
from helio_core.workspace import Workspace

# the `helio` command of each stage and the module that implements it (imported when it runs, so that a stage
# loads only what it needs: dvc.yaml's deps of each stage are its module's imports)
STAGES = {
    "prepare": "stages.prepare",
    "train-teachers": "stages.train_teachers",
    "select-patches": "stages.select_patches",
    "fit-projector": "stages.fit_projector",
    "refine-images": "stages.refine_images",
    "fit-label-net": "stages.fit_label_net",
    "evaluate-students": "stages.evaluate_students",
    "evaluate-continual": "stages.evaluate_continual",
    "dd-ranking": "stages.dd_ranking",
}


def fail(error: HelioError) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"helio: error: {error}", file=sys.stderr)
    raise SystemExit(2)


def run_stage(
    command: str, params_file: Path, overrides: list[str] | None, workspace: Workspace | None = None, **options: Any
) -> dict:
    """Run the stage of `command` in this checkout (on `workspace`'s arm of it); rank 0 prints its summary. Returns
    its metrics ({} on other ranks)."""
    from helio_core import runtime  # torch: here, so that `helio --help` and the tools start without it

    try:
        params = load_params(params_file, overrides)
        stage = importlib.import_module(STAGES[command])
        with runtime.started(params.runtime) as here, RichProgress(show=here.is_main) as progress:
            metrics = stage.run(params, workspace or Workspace(), here, progress, **options)
    except HelioError as error:
        fail(error)
    if here.is_main:
        print("\n".join(stage.summary(metrics)), flush=True)
    return metrics
