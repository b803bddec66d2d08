"""A distilled set on disk: lossless PNGs in images/ plus labels.json (their files, labels and class list).

`select_patches` writes one, `refine_images` writes its refined copy in the same layout; students, the
projector's prototype head and `helio label` read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from helio_core import artifacts
from helio_core.errors import HelioError


def image_name(label: int, index: int) -> str:
    """The labels.json entry of image `index` of class `label`: a path inside the set's folder."""
    return f"images/{label}_{index}.png"


def write_distilled(target: Path, images: torch.Tensor, record: dict[str, Any]) -> None:
    """The set's folder, written atomically: each uint8 image as the PNG its labels.json entry names."""
    with artifacts.atomic_path(target) as folder:
        (folder / "images").mkdir(parents=True)
        for entry, image in zip(record["images"], images, strict=True):
            artifacts.write_png(folder / entry["file"], image)
        artifacts.write_json(folder / "labels.json", record)


def read_record(folder: Path) -> dict[str, Any]:
    return artifacts.read_json(folder / "labels.json")


def _image_file(folder: Path, name: str) -> Path:
    """A labels.json entry's file, which must stay inside the distilled folder."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(name)
    return folder / relative


def _label(value: object) -> int:
    """A class index as JSON writes one: an integer, not a float or bool, within int32."""
    if type(value) is not int or not 0 <= value < 2**31:
        raise ValueError(value)
    return value


def load_distilled(folder: Path, expected_classes_sha256: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The distilled images (uint8, in labels.json order) and their labels, checked against the class list."""
    labels_file = folder / "labels.json"
    record = artifacts.read_json(labels_file)
    try:
        entries, class_hash = record["images"], record["classes_sha256"]
        files, labels = [_image_file(folder, e["file"]) for e in entries], [_label(e["label"]) for e in entries]
    except (KeyError, TypeError, ValueError):
        expected = "'images' entries with 'file' (inside its folder) and 'label' (a class index), and 'classes_sha256'"
        raise HelioError(f"{labels_file}: expected {expected}") from None
    if class_hash != expected_classes_sha256:
        raise HelioError(f"{labels_file}: distilled images made for another class list")
    present = len(list((folder / "images").glob("*.png")))
    if present != len(files):
        raise HelioError(f"{labels_file}: lists {len(files)} images but {folder / 'images'} holds {present} PNGs")
    if not files:
        raise HelioError(f"{labels_file}: lists no images")
    images = [artifacts.read_png(file) for file in files]
    for file, image in zip(files, images, strict=True):
        if image.shape != images[0].shape:
            raise HelioError(f"{file}: image is {tuple(image.shape)}, expected {tuple(images[0].shape)} as {files[0]}")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def save_grid(path: Path, images: torch.Tensor, per_row: int) -> None:
    """One picture of the distilled set: a row per class, upscaled for small images."""
    grid = make_grid(images.float() / 255, nrow=per_row, padding=2, pad_value=1.0)
    scale = max(1, 64 // images.shape[-1])
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    with artifacts.atomic_path(path) as staged:
        artifacts.write_png(staged, (grid * 255).round().to(torch.uint8))
