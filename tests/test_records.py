"""`helio record` keeps a run's metrics with its provenance, never overwrites a record, and merges into one only
rows made under the same conditions."""

import json

import pytest
from typer.testing import CliRunner

from helio_app.cli import app
from helio_app.records import merge
from helio_core.errors import HelioError

ROW = {"acc": 0.75, "acc_std": 0.01, "val_acc": 0.76, "seeds": 3, "extra_storage_bytes": 0, "accs": [0.74, 0.75, 0.76]}
PROJECTOR, OTHER = "a" * 64, "b" * 64
RESNET = {"ipc": 10, "train_images": 100, "epochs": 120, "student_seeds": [0, 1, 2], "test_images": 10000,
          "archs": ["resnet18"], "augmentation": {"crop": True, "flip": True, "cutmix": True},
          "resnet18": {"projector": ROW, "hard": ROW}, "images_bytes": 51891,
          "label_files_sha256": {"projector": PROJECTOR}, "wall_seconds": 100.0}  # fmt: skip
CONVNET = {key: value for key, value in RESNET.items() if key != "resnet18"} | {
    "archs": ["convnet3"], "convnet3": {"projector": {**ROW, "acc": 0.77}}, "wall_seconds": 50.0}  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(app, ["record", *args])


def test_record_keeps_the_metrics_with_command_date_and_commit(workdir):
    (workdir / "metrics").mkdir()
    refused = invoke("ipc-1", "--command", "dvc exp run -S select.ipc=1")
    assert refused.exit_code == 2 and "metrics/students.json: not found" in refused.output
    (workdir / "metrics" / "students.json").write_text(json.dumps(RESNET))
    result = invoke("ipc-1", "--command", "dvc exp run -S select.ipc=1", "--note", "IPC 1")
    assert result.exit_code == 0, result.output
    kept = json.loads((workdir / "results" / "ipc-1.json").read_text())
    assert kept["metrics"]["students"] == RESNET and kept["command"] == "dvc exp run -S select.ipc=1"
    assert kept["note"] == "IPC 1" and kept["date"] and kept["commit"]
    again = invoke("ipc-1", "--command", "another run")
    assert again.exit_code == 2 and "results/ipc-1.json: exists" in again.output
    assert json.loads((workdir / "results" / "ipc-1.json").read_text()) == kept


def test_record_of_one_students_table_keeps_only_that_table(workdir):
    (workdir / "metrics").mkdir()
    (workdir / "metrics" / "students.json").write_text(json.dumps(RESNET))
    (workdir / "metrics" / "full_data.json").write_text(json.dumps(CONVNET))
    result = invoke("full", "--command", "helio evaluate-students --full-data", "--students", "metrics/full_data.json")
    assert result.exit_code == 0, result.output
    assert json.loads((workdir / "results" / "full.json").read_text())["metrics"] == {"students": CONVNET}
    (workdir / "metrics" / "odd.json").write_text(json.dumps({"resnet18": {}}))
    refused = invoke("odd", "--command", "x", "--students", "metrics/odd.json")
    assert refused.exit_code == 2 and "metrics/odd.json: not a students' table" in refused.output


def test_merge_adds_the_missing_rows_with_their_own_provenance(workdir):
    (workdir / "metrics").mkdir()
    (workdir / "metrics" / "students.json").write_text(json.dumps(RESNET))
    assert invoke("ipc10", "--command", "dvc repro").exit_code == 0
    (workdir / "convnet3.json").write_text(json.dumps(CONVNET))
    result = invoke("ipc10", "--merge", "--students", "convnet3.json", "--command", "helio evaluate-students -S a")
    assert result.exit_code == 0 and "added convnet3 projector to results/ipc10.json" in result.output
    kept = json.loads((workdir / "results" / "ipc10.json").read_text())
    students = kept["metrics"]["students"]
    assert students["archs"] == ["resnet18", "convnet3"] and students["convnet3"] == CONVNET["convnet3"]
    assert students["resnet18"] == RESNET["resnet18"] and students["wall_seconds"] == 150.0
    assert kept["command"] == "dvc repro" and [m["rows"] for m in kept["merges"]] == [["convnet3 projector"]]
    assert kept["merges"][0]["command"] == "helio evaluate-students -S a" and kept["merges"][0]["commit"]
    again = invoke("ipc10", "--merge", "--students", "convnet3.json", "--command", "again")
    assert again.exit_code == 2 and "already holds convnet3 projector" in again.output
    assert json.loads((workdir / "results" / "ipc10.json").read_text()) == kept


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 300}, "epochs 300, .*'s 120"),
        ({"student_seeds": [0]}, "student_seeds"),
        ({"augmentation": {"crop": False, "flip": False, "cutmix": False}}, "augmentation"),
        ({"images_bytes": 50320}, "images_bytes"),
        ({"label_files_sha256": {"projector": OTHER}}, "learned from another projector"),
        ({"label_files_sha256": {}}, "without the projector's label_files_sha256"),
    ],
)
def test_merge_refuses_rows_made_under_other_conditions(tmp_path, change, message):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ipc10.json").write_text(json.dumps({"command": "c", "metrics": {"students": RESNET}}))
    (tmp_path / "convnet3.json").write_text(json.dumps({**CONVNET, **change}))
    with pytest.raises(HelioError, match=message):
        merge("ipc10", "c", "", tmp_path / "convnet3.json", tmp_path / "results")
    assert json.loads((tmp_path / "results" / "ipc10.json").read_text())["metrics"]["students"] == RESNET


def test_merge_ignores_the_projector_of_rows_that_do_not_use_it_and_a_record_that_lacks_a_field(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ipc10.json").write_text(json.dumps({"command": "c", "metrics": {"students": RESNET}}))
    hard = {**CONVNET, "convnet3": {"hard": ROW}, "label_files_sha256": {"projector": OTHER}}
    (tmp_path / "hard.json").write_text(json.dumps(hard))
    assert merge("ipc10", "c", "", tmp_path / "hard.json", tmp_path / "results") == [("convnet3", "hard")]
    kept = json.loads((tmp_path / "results" / "ipc10.json").read_text())["metrics"]["students"]
    assert kept["label_files_sha256"] == {"projector": PROJECTOR}
    legacy = {key: value for key, value in RESNET.items() if key != "augmentation"}
    (tmp_path / "results" / "old.json").write_text(json.dumps({"command": "c", "metrics": {"students": legacy}}))
    with pytest.raises(HelioError, match="augmentation .*old.json's None"):
        merge("old", "c", "", tmp_path / "hard.json", tmp_path / "results")
    with pytest.raises(HelioError, match="missing.json: not found; --merge adds rows"):
        merge("missing", "c", "", tmp_path / "hard.json", tmp_path / "results")
