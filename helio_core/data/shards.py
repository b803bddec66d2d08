"""A prepared split as shards: `<split>/index.json` and `<split>/shard_00000.safetensors`, ... Each shard is a
plain helio safetensors file of consecutive images (`images`, uint8 N×C×H×W, and `labels`, int64 N) with the sha256
of its tensors in its header; the index lists the shards with their sizes and digests.

Why this format: safetensors is already how every artifact here is stored and any tool can open a shard; rows are
fixed-size, so a batch is a few positioned reads (`os.pread`) at known offsets, with no decoding on the training
path and nothing mapped or loaded whole. A reader's memory is its batch, however large the split. Each shard is
checked against its recorded digest the first time a process reads it (streamed, in blocks), so a damaged file is
found as before; a missing or truncated one is found when the split is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from helio_core import artifacts
from helio_core.errors import HelioError

INDEX = "index.json"
BLOCK = 8 << 20  # bytes read at a time when a shard's digest is checked


def shard_name(number: int) -> str:
    return f"shard_{number:05d}.safetensors"


def write_shards(folder: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], shard_images: int,
                 metadata: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:  # fmt: skip
    """Write (images, labels) batches, in order, as shards of `shard_images` images (the last may hold fewer), each
    with `metadata` in its header. Returns the index's list of shards and the images' shape."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    shape: list[int] | None = None

    def flush(images: torch.Tensor, labels: torch.Tensor) -> None:
        path = folder / shard_name(len(shards))
        tensors = {"images": images, "labels": labels}
        artifacts.save_tensors(path, tensors, metadata)
        shards.append({"file": path.name, "count": len(labels), "bytes": path.stat().st_size,
                       "sha256": artifacts.tensors_sha256(tensors)})  # fmt: skip

    for images, labels in batches:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("write_shards takes uint8 N×C×H×W images with one label each")
        shape = shape or list(images.shape[1:])
        pending.append((images, labels.to(torch.int64)))
        while sum(len(labels) for _, labels in pending) >= shard_images:
            images_all, labels_all = (torch.cat(parts) for parts in zip(*pending, strict=True))
            flush(images_all[:shard_images].clone(), labels_all[:shard_images].clone())
            pending = [(images_all[shard_images:], labels_all[shard_images:])]
    if sum(len(labels) for _, labels in pending):
        flush(*(torch.cat(parts) for parts in zip(*pending, strict=True)))
    if shape is None:
        raise ValueError("write_shards was given no images")
    return shards, shape


def write_index(folder: Path, shards: list[dict[str, Any]], shape: list[int], metadata: dict[str, Any]) -> None:
    """The split's index: what it is (`metadata`), how many images of what shape, and its shards."""
    index = {"kind": "dataset-split", **metadata, "count": sum(s["count"] for s in shards), "shape": shape,
             "shards": shards}  # fmt: skip
    artifacts.write_json(folder / INDEX, index)


@dataclass(frozen=True)
class _Shard:
    path: Path
    start: int  # index of its first image in the split
    count: int
    bytes: int
    sha256: str


