"""Shared fixtures: tiny synthetic data, written as a prepared `artifacts/data` in a temp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import open_clip
import pytest
import torch

from helio_core.data.splits import classes_sha256
from helio_core.models.projector import ProjectorSpec, build_projector, save_projector
from helio_core.params import load_params
from helio_core.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
open_clip.add_model_config(REPO / "tests" / "fixtures" / "tiny-rn-clip.json")


def write_tiny_clip_projector(folder: Path, path: Path, classes: list[str]) -> Path:
    """A valid fp32 projector at `path` on the tiny CLIP config, its random weights a checkpoint in `folder`."""
    torch.manual_seed(0)
    checkpoint = folder / "tiny.pt"
    torch.save(open_clip.create_model("tiny-rn-clip").state_dict(), checkpoint)
    spec = ProjectorSpec(f"open_clip:tiny-rn-clip/{checkpoint}", None, "final", "text", 2, 8.0, "all", 2)
    projector = build_projector(spec, classes, logit_scale=10.0, seed=0)
    save_projector(path, projector, classes, classes_sha256(classes), {}, "fp32")
    return path


@pytest.fixture(scope="session")
def quick_fitted(tmp_path_factory):
    """The quick pipeline up to the projector, once per test session, in its own folder: (params, the projector's
    metrics, workspace). Read-only: a test that writes copies what it needs (`inputs_of`)."""
    from stages import fit_projector, prepare, select_patches, train_teachers

    workspace = Workspace(tmp_path_factory.mktemp("fitted"))
    params = load_params(REPO / "presets" / "quick.yaml")
    for stage in (prepare, train_teachers, select_patches):
        stage.run(params, workspace)
    return params, fit_projector.run(params, workspace), workspace


def inputs_of(fitted: Workspace, root: Path, *more: str) -> Workspace:
    """A fresh workspace holding the fitted one's data, teachers and distilled images (and the artifact folders named
    in `more`): where a variant fits."""
    workspace = Workspace(root)
    for name in ("data", "teachers", "distilled", *more):
        shutil.copytree(fitted.root / "artifacts" / name, root / "artifacts" / name)
    return workspace


@pytest.fixture
def quick_params():
    return load_params(REPO / "presets" / "quick.yaml")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temp folder as the current directory (stages write relative paths)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy_project(target: Path) -> Path:
    """The pipeline's files (no outputs, no dvc.lock: this repository's runs are not the copy's) copied into a fresh
    folder `target`, with the quick preset as params.yaml."""
    target.mkdir()
    for name in ("helio_core", "helio_app", "stages", "experiments"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "dvc.lock"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, target / name)
    shutil.copy(REPO / "presets" / "quick.yaml", target / "params.yaml")
    return target


@pytest.fixture
def project_copy(tmp_path):
    return copy_project(tmp_path / "project")
