"""Reruns of the quick pipeline: seeded CPU runs are byte-identical, and a stage killed mid-write leaves the
previous outputs in place, as DVC recorded them, and `dvc repro` reruns it cleanly."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from helio_core import artifacts
from helio_core.data.distilled import load_distilled
from helio_core.models.projector import load_projector
from helio_core.params import load_params
from helio_core.workspace import Workspace
from stages import fit_projector, prepare, select_patches, train_teachers
from tests.conftest import REPO

# the quick preset, shortened where it does not change what is tested: one teacher epoch, one projector epoch
SHORTER = {"teachers": {"epochs": 1, "keep": [1], "batch_size": 64}, "projector": {"epochs": 1, "train_images": 64}}
OVERRIDES = [f"{section}.{key}={value}" for section, values in SHORTER.items() for key, value in values.items()]


def _run_pipeline(root):
    """prepare, train_teachers, select_patches and fit_projector into `root`, laid out as a DVC checkout."""
    params = load_params(REPO / "presets" / "quick.yaml", OVERRIDES)
    for stage in (prepare, train_teachers, select_patches, fit_projector):
        stage.run(params, Workspace(root))
    return root


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    return _run_pipeline(tmp_path_factory.mktemp("first"))


def _files(root):
    """sha256 of every artifact and PNG plot (metrics hold wall-clock times, so they are left out), not counting
    the hidden staging folders of interrupted writes."""
    files = sorted(root.glob("artifacts/**/*.*")) + sorted(root.glob("plots/*.png"))
    names = {str(path.relative_to(root)): path for path in files if path.is_file()}
    return {name: artifacts.sha256_file(path) for name, path in names.items() if "/." not in name}


@pytest.mark.slow
def test_same_params_and_seed_on_cpu_give_byte_identical_artifacts(first_run, tmp_path):
    second = _run_pipeline(tmp_path / "second")
    first_files, second_files = _files(first_run), _files(second)
    assert "artifacts/projector/projector.safetensors" in first_files
    assert sum(name.endswith(".png") for name in first_files) == 4 * 2 + 1  # 4 classes x IPC 2, and the grid
    assert second_files == first_files


STALL_IN_WRITE = """
import pathlib, sys, time
import helio_core.artifacts as artifacts
from helio_app.main import main

write = artifacts.save_file

def half_then_stall(tensors, path, metadata):
    write(tensors, path, metadata)
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: len(data) // 2])
    pathlib.Path("half-written").touch()
    time.sleep(600)

artifacts.save_file = half_then_stall
sys.argv = ["helio", "fit-projector"]
main()
"""


@pytest.mark.slow
def test_stage_killed_mid_write_keeps_previous_outputs_and_dvc_repro_recovers(first_run, project_copy):
    root = project_copy
    for folder in ("artifacts", "metrics", "plots"):
        shutil.copytree(first_run / folder, root / folder)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in SHORTER.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(root), "DVC_NO_ANALYTICS": "1"}
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    _dvc(root, env, "commit", "-f", "-q", "--with-deps", "fit_projector")  # these outputs, as DVC's lock records
    before = _files(root)
    metrics_before = (root / "metrics/projector.json").read_bytes()

    stage = subprocess.Popen([sys.executable, "-c", STALL_IN_WRITE], cwd=root, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (root / "half-written").exists():
        assert stage.poll() is None, stage.stderr.read().decode()
        assert time.monotonic() < deadline, "the stage never reached its write"
        time.sleep(0.05)
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    stage.stderr.close()

    assert stage.returncode == -signal.SIGKILL
    assert _files(root) == before and (root / "metrics/projector.json").read_bytes() == metrics_before
    assert [p.name for p in (root / "artifacts/projector").iterdir()] == ["projector.safetensors"]
    leftovers = [p for p in (root / "artifacts").iterdir() if p.name.startswith(".") and p.name != ".gitignore"]
    assert [p.name.endswith(".tmp") for p in leftovers] == [True]  # the staging folder, ignored by .dvcignore
    half_written = list(leftovers[0].rglob("projector.safetensors"))
    assert len(half_written) == 1
    assert half_written[0].stat().st_size < (root / "artifacts/projector/projector.safetensors").stat().st_size

    assert "up to date" in _dvc(root, env, "status", "fit_projector")  # DVC sees the previous outputs, unchanged
    assert "Running stage 'fit_projector'" in _dvc(root, env, "repro", "--force", "--single-item", "fit_projector")
    assert _files(root) == before  # the rerun rewrote the same bytes
    assert "up to date" in _dvc(root, env, "status", "fit_projector")
    class_hash = artifacts.read_json(root / "artifacts/data/classes.json")["sha256"]
    images = load_distilled(root / "artifacts/distilled", class_hash)
    load_projector(root / "artifacts/projector/projector.safetensors", *images, class_hash)


def _dvc(root, env, *arguments: str) -> str:
    command = [sys.executable, "-m", "dvc", *arguments]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr
