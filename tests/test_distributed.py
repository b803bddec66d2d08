"""The training stages under `torchrun` with two gloo processes on the CPU, against one process on the same
quick workspace: the artifacts load, have the same form, and only rank 0 writes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helio_core import artifacts
from helio_core.data.distilled import load_distilled
from helio_core.models.projector import load_projector
from tests.conftest import REPO, inputs_of


def _stage(root: Path, stage: str, processes: int = 1) -> str:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "helio_app", stage]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _hidden_files(root: Path) -> list[str]:
    """Leftover staging folders (".name.*.tmp"): a rank that wrote beside rank 0 would leave one."""
    return [str(path) for path in root.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, quick_fitted):
    """The quick preset's data, teachers, distilled images and projector (the session's), one thread per process (so
    ranks do not share cores); students in the label modes that take different paths to their labels: none, replayed
    from rank 0's file, and a network run online (the projector's and the teacher's are run alike)."""
    root = tmp_path_factory.mktemp("ddp")
    inputs_of(quick_fitted[2], root, "projector")
    params = yaml.safe_load((REPO / "presets" / "quick.yaml").read_text())
    params["runtime"].update(device="cpu", threads=1)
    params["student"]["label_modes"] = ["label_net", "hard", "stored"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    tensors, _ = artifacts.load_tensors(path)
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}


@pytest.mark.slow
def test_fit_projector_with_two_gloo_processes_matches_one_process_in_form(workspace, quick_fitted):
    """Against the session's one-process fit of the same inputs (copied into the workspace)."""
    projector_file = workspace / "artifacts/projector/projector.safetensors"
    single_meta = artifacts.read_metadata(projector_file)
    single_shapes = _tensor_shapes(projector_file)
    single_metrics = json.loads((quick_fitted[2].root / "metrics/projector.json").read_text())

    log = _stage(workspace, "fit-projector", processes=2)
    assert log.count("projector:") == 1  # rank 0 alone reports
    meta = artifacts.read_metadata(projector_file)
    assert meta["provenance"]["params"]["runtime"] == {"device": "cpu", "precision": "fp32", "world_size": 2}
    assert single_meta["provenance"]["params"]["runtime"]["world_size"] == 1
    for key in ("spec", "classes", "classes_sha256", "stored_parameters", "head_form", "teacher_epochs"):
        assert meta[key] == single_meta[key], key
    assert _tensor_shapes(projector_file) == single_shapes
    images, labels = load_distilled(workspace / "artifacts/distilled", meta["classes_sha256"])
    projector, _ = load_projector(projector_file, images, labels, meta["classes_sha256"])
    assert projector(images[:2].float() / 255).shape == (2, len(meta["classes"]))
    metrics = json.loads((workspace / "metrics/projector.json").read_text())
    assert metrics.keys() == single_metrics.keys()
    # the shards' averaged gradients are the whole batch's: the same fit, up to float rounding
    losses = [epoch["val_loss"] for epoch in metrics["history"]]
    assert losses == pytest.approx([epoch["val_loss"] for epoch in single_metrics["history"]], rel=1e-3)
    assert _hidden_files(workspace) == []


@pytest.mark.slow
def test_train_teachers_with_two_gloo_processes_writes_the_same_checkpoints(workspace, tmp_path):
    reference = tmp_path / "teachers"
    shutil.copytree(workspace / "artifacts/teachers", reference)
    _stage(workspace, "train-teachers", processes=2)
    written = sorted(path.name for path in (workspace / "artifacts/teachers").iterdir())
    assert written == sorted(path.name for path in reference.iterdir())
    for name in written:
        assert _tensor_shapes(workspace / "artifacts/teachers" / name) == _tensor_shapes(reference / name)
        record = artifacts.read_metadata(workspace / "artifacts/teachers" / name)["provenance"]
        assert record["params"]["runtime"]["world_size"] == 2
    metrics = json.loads((workspace / "metrics/teachers.json").read_text())
    assert sorted(metrics["val_acc"]) == sorted(str(epoch) for epoch in range(1, 5))
    assert _hidden_files(workspace) == []


@pytest.mark.slow
def test_evaluate_students_dealt_to_two_processes_give_the_one_process_table(workspace):
    """Students are independent, so dealing them out must not change a single figure (one thread each). The label
    network they use is fit by two processes (DDP) too."""
    _stage(workspace, "refine-images")
    assert _stage(workspace, "fit-label-net", processes=2).count("label network:") == 1  # rank 0 alone reports
    label_net = artifacts.read_metadata(workspace / "artifacts/label_net/label_net.safetensors")
    assert label_net["provenance"]["params"]["runtime"]["world_size"] == 2
    _stage(workspace, "evaluate-students")
    single = json.loads((workspace / "metrics/students.json").read_text())
    single_curves = (workspace / "plots/student_curves.csv").read_text()
    log = _stage(workspace, "evaluate-students", processes=2)
    assert log.count("label mode") == 1
    table = json.loads((workspace / "metrics/students.json").read_text())
    assert sorted(table["resnet18"]) == ["hard", "label_net", "stored"]
    for mode in ("label_net", "hard", "stored"):
        for key in ("accs", "val_acc", "extra_storage_bytes", "seeds"):
            assert table["resnet18"][mode][key] == single["resnet18"][mode][key], (mode, key)
    assert (workspace / "plots/student_curves.csv").read_text() == single_curves
    assert _hidden_files(workspace) == []
