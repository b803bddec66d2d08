"""Shared fixtures: tiny synthetic data, written as a prepared `artifacts/data` in a temp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helio_core.params import load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def quick_params():
    return load_params(REPO / "presets" / "quick.yaml")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temp folder as the current directory (stages write relative paths)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def project_copy(tmp_path):
    """The pipeline's files (no outputs) copied into a fresh folder, with the quick preset as params.yaml."""
    target = tmp_path / "project"
    target.mkdir()
    for name in ("helio_core", "stages"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, target / name)
    shutil.copy(REPO / "presets" / "quick.yaml", target / "params.yaml")
    return target
