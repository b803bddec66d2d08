"""Stage `dd_ranking` (experiments/fair/dvc.yaml): DD-Ranking's scores of the distilled set, from the students'
tables on the distilled set, on random train images (the `random` arm) and on the whole train split, and the two
arms' students without augmentation (ARS) -> metrics/dd_ranking.json. Definitions:
helio_core/reporting/dd_ranking.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from helio_core import artifacts
from helio_core.params import Params
from helio_core.progress import SILENT, Progress
from helio_core.reporting.dd_ranking import score_lines, scores
from helio_core.runtime import CPU, Runtime
from helio_core.workspace import RANDOM_ARM, Workspace


def run(
    params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT,
    distilled: Path | None = None, random: Path | None = None, full: Path | None = None,
    distilled_plain: Path | None = None, random_plain: Path | None = None, output: Path | None = None,
) -> dict:  # fmt: skip
    """The scores of the tables given (e.g. records of runs), each defaulting to this workspace's own; the
    no-augmentation tables (ARS) default to this workspace's only when no distilled table is given."""
    runtime.require_single("dd_ranking")
    random_arm = replace(workspace, arm=RANDOM_ARM)
    if distilled is None:
        distilled_plain = distilled_plain or workspace.plain_students().metrics
        random_plain = random_plain or random_arm.plain_students().metrics
    result = scores(
        distilled or workspace.students().metrics,
        random or random_arm.students().metrics,
        full or workspace.full_data().metrics,
        params.fair.weight, distilled_plain, random_plain,
    )  # fmt: skip
    artifacts.write_json(output or workspace.dd_ranking_metrics, result)
    return result


def summary(metrics: dict) -> list[str]:
    return score_lines(metrics)
