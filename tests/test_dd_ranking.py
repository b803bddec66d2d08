"""DD-Ranking's scores on hand-computed numbers (accuracies as fractions, w = 0.5)."""

import json
import math
import subprocess
import sys

import pytest

from helio_core.errors import HelioError
from helio_core.reporting.dd_ranking import (
    augmentation_robust_score,
    label_robust_score,
    robust_score,
    score_lines,
    scores,
)
from tests.conftest import REPO


def test_the_normalisation_maps_minus_one_zero_and_one_as_published():
    assert robust_score(-1) == pytest.approx(0, abs=1e-12) and robust_score(1) == pytest.approx(1)
    assert robust_score(0) == pytest.approx(1 / (1 + math.e))  # IOR = HLR = 0
    assert robust_score(-0.155) == pytest.approx(0.207852, abs=1e-6)


def test_label_and_augmentation_robust_scores_on_a_worked_example():
    # synthetic hard .60, soft .80; random hard .55, soft .78; full data hard .93
    assert label_robust_score(ior=0.80 - 0.78, hlr=0.93 - 0.60) == pytest.approx(0.207852, abs=1e-6)
    assert label_robust_score(ior=0.60 - 0.55, hlr=0.93 - 0.60) == pytest.approx(0.213359, abs=1e-6)
    assert label_robust_score(ior=1.0, hlr=0.0, weight=1.0) == pytest.approx(1.0)  # w = 1: IOR alone
    assert augmentation_robust_score(0.02, 0.05) == pytest.approx(0.284096, abs=1e-6)


def _table(path, accs: dict, ipc=10, epochs=120, augmented=True):
    rows = {mode: {"acc": sum(a) / len(a), "accs": a} for mode, a in accs.items()}
    augmentation = dict.fromkeys(("crop", "flip", "cutmix"), augmented)
    table = {"ipc": ipc, "epochs": epochs, "archs": ["resnet18"], "augmentation": augmentation, "resnet18": rows}
    path.write_text(json.dumps(table))
    return path


def test_scores_pair_seeds_and_average_the_per_seed_scores(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.60, 0.62], "teacher": [0.80, 0.82], "projector": [0.7, 0.7]})
    random = _table(tmp_path / "random.json", {"hard": [0.55, 0.56], "teacher": [0.78, 0.79]})
    full = _table(tmp_path / "full.json", {"hard": [0.93, 0.91]})
    result = scores(distilled, random, full)
    row = result["resnet18"]["teacher"]
    assert result["resnet18"]["full_hard_acc"] == 0.92 and "projector" not in result["resnet18"]  # not in random
    assert row["ior"] == pytest.approx(0.025) and row["hlr"] == pytest.approx(0.31) and row["lrs_seeds"] == 2
    assert row["lrs"] == pytest.approx(0.212446, abs=1e-5) and row["lrs_std"] == pytest.approx(0.002767, abs=1e-5)
    assert result["resnet18"]["hard"]["ior"] == pytest.approx(0.055) and "ars" not in row


def test_ars_needs_both_tables_without_augmentation(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.60], "teacher": [0.80]})
    random = _table(tmp_path / "random.json", {"hard": [0.55], "teacher": [0.78]})
    full = _table(tmp_path / "full.json", {"hard": [0.93]})
    plain = _table(tmp_path / "syn_plain.json", {"hard": [0.50], "teacher": [0.60]}, augmented=False)
    random_plain = _table(tmp_path / "random_plain.json", {"hard": [0.45], "teacher": [0.55]}, augmented=False)
    row = scores(distilled, random, full, 0.5, plain, random_plain)["resnet18"]["teacher"]
    assert row["ars"] == pytest.approx(augmentation_robust_score(0.02, 0.05), abs=1e-5)
    with pytest.raises(
        HelioError, match=r"random\.json: not students without augmentation .*evaluate-students --plain"
    ):
        scores(distilled, random, full, 0.5, plain, random)  # an augmented table given as the plain one
    other_epochs = _table(tmp_path / "plain300.json", {"hard": [0.5], "teacher": [0.6]}, epochs=300, augmented=False)
    with pytest.raises(HelioError, match=r"plain300\.json: IPC/epochs 10/300"):
        scores(distilled, random, full, 0.5, other_epochs, random_plain)


def test_an_arch_without_full_data_students_gets_ior_and_ars_only(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.60], "teacher": [0.80]})
    random = _table(tmp_path / "random.json", {"hard": [0.55], "teacher": [0.78]})
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"ipc": None, "epochs": 30, "archs": ["convnet3"], "convnet3": {"hard": {"acc": 0.9}}}))
    plain = _table(tmp_path / "syn_plain.json", {"hard": [0.50], "teacher": [0.60]}, augmented=False)
    random_plain = _table(tmp_path / "random_plain.json", {"hard": [0.45], "teacher": [0.55]}, augmented=False)
    result = scores(distilled, random, full, 0.5, plain, random_plain)
    row = result["resnet18"]["teacher"]
    assert result["resnet18"]["full_hard_acc"] is None and "hlr" not in row and "lrs" not in row
    assert row["ior"] == pytest.approx(0.02) and row["ars"] == pytest.approx(0.284096, abs=1e-5)
    teacher_line = next(line for line in score_lines(result) if line.startswith("resnet18") and "teacher" in line)
    assert teacher_line.split()[2:] == ["+2.00", "–", "–", "0.2841", "±", "0.0000"]  # IOR, HLR, LRS, ARS


