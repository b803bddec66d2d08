"""Checkpoints of registered architectures (teachers): weights as safetensors, the spec that rebuilds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from helio_core import artifacts
from helio_core.errors import HelioError, first_line
from helio_core.models.architectures import ImageClassifier, batch_statistics, create_model


def save_checkpoint(path: Path, model: ImageClassifier, spec: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Weights as safetensors; `spec` (arch, num_classes, in_channels, image_size) rebuilds the model."""
    artifacts.save_tensors(path, model.state_dict(), {"kind": "model", "spec": spec, **metadata})


def load_checkpoint(path: Path) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by `save_checkpoint`, in eval mode."""
    tensors, metadata = artifacts.load_tensors(path)
    if metadata.get("kind") != "model":
        raise HelioError(f"{path}: not a model checkpoint (kind={metadata.get('kind')!r})")
    spec = metadata["spec"]
    channels = spec["in_channels"]
    model = create_model(
        spec["arch"], spec["num_classes"], channels, spec["image_size"], [0.0] * channels, [1.0] * channels
    )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise HelioError(f"{path}: weights do not fit {spec['arch']} ({first_line(error)})") from None
    return model.eval(), metadata


def load_teacher(
    path: Path, classes_sha256: str, device: torch.device, batchnorm: str = "running"
) -> tuple[nn.Module, dict[str, Any]]:
    """A teacher checkpoint in eval mode and channels-last on `device`, checked against the class list. With
    `batchnorm="batch"` it normalises every batch by the batch's own statistics (`batch_statistics`)."""
    teacher, metadata = load_checkpoint(path)
    recorded = metadata.get("classes_sha256")
    if recorded != classes_sha256:
        raise HelioError(
            f"{path}: teacher made for another class list (classes sha256 {str(recorded)[:12]}…, "
            f"expected {classes_sha256[:12]}…)"
        )
    if batchnorm == "batch":
        batch_statistics(teacher)
    return teacher.to(device, memory_format=torch.channels_last), metadata