class LazyRows:
    """Base of the image sets read on demand: indexing reads just the rows asked for, and `split` reads
    consecutive chunks one at a time (as Tensor.split, lazily)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: slice) -> torch.Tensor:
        raise NotImplementedError

    def split(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), size):
            yield self[start : start + size]


class ShardedImages(LazyRows):
    """A split's uint8 images, read on demand: indexes like a tensor (an int, a slice, a bool mask or positions) and
    returns a tensor of just those rows."""

    def __init__(self, folder: Path, index: dict[str, Any]) -> None:
        self.folder, starts = folder, 0
        self.shards: list[_Shard] = []
        for entry in index["shards"]:
            self.shards.append(_Shard(folder / entry["file"], starts, entry["count"], entry["bytes"], entry["sha256"]))
            starts += entry["count"]
        self.row_shape = tuple(index["shape"])
        self.row_bytes = int(torch.tensor(self.row_shape).prod())
        self.shape = torch.Size((starts, *self.row_shape))
        self.dtype = torch.uint8
        self._starts = torch.tensor([shard.start for shard in self.shards])
        self._opened: dict[int, tuple[int, int]] = {}  # shard number -> (file descriptor, offset of its images)
        for shard in self.shards:
            _check_present(shard)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor | list[int]) -> torch.Tensor:
        if isinstance(index, int):
            return self.rows(torch.tensor([index % len(self)]))[0]
        positions = torch.arange(len(self))[index]
        return self.rows(positions.reshape(-1))

    def rows(self, positions: torch.Tensor) -> torch.Tensor:
        """The images at `positions` (int64), in that order; consecutive positions are read together."""
        out = torch.empty((len(positions), *self.row_shape), dtype=torch.uint8)
        if not len(positions):
            return out
        order = positions.argsort(stable=True)
        ordered = positions[order]
        shard_of = torch.searchsorted(self._starts, ordered, right=True) - 1
        breaks = ((ordered[1:] != ordered[:-1] + 1) | (shard_of[1:] != shard_of[:-1])).nonzero().flatten() + 1
        for run in torch.tensor_split(torch.arange(len(ordered)), breaks.tolist()):
            number = int(shard_of[run[0]])
            first = int(ordered[run[0]]) - self.shards[number].start
            data = self._read(number, first * self.row_bytes, len(run) * self.row_bytes)
            out[order[run]] = torch.frombuffer(data, dtype=torch.uint8).reshape(len(run), *self.row_shape)
        return out

    def _read(self, number: int, offset: int, size: int) -> bytearray:
        if number not in self._opened:
            start = _images_offset_checked(self.shards[number], self.row_shape)
            self._opened[number] = (os.open(self.shards[number].path, os.O_RDONLY), start)
        descriptor, start = self._opened[number]
        data = bytearray(os.pread(descriptor, size, start + offset))
        if len(data) != size:
            raise HelioError(f"{self.shards[number].path}: truncated shard (a read past its end)")
        return data

    def close(self) -> None:
        for descriptor, _ in self._opened.values():
            os.close(descriptor)
        self._opened.clear()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # a copy in another process opens its own files
        return {**self.__dict__, "_opened": {}}


def _check_present(shard: _Shard) -> None:
    try:
        size = shard.path.stat().st_size
    except FileNotFoundError:
        raise HelioError(f"{shard.path}: missing shard (listed in {shard.path.parent / INDEX})") from None
    if size != shard.bytes:
        raise HelioError(f"{shard.path}: {size:,} bytes, {shard.bytes:,} recorded in {INDEX}: truncated or damaged")


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header and the offset where its data begins."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size)), 8 + size


def _images_offset_checked(shard: _Shard, row_shape: tuple[int, ...]) -> int:
    """Where the shard's images begin, after checking its tensors against its recorded digest, in blocks."""
    try:
        header, data_start = _header(shard.path)
        entries = {name: header[name] for name in ("images", "labels")}
    except (OSError, ValueError, KeyError) as error:
        raise HelioError(f"{shard.path}: not a shard of a prepared split ({error})") from None
    if entries["images"]["shape"] != [shard.count, *row_shape] or entries["images"]["dtype"] != "U8":
        raise HelioError(f"{shard.path}: images of shape {entries['images']['shape']}, expected {shard.count} of "
                         f"{list(row_shape)} uint8 (as its index says)")  # fmt: skip
    digest = hashlib.sha256()
    dtypes = {"images": torch.uint8, "labels": torch.int64}
    with open(shard.path, "rb") as handle:
        for name in sorted(entries):
            begin, end = entries[name]["data_offsets"]
            digest.update(f"{name}:{dtypes[name]}:{tuple(entries[name]['shape'])}".encode())
            handle.seek(data_start + begin)
            for at in range(begin, end, BLOCK):
                digest.update(handle.read(min(BLOCK, end - at)))
    if digest.hexdigest() != shard.sha256:
        raise HelioError(f"{shard.path}: damaged: its tensors do not match the sha256 recorded when it was written")
    return data_start + entries["images"]["data_offsets"][0]


def read_labels(folder: Path, index: dict[str, Any]) -> torch.Tensor:
    """Every label of the split, in order (8 bytes an image: small beside the images)."""
    parts = []
    for entry in index["shards"]:
        path = folder / entry["file"]
        header, data_start = _header(path)
        begin, end = header["labels"]["data_offsets"]
        with open(path, "rb") as handle:
            parts.append(torch.frombuffer(bytearray(os.pread(handle.fileno(), end - begin, data_start + begin)),
                                          dtype=torch.int64))  # fmt: skip
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