def test_an_arch_without_students_without_augmentation_gets_no_ars(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.60], "teacher": [0.80]})
    random = _table(tmp_path / "random.json", {"hard": [0.55], "teacher": [0.78]})
    full = _table(tmp_path / "full.json", {"hard": [0.93]})
    plain = _table(tmp_path / "syn_plain.json", {"hard": [0.50], "teacher": [0.60]}, augmented=False)
    random_plain = tmp_path / "random_plain.json"
    random_plain.write_text(json.dumps({**json.loads(plain.read_text()), "archs": ["convnet3"]}))
    row = scores(distilled, random, full, 0.5, plain, random_plain)["resnet18"]["teacher"]
    assert "ars" not in row and row["lrs"] == pytest.approx(0.207852, abs=1e-5)


def test_a_label_mode_without_students_without_augmentation_gets_no_ars(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.60], "teacher": [0.80]})
    random = _table(tmp_path / "random.json", {"hard": [0.55], "teacher": [0.78]})
    full = _table(tmp_path / "full.json", {"hard": [0.93]})
    plain = _table(tmp_path / "syn_plain.json", {"hard": [0.50]}, augmented=False)
    random_plain = _table(tmp_path / "random_plain.json", {"hard": [0.45], "teacher": [0.70]}, augmented=False)
    result = scores(distilled, random, full, 0.5, plain, random_plain)["resnet18"]
    assert "ars" not in result["teacher"] and result["teacher"]["lrs"] == pytest.approx(0.207852, abs=1e-5)
    assert result["hard"]["ars"] == pytest.approx(augmentation_robust_score(0.60 - 0.55, 0.50 - 0.45), abs=1e-5)


def test_a_record_of_a_run_is_read_like_its_students_table(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.6], "teacher": [0.8]})
    inner = json.loads(_table(tmp_path / "r.json", {"hard": [0.55], "teacher": [0.78]}).read_text())
    record = tmp_path / "random-ipc10.json"
    record.write_text(json.dumps({"name": "random-ipc10", "metrics": {"students": inner}}))
    result = scores(distilled, record, _table(tmp_path / "full.json", {"hard": [0.93]}))
    assert result["resnet18"]["teacher"]["ior"] == pytest.approx(0.02)


def test_mismatched_runs_are_refused_with_the_file_named(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.6, 0.6], "teacher": [0.8, 0.8]})
    full = _table(tmp_path / "full.json", {"hard": [0.93]})
    one_seed = _table(tmp_path / "random.json", {"hard": [0.55], "teacher": [0.78]})
    with pytest.raises(HelioError, match="random.json, resnet18 hard: 2 seeds against 1"):
        scores(distilled, one_seed, full)
    other_ipc = _table(tmp_path / "ipc1.json", {"hard": [0.5, 0.5], "teacher": [0.7, 0.7]}, ipc=1)
    with pytest.raises(HelioError, match=r"ipc1.json: IPC/epochs 1/120, the distilled run's 10/120"):
        scores(distilled, other_ipc, full)
    with pytest.raises(HelioError, match=r"full.json: no students of resnet18 with label mode 'hard'"):
        scores(distilled, distilled, _table(tmp_path / "full.json", {"teacher": [0.93]}))
    with pytest.raises(HelioError, match=r"weight must lie in \[0, 1\], got 1.5"):
        scores(distilled, distilled, full, weight=1.5)


def test_the_command_writes_the_metrics_file_and_names_a_bad_input(tmp_path):
    distilled = _table(tmp_path / "syn.json", {"hard": [0.6], "teacher": [0.8]})
    random = _table(tmp_path / "random.json", {"hard": [0.55], "teacher": [0.78]})
    full = _table(tmp_path / "full.json", {"hard": [0.93]})
    command = [sys.executable, "-m", "helio_app", "dd-ranking", str(distilled), "--random", str(random)]
    done = subprocess.run([*command, "--full", str(full), "-o", str(tmp_path / "s.json")], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "s.json").read_text())["resnet18"]["teacher"]["lrs"] == pytest.approx(0.20785, 1e-4)
    assert "teacher" in done.stdout and "+2.00" in done.stdout
    (tmp_path / "bad.json").write_text("[1, 2]")
    refused = subprocess.run([*command, "--full", str(tmp_path / "bad.json")], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode != 0 and "bad.json: not a students' table or a record of one" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
