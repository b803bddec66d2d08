"""Artifact I/O: safetensors with a JSON metadata record, JSON, lossless PNG, hashes, atomic writes.

Every writer goes through a temporary name in the target's folder and renames at the end, so a killed
stage never leaves a half-written file where a later stage reads. Every reader turns a missing or
damaged file into a one-line HelioError naming the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import helio_core
from helio_core.errors import HelioError

FORMAT_VERSION = 1
_META_KEY = "helio"
_DIGEST_KEY = "tensors_sha256"  # added to the metadata record on write, taken out on read


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hash of the canonical JSON text of a value (sorted keys, no spaces)."""
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def sha256_tree(path: str | Path) -> str:
    """One hash for a file or a folder (names and contents of every file under it, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    entries = {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return sha256_json(entries)


def provenance(stage: str, params: Mapping[str, Any], inputs: Mapping[str, str | Path]) -> dict[str, Any]:
    """What produced an artifact: stage, params, the sha256 of each input, and the software versions."""
    return {
        "stage": stage,
        "format_version": FORMAT_VERSION,
        "helio_version": helio_core.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "params": dict(params),
        "inputs": {name: sha256_tree(path) for name, path in inputs.items()},
    }


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` (file or folder); rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = temporary / target.name
    try:
        yield staged
        if not staged.exists():
            raise RuntimeError(f"nothing was written to {staged}")
        if staged.is_file():
            staged.chmod(0o644)  # some writers (safetensors) create 0600 files; artifacts are shared
        if target.is_dir() and not target.is_symlink():
            retired = temporary / (target.name + ".old")
            os.replace(target, retired)
        os.replace(staged, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """One hash over the names, dtypes, shapes and bytes of tensors, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Write tensors as safetensors with `metadata` and the tensors' sha256 as one JSON record in the header
    (one key: safetensors writes several header keys in an unspecified order, and files must be byte-stable)."""
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    header = {_META_KEY: json.dumps({**metadata, _DIGEST_KEY: tensors_sha256(tensors)}, sort_keys=True)}
    with atomic_path(path) as staged:
        save_file(tensors, str(staged), header)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata record of a helio safetensors file, without reading its tensors."""
    metadata = _read_record(path)
    metadata.pop(_DIGEST_KEY, None)
    return metadata


def _read_record(path: str | Path) -> dict[str, Any]:
    path = _existing(path)
    try:
        with open(path, "rb") as handle:
            size_bytes = handle.read(8)
            if len(size_bytes) < 8:
                raise ValueError("file shorter than a safetensors header")
            size = int.from_bytes(size_bytes, "little")
            if size > 100_000_000:
                raise ValueError("header size out of range")
            header = json.loads(handle.read(size))
        metadata = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as error:
        raise HelioError(f"{path}: not a helio safetensors file ({error})") from None
    if not isinstance(metadata, dict):
        raise HelioError(f"{path}: not a helio safetensors file (its metadata record is not a JSON object)")
    return metadata


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a helio safetensors file, checked against the recorded sha256 when there is one
    (files written before it was recorded have none)."""
    metadata = _read_record(path)
    recorded = metadata.pop(_DIGEST_KEY, None)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise HelioError(f"{path}: corrupt or truncated safetensors file ({error})") from None
    if recorded is not None and tensors_sha256(tensors) != recorded:
        raise HelioError(f"{path}: damaged: its tensors do not match the sha256 recorded when it was written")
    return tensors, metadata


def write_json(path: str | Path, value: Any) -> None:
    with atomic_path(path) as staged:
        staged.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = _existing(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise HelioError(f"{path}: not valid JSON ({error})") from None


def write_png(path: str | Path, image: torch.Tensor) -> None:
    """Write a uint8 CHW tensor (1 or 3 channels) as a lossless PNG (not atomic: use inside atomic_path)."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 CHW image with 1 or 3 channels, got {image.dtype} {tuple(image.shape)}")
    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path, format="PNG")


def read_png(path: str | Path) -> torch.Tensor:
    """A PNG as a uint8 CHW tensor, grey images with one channel."""
    path = _existing(path)
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB"))
    except OSError as error:
        raise HelioError(f"{path}: not a readable PNG image ({error})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise HelioError(f"{path}: file not found (run the stage that makes it: `dvc repro`)")
    return path
