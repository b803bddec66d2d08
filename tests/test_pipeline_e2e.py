"""The DVC pipeline end to end on the quick preset (synthetic data) in a fresh git + DVC repository."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helio_core import artifacts
from tests.conftest import copy_project

STAGES = (
    "prepare", "train_teachers", "select_patches", "fit_projector", "refine_images", "fit_label_net",
    "evaluate_students",
)  # fmt: skip


def _completed(cwd: Path, *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _run(cwd: Path, *command: str) -> str:
    result = _completed(cwd, *command)
    return result.stdout + result.stderr


def _dvc_metrics(cwd: Path) -> dict:
    """`dvc metrics show` of the workspace: per declared metrics file, its "data" or the "error" loading it."""
    shown = _completed(cwd, sys.executable, "-m", "dvc", "metrics", "show", "--json")
    return json.loads(shown.stdout)[""]["data"]


def _unloadable(metrics: dict) -> set[str]:
    """The declared metrics files `dvc metrics show` could not load (it then says it "failed to load some")."""
    return {path for path, entry in metrics.items() if "error" in entry}


def _labels(where: Path, images: list[str]) -> dict:
    _run(where, sys.executable, "-m", "helio_app", "label", "artifacts/projector/projector.safetensors",
         *images, "--images-dir", "artifacts/distilled", "--output", "labels.json")  # fmt: skip
    return json.loads((where / "labels.json").read_text())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The quick pipeline run once by `dvc repro` in a fresh git + DVC repository with a local-folder remote, its
    dvc.lock and metrics committed and its outputs pushed: (root, the remote, its log, the projector's labels of the
    distilled images as they were then)."""
    base = tmp_path_factory.mktemp("e2e")
    root, remote = copy_project(base / "project"), base / "remote"
    _run(root, "git", "init", "-q")
    _run(root, "git", "config", "user.email", "ci@helio")
    _run(root, "git", "config", "user.name", "helio ci")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "remote", "add", "-d", "shared", str(remote))
    log = _run(root, sys.executable, "-m", "dvc", "repro")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "the quick pipeline's lock and metrics")
    _run(root, sys.executable, "-m", "dvc", "push")
    images = sorted(str(p.relative_to(root)) for p in (root / "artifacts/distilled/images").glob("*.png"))
    return root, remote, log, images, _labels(root, images)


@pytest.mark.slow
def test_a_clone_pulls_the_outputs_and_has_nothing_to_rerun(pipeline, tmp_path):
    """The committed dvc.lock and metrics, the outputs in a local-folder remote: a fresh clone shows the metrics
    and plots, `dvc pull` brings the rest, `dvc repro` runs nothing, and `helio label` gives the same labels.
    (Before the test below changes the pipeline's workspace.)"""
    root, _, _, images, labels = pipeline
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "artifacts/projector").exists()
    metrics = _dvc_metrics(clone)
    assert "metrics/students.json" in metrics
    assert _unloadable(metrics) == {"metrics/dd_ranking.json"}  # only the fair pipeline's: it has not run
    _run(clone, sys.executable, "-m", "dvc", "pull")
    assert "Data and pipelines are up to date" in _run(clone, sys.executable, "-m", "dvc", "status", "dvc.yaml")
    assert "Running stage" not in _run(clone, sys.executable, "-m", "dvc", "repro")
    assert "failed to load" not in _run(clone, sys.executable, "-m", "dvc", "plots", "show")
    assert len(labels["labels"]) == 8 and _labels(clone, images) == labels


