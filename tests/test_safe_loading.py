"""Shared files are never unpickled: tensors are safetensors, metadata JSON, torch.load only with weights_only=True."""

import re

from tests.conftest import REPO

SOURCES = sorted(path for package in ("helio_core", "helio_app", "stages") for path in (REPO / package).rglob("*.py"))


def _calls(pattern: str) -> list[str]:
    return [
        f"{path.name}: {line.strip()}"
        for path in SOURCES
        for line in path.read_text().splitlines()
        if re.search(pattern, line)
    ]


def test_torch_load_is_only_called_with_weights_only():
    calls = _calls(r"torch\.load\(")
    assert calls, "the pattern no longer finds the two torch.load calls of backbones.py"
    assert [call for call in calls if "weights_only=True" not in call] == []


def test_nothing_is_unpickled_except_cifar_batches_through_the_array_only_unpickler():
    assert _calls(r"pickle\.loads?\(|allow_pickle\s*=\s*True|import (dill|joblib|cloudpickle)|torch\.jit\.load") == []
    unpicklers = _calls(r"Unpickler\b")
    assert unpicklers and all(call.startswith("sources.py: ") for call in unpicklers)
    data = (REPO / "helio_core" / "data" / "sources.py").read_text()
    assert "def find_class(self, module: str, name: str)" in data  # the allow-list that refuses anything else
