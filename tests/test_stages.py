"""The stage commands (what dvc.yaml runs) report bad input as one line on stderr with exit status 2, and write
nothing."""

import os
import subprocess
import sys

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