@pytest.mark.slow
def test_dvc_repro_runs_the_stages_and_reruns_only_what_changed(pipeline):
    root, _, log, _, _ = pipeline
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log
    # the experiments' pipelines have not run: their files must not make the plots fail to load, and of the metrics
    # only the fair pipeline's scores are missing (the repository commits its default run's: test_architecture.py)
    assert "failed to load" not in _run(root, sys.executable, "-m", "dvc", "plots", "show")
    assert _unloadable(_dvc_metrics(root)) == {"metrics/dd_ranking.json"}

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
    assert len(list((root / "artifacts/refined/images").glob("*.png"))) == 8
    refine = json.loads((root / "metrics/refine.json").read_text())
    assert not refine["enabled"] and refine["mean_abs_pixel_change"] == 0  # the default: images as selected
    students = json.loads((root / "metrics/students.json").read_text())
    assert students["ipc"] == 2
    for mode in ("projector", "label_net", "teacher", "hard", "stored"):
        row = students["resnet18"][mode]
        assert row["seeds"] == 2 and 0.0 <= row["acc"] <= 1.0 and row["acc_std"] >= 0.0
    stored_file = root / "artifacts/stored_labels/seed_0.safetensors"
    assert students["resnet18"]["stored"]["extra_storage_bytes"] == stored_file.stat().st_size
    assert students["resnet18"]["projector"]["extra_storage_bytes"] == projector["projector_bytes"]
    assert students["resnet18"]["hard"]["extra_storage_bytes"] == 0
    label_net = json.loads((root / "metrics/label_net.json").read_text())
    assert label_net["label_net_bytes"] == (root / "artifacts/label_net/label_net.safetensors").stat().st_size
    assert students["resnet18"]["label_net"]["extra_storage_bytes"] == label_net["label_net_bytes"]
    storage = json.loads((root / "metrics/storage.json").read_text())
    assert storage["stored_labels_formula"]["labels_bytes"] == 8 * 3 * 4 * 2  # images x epochs x classes x 2
    assert (root / "plots/accuracy_vs_storage.png").stat().st_size > 1000
    curves = (root / "plots/student_curves.csv").read_text().splitlines()
    assert curves[0].startswith("run,") and len(curves) == 1 + 2 * 5 * 3  # seeds x modes x epochs

    again = _run(root, sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in again

    sources = [option for name in ("projector", "label_net", "stored", "teachers") for option in ("--source", name)]
    _run(root, sys.executable, "-m", "helio_app", "fidelity", *sources, "--every", "2", "--views", "3", "-o", "f.json")
    fidelity = json.loads((root / "f.json").read_text())
    assert fidelity["student_epochs"] == 3 and fidelity["command"].startswith("helio fidelity --source projector")
    stored = fidelity["sources"]["stored"]  # the teacher's own labels, replayed on the views they were stored for
    assert [row["epoch"] for row in stored["epochs"]] == [1, 3] and stored["all"]["views"] == 2 * 8  # whole batches
    assert stored["all"]["kl"] < 1e-4 and stored["all"]["agreement"] == 1.0
    assert fidelity["sources"]["projector"]["bytes"] == projector["projector_bytes"]
    assert fidelity["sources"]["projector"]["students_test_acc"] == students["resnet18"]["projector"]["acc"]
    learned_from = students["label_files_sha256"]  # what fidelity checks before it joins the students' scores
    assert learned_from["projector"] == artifacts.sha256_file(root / "artifacts/projector/projector.safetensors")
    assert fidelity["sources"]["label_net"]["bytes"] == label_net["label_net_bytes"]
    assert fidelity["sources"]["teachers"]["all"]["kl"] > 0.0
    shorter = [sys.executable, "-m", "helio_app", "fidelity", "-S", "student.epochs=2", "--views", "3", "-o", "f2.json"]
    _run(root, *shorter, "--source", "projector")
    shorter_run = json.loads((root / "f2.json").read_text())  # not the stream those students trained on: not joined
    assert shorter_run["student_epochs"] == 2 and shorter_run["sources"]["projector"]["students_test_acc"] is None
    env = {**os.environ, "PYTHONPATH": str(root)}
    refused = subprocess.run([*shorter, "--source", "stored"], cwd=root, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "seed_0.safetensors: stored for another view stream" in refused.stderr

    continual = _run(root, sys.executable, "-m", "dvc", "repro", "experiments/continual/dvc.yaml")
    assert "dvc.yaml:evaluate_continual'" in continual and "Running stage 'prepare'" not in continual
    continual_metrics = json.loads((root / "metrics/continual.json").read_text())
    steps = continual_metrics["accuracy_per_step"]
    assert {schedule: len(steps[schedule]["projector"]) for schedule in steps} == {"2": 2, "4": 4}
    assert continual_metrics["students_trained"] == 4 * 2  # seen sets of 2 steps of 2 are among 4 steps of 1's
    assert steps["4"]["teacher"][0] == 1.0  # one class seen: every test image is of it
    assert (root / "plots/continual.png").stat().st_size > 1000

    # one stage of the matrix (each is the same code for another arch): it reruns nothing upstream
    cross_arch = _run(
        root, sys.executable, "-m", "dvc", "repro", "experiments/cross_arch/dvc.yaml:evaluate_arch@shufflenet_v2"
    )
    assert "evaluate_arch@shufflenet_v2'" in cross_arch and "Running stage 'prepare'" not in cross_arch
    table = json.loads((root / "metrics/cross_arch/shufflenet_v2.json").read_text())
    assert table["archs"] == ["shufflenet_v2"] and sorted(table["shufflenet_v2"]) == ["projector", "teacher"]
    assert table["shufflenet_v2"]["projector"]["seeds"] == 1
    assert not (root / "metrics/cross_arch/resnet18.json").exists()

    _fair_pipeline(root)

    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "the experiments' pipelines")
    # the students of the variant in one cheap mode: which stages rerun is the point, not their table
    variant = ("-S", "select.ipc=1", "-S", "student.label_modes=[hard]")
    experiment = _run(root, sys.executable, "-m", "dvc", "exp", "run", *variant)
    assert "Running stage 'select_patches'" in experiment and "Running stage 'fit_projector'" in experiment
    assert "Running stage 'train_teachers'" not in experiment and "Running stage 'prepare'" not in experiment
    assert "Running stage 'fit_label_net'" in experiment  # it may practise on the refined images: a new set refits it
    assert "Running stage 'evaluate_students'" in experiment
    assert len(list((root / "artifacts/distilled/images").glob("*.png"))) == 4


def _fair_pipeline(root: Path) -> None:
    """experiments/fair: the default students' recipe on random train images labelled by the same files, the
    full-data reference, both image sets' students without augmentation, and DD-Ranking's scores; nothing of the
    default reruns."""
    fair = _run(root, sys.executable, "-m", "dvc", "repro", "experiments/fair/dvc.yaml")
    assert "Running stage 'evaluate_students'" not in fair and "Running stage 'fit_projector'" not in fair
    chosen = json.loads((root / "artifacts/random/distilled/labels.json").read_text())
    assert chosen["provenance"]["params"]["select"]["method"] == "random"
    assert len(list((root / "artifacts/random/refined/images").glob("*.png"))) == len(chosen["images"])
    distilled, random = (json.loads((root / f"metrics/{name}students.json").read_text()) for name in ("", "random/"))
    assert [random[key] for key in ("ipc", "epochs", "student_seeds", "label_files_sha256")] == [
        distilled[key] for key in ("ipc", "epochs", "student_seeds", "label_files_sha256")
    ]  # the same recipe and the same label files as the distilled set's students
    assert sorted(random["resnet18"]) == ["hard", "label_net", "projector", "stored", "teacher"]
    stored = sorted(path.name for path in (root / "artifacts/random/stored_labels").iterdir())
    assert stored == [f"seed_{seed}.safetensors" for seed in random["student_seeds"]]  # the arm's own views
    scores = json.loads((root / "metrics/dd_ranking.json").read_text())
    assert sorted(mode for mode in scores["resnet18"] if mode != "full_hard_acc") == sorted(random["resnet18"])
    for mode, row in ((mode, scores["resnet18"][mode]) for mode in random["resnet18"]):
        ior = distilled["resnet18"][mode]["acc"] - random["resnet18"][mode]["acc"]  # means over the same seeds
        assert row["ior"] == pytest.approx(ior, abs=1e-4) and 0 <= row["lrs"] <= 1
    for name in ("", "random/"):
        plain = json.loads((root / f"metrics/{name}plain_students.json").read_text())
        assert plain["augmentation"] == {"crop": False, "flip": False, "cutmix": False}
        assert plain["student_seeds"] == distilled["student_seeds"] and sorted(plain["resnet18"]) == sorted(
            random["resnet18"]
        )
    assert distilled["augmentation"] == {"crop": True, "flip": True, "cutmix": True}
    assert all(0 <= scores["resnet18"][mode]["ars"] <= 1 for mode in random["resnet18"])
    full = json.loads((root / "metrics/full_data.json").read_text())
    assert scores["resnet18"]["full_hard_acc"] == pytest.approx(full["resnet18"]["hard"]["acc"], abs=1e-5)
    assert "Running stage" not in _run(root, sys.executable, "-m", "dvc", "repro", "experiments/fair/dvc.yaml")
    metrics = _dvc_metrics(root)
    assert _unloadable(metrics) == set()
    dvc_scores = metrics["metrics/dd_ranking.json"]["data"]  # DVC's: a `dvc exp show` column per score
    assert dvc_scores["resnet18"]["projector"]["lrs"] == scores["resnet18"]["projector"]["lrs"]
