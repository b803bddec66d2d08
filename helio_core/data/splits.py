"""Prepared splits: uint8 images with int64 labels and their ordered class list, as `prepare` writes them (a folder
of shards each, helio_core/data/shards.py, read a batch at a time).

Class order is fixed by the source (the idx/CIFAR label indices, sorted folder names for ImageFolder) and
recorded with its sha256 in classes.json, so every later artifact can be checked against the class list it was
made for.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from helio_core import artifacts
from helio_core.data.files import ImageFiles
from helio_core.data.shards import INDEX, LazyRows, ShardedImages, read_labels, write_index, write_shards
from helio_core.errors import HelioError

SHARD_BYTES = 256 << 20  # images per shard file: as many as fit in this many bytes


@dataclass
class ImageSet:
    images: torch.Tensor | LazyRows | ImageFiles  # uint8 (N, C, H, W); a prepared split's are read on demand
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]


class Rows(LazyRows):
    """Some rows of a split's images (tensor or shards), read only when indexed: a class's images without loading
    the whole class."""

    def __init__(self, images: torch.Tensor | ShardedImages, positions: torch.Tensor) -> None:
        self.images, self.positions = images, positions
        self.shape = torch.Size((len(positions), *images.shape[1:]))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        return self.images[self.positions[index]]


class JoinedRows(LazyRows):
    """Rows of several sets one after another as one set, read only when indexed: e.g. a fit pool of train images
    (a split's shards) with distilled images repeated after them, without holding the train images in memory."""

    def __init__(self, *parts: Rows) -> None:
        self.parts = parts
        self.starts = torch.tensor([0, *itertools.accumulate(len(part) for part in parts)])
        self.shape = torch.Size((int(self.starts[-1]), *parts[0].shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        positions = torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).long()
        part_of = torch.searchsorted(self.starts, positions, right=True) - 1
        out = torch.empty((len(positions), *self.shape[1:]), dtype=torch.uint8)
        for number in part_of.unique().tolist():
            chosen = part_of == number
            out[chosen] = self.parts[number][positions[chosen] - self.starts[number]]
        return out


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


class ChannelSums:
    """Per-channel histograms of uint8 pixel values: the exact mean and std of a split gathered a batch at a time,
    the same whatever the batches, in memory the size of one channel of a batch (no wider copy of the pixels)."""

    def __init__(self) -> None:
        self.histograms: torch.Tensor | None = None  # (channels, 256) int64 counts

    def add(self, images: torch.Tensor) -> None:
        counts = torch.stack([torch.bincount(images[:, c].reshape(-1), minlength=256) for c in range(images.shape[1])])
        self.histograms = counts if self.histograms is None else self.histograms + counts

    def stats(self) -> tuple[list[float], list[float]]:
        """Mean and (sample) standard deviation per channel, on the [0, 1] scale."""
        values = torch.arange(256, dtype=torch.int64)
        means, stds = [], []
        for counts in self.histograms:
            n, total, squares = int(counts.sum()), int((counts * values).sum()), int((counts * values * values).sum())
            means.append(float(Fraction(total, n * 255)))
            stds.append(math.sqrt(Fraction(squares * n - total**2, n * (n - 1) * 255**2)))
        return means, stds


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale."""
    sums = ChannelSums()
    sums.add(images)
    return sums.stats()


def write_split(
    folder: Path, split: ImageSet, size: int, metadata: dict[str, Any],
    stats: tuple[list[float], list[float]] | None = None, shard_bytes: int = SHARD_BYTES,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[float], list[float]]:  # fmt: skip
    """One prepared split as a folder of shards (helio_core/data/shards.py), its images resized to `size` a shard
    at a time. `metadata` holds its name, source, class hash and provenance; `stats` the mean and std to normalise
    with (None: this split's own, gathered as it is written). Returns the stats recorded."""
    shard_images = max(1, shard_bytes // (split.images.shape[1] * size * size))
    sums = ChannelSums()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in zip(split.images.split(shard_images), split.labels.split(shard_images), strict=True):
            images = resize(images, size)
            sums.add(images)
            yield images, labels
            if on_batch is not None:
                on_batch(len(labels))

    shards, shape = write_shards(folder, batches(), shard_images, {"kind": "dataset-shard", "split": metadata["split"]})
    mean, std = stats or sums.stats()
    write_index(folder, shards, shape, {**metadata, "mean": mean, "std": std})
    return mean, std


def load_split(folder: Path, classes: list[str]) -> tuple[ImageSet, dict]:
    """A prepared split (its labels in memory, its images read on demand) and its metadata, checked against the
    class list (from classes.json) it must be of."""
    index = artifacts.read_json(folder / INDEX)
    try:
        if index["kind"] != "dataset-split":
            raise KeyError("kind")
        recorded, count = index["classes_sha256"], index["count"]
        images = ShardedImages(folder, index)
    except (KeyError, TypeError, ValueError):
        raise HelioError(f"{folder / INDEX}: not the index of a prepared data split (written by `prepare`)") from None
    if recorded != classes_sha256(classes):
        raise HelioError(f"{folder}: made for another class list (classes sha256 {recorded[:12]}…)")
    labels = read_labels(folder, index)
    if len(labels) != count or len(images) != count:
        raise HelioError(f"{folder / INDEX}: {count:,} images listed, its shards hold {len(labels):,}")
    metadata = {key: value for key, value in index.items() if key not in ("shards", "count", "shape")}
    return ImageSet(images, labels, classes), metadata


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
