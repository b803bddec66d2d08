"""Prepared splits: uint8 images with int64 labels and their ordered class list, as `prepare` writes them.

Class order is fixed by the source (the idx/CIFAR label indices, sorted folder names for ImageFolder) and
recorded with its sha256 in classes.json, so every later artifact can be checked against the class list it was
made for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from helio_core import artifacts
from helio_core.errors import HelioError


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]


def classes_sha256(classes: list[str]) -> str:
    return artifacts.sha256_json(classes)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW resized to size x size with antialiased bilinear interpolation, in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    chunks = []
    for chunk in images.split(4096):
        scaled = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        chunks.append(scaled.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(chunks)


def cap_per_class(split: ImageSet, cap: int | None, generator: torch.Generator) -> ImageSet:
    """Keep at most `cap` images of each class (a seeded random subset, original order kept)."""
    if cap is None:
        return split
    keep = []
    for label in range(len(split.classes)):
        members = (split.labels == label).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=generator)[:cap]])
    index = torch.cat(keep).sort().values
    return ImageSet(split.images[index], split.labels[index], split.classes)


def split_off(split: ImageSet, count: int, generator: torch.Generator) -> tuple[ImageSet, ImageSet]:
    """A seeded random `count` images held out of `split` (for choices that must not see the test set)."""
    if count >= len(split.labels):
        raise HelioError(f"data.val_images={count} must be smaller than the {len(split.labels)} train images")
    order = torch.randperm(len(split.labels), generator=generator)
    held, kept = order[:count].sort().values, order[count:].sort().values
    return (
        ImageSet(split.images[kept], split.labels[kept], split.classes),
        ImageSet(split.images[held], split.labels[held], split.classes),
    )


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale."""
    values = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255
    return values.mean(1).tolist(), values.std(1).tolist()


def write_split(path: Path, split: ImageSet, metadata: dict[str, Any]) -> None:
    """One prepared split; `metadata` holds its name, source, class hash, normalisation and provenance."""
    artifacts.save_tensors(
        path, {"images": split.images, "labels": split.labels}, {"kind": "dataset-split", **metadata}
    )


def load_split(path: Path, classes: list[str]) -> tuple[ImageSet, dict]:
    """A prepared split and its metadata, checked against the class list (from classes.json) it must be of."""
    tensors, metadata = artifacts.load_tensors(path)
    if metadata.get("kind") != "dataset-split" or set(tensors) != {"images", "labels"}:
        raise HelioError(f"{path}: not a prepared data split (expected images and labels written by `prepare`)")
    if metadata["classes_sha256"] != classes_sha256(classes):
        raise HelioError(f"{path}: made for another class list (classes sha256 {metadata['classes_sha256'][:12]}…)")
    return ImageSet(tensors["images"], tensors["labels"], classes), metadata


def write_classes(path: Path, classes: list[str], provenance: dict[str, Any]) -> None:
    artifacts.write_json(path, {"classes": classes, "sha256": classes_sha256(classes), "provenance": provenance})


def load_classes(path: Path) -> tuple[list[str], str]:
    """Ordered class names and their hash from classes.json, checked for consistency."""
    record = artifacts.read_json(path)
    try:
        classes, recorded = record["classes"], record["sha256"]
    except (KeyError, TypeError):
        raise HelioError(f"{path}: expected keys 'classes' and 'sha256'") from None
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise HelioError(f"{path}: 'classes' must be a list of names")
    if classes_sha256(classes) != recorded:
        raise HelioError(f"{path}: the class list does not match its recorded sha256 (edited or damaged)")
    return classes, recorded
