"""The stage commands (what dvc.yaml runs) report bad input as one line on stderr with exit status 2, and write
nothing."""

import os
import subprocess
import sys
from pathlib import Path

from helio_core.workspace import Workspace
from tests.conftest import REPO


def test_stage_with_bad_param_prints_one_line_and_writes_nothing(tmp_path):
    params = (REPO / "presets" / "quick.yaml").read_text().replace("ipc: 2", "ipc: 1.5")
    (tmp_path / "params.yaml").write_text(params)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "helio_app", "prepare"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "helio: error: select.ipc must be an integer, got 1.5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_with_missing_input_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "presets" / "quick.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "helio_app", "select-patches"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("helio: error: artifacts/data/classes.json: file not found")


def test_the_random_arm_has_its_own_images_and_students_and_shares_the_labellers():
    default, arm = Workspace(), Workspace(arm="random")
    assert (arm.distilled, arm.refined) == (Path("artifacts/random/distilled"), Path("artifacts/random/refined"))
    assert (arm.students().metrics, arm.refine_metrics) == (
        Path("metrics/random/students.json"), Path("metrics/random/refine.json")
    )  # fmt: skip
    assert arm.students().storage is None and default.students().storage == Path("metrics/storage.json")
    assert [outputs.stored_labels for outputs in (arm.students(), arm.plain_students(), default.plain_students())] == [
        Path("artifacts/random/stored_labels"), Path("artifacts/random/plain_stored_labels"),
        Path("artifacts/plain_stored_labels"),
    ]  # fmt: skip
    assert (default.plain_students().metrics, arm.plain_students().metrics) == (
        Path("metrics/plain_students.json"), Path("metrics/random/plain_students.json")
    )  # fmt: skip
    for shared in ("data", "teachers", "projector", "label_net", "dd_ranking_metrics"):
        assert getattr(arm, shared) == getattr(default, shared)
    assert arm.full_data() == default.full_data()
    assert arm.projector_images == default.projector_images == default.distilled  # the projector's prototypes


def test_the_random_arms_students_are_the_default_table_only(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "presets" / "quick.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "helio_app", "evaluate-students", "--random", "--arch", "resnet18"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "helio: error: evaluate-students: --random trains the default recipe; give no --arch or --full-data"
    )
    command = [sys.executable, "-m", "helio_app", "evaluate-students", "--plain", "--full-data"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == (
        "helio: error: evaluate-students: --plain trains the default recipe; give no --arch or --full-data"
    )
