"""The DVC pipeline end to end on the quick preset (synthetic data) in a fresh git + DVC repository."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helio_core import artifacts


def _run(cwd: Path, *command: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_dvc_repro_runs_the_stages_and_reruns_only_what_changed(project_copy):
    root = project_copy
    _run(root, "git", "init", "-q")
    _run(root, "git", "config", "user.email", "ci@helio")
    _run(root, "git", "config", "user.name", "helio ci")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    log = _run(root, sys.executable, "-m", "dvc", "repro")
    for stage in ("prepare", "train_teachers", "select_patches", "fit_projector"):
        assert f"Running stage '{stage}'" in log

    pngs = sorted((root / "artifacts/distilled/images").glob("*.png"))
    assert len(pngs) == 4 * 2  # 4 classes x IPC 2
    assert artifacts.read_png(pngs[0]).shape == (3, 16, 16)  # factor 2: four 8-px patches per image
    labels = json.loads((root / "artifacts/distilled/labels.json").read_text())
    assert [entry["label"] for entry in labels["images"]] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert labels["classes_sha256"] == json.loads((root / "artifacts/data/classes.json").read_text())["sha256"]
    assert (root / "plots/distilled_grid.png").is_file()
    metrics = json.loads((root / "metrics/teachers.json").read_text())
    assert metrics["last_test_acc_full"] > 0.5
    projector = json.loads((root / "metrics/projector.json").read_text())
    assert projector["projector_bytes"] == (root / "artifacts/projector/projector.safetensors").stat().st_size

    again = _run(root, sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in again

    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "quick pipeline")
    experiment = _run(root, sys.executable, "-m", "dvc", "exp", "run", "-S", "select.ipc=1")
    assert "Running stage 'select_patches'" in experiment and "Running stage 'fit_projector'" in experiment
    assert "Running stage 'train_teachers'" not in experiment and "Running stage 'prepare'" not in experiment
    assert len(list((root / "artifacts/distilled/images").glob("*.png"))) == 4
