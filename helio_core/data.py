"""Data sources behind one interface, and the `prepare` stage that writes them as uint8 tensors.

Every source returns a train and a test `ImageSet` (uint8 NCHW images, int64 labels, ordered class
names). Class order is fixed by the source (the idx/CIFAR label indices, sorted folder names for
ImageFolder) and recorded with its sha256 in classes.json, so every later artifact can be checked
against the class list it was made for.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from helio_core import artifacts
from helio_core.errors import HelioError
from helio_core.params import DataParams, Params, as_dict
from helio_core.progress import progress_bar

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_ROOTS = ("/usr/share/datasets/fashion-mnist", "/usr/local/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]


@dataclass(frozen=True)
class DataPaths:
    folder: Path = Path("artifacts/data")

    @property
    def train(self) -> Path:
        return self.folder / "train.safetensors"

    @property
    def val(self) -> Path:
        return self.folder / "val.safetensors"

    @property
    def test(self) -> Path:
        return self.folder / "test.safetensors"

    @property
    def classes(self) -> Path:
        return self.folder / "classes.json"


def classes_sha256(classes: list[str]) -> str:
    return artifacts.sha256_json(classes)


def load_source(params: DataParams, seed: int) -> tuple[ImageSet, ImageSet]:
    """Train and test splits of `params.name` at their native resolution, capped per class."""
    loader = SOURCES[params.name]
    train, test = loader(params, seed)
    generator = torch.Generator().manual_seed(seed)
    return cap_per_class(train, params.train_per_class, generator), cap_per_class(
        test, params.test_per_class, generator
    )


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


def run_prepare(params: Params, paths: DataPaths = DataPaths()) -> dict:
    """Stage `prepare`: load the source, resize, hold out a validation split of train, write
    train/val/test safetensors and classes.json."""
    data = params.data
    train, test = load_source(data, params.seed)
    train = ImageSet(resize(train.images, data.size), train.labels, train.classes)
    test = ImageSet(resize(test.images, data.size), test.labels, test.classes)
    train, val = split_off(train, data.val_images, torch.Generator().manual_seed(params.seed))
    mean, std = channel_stats(train.images)
    class_hash = classes_sha256(train.classes)
    record = artifacts.provenance("prepare", {"seed": params.seed, "data": as_dict(data)}, {})
    with artifacts.atomic_path(paths.folder) as folder:
        folder.mkdir()
        staged = DataPaths(folder)
        splits = (("train", train, staged.train), ("val", val, staged.val), ("test", test, staged.test))
        for split_name, split, target in splits:
            metadata = {
                "kind": "dataset-split",
                "split": split_name,
                "source": data.name,
                "classes_sha256": class_hash,
                "mean": mean,
                "std": std,
                "provenance": record,
            }
            artifacts.save_tensors(target, {"images": split.images, "labels": split.labels}, metadata)
        artifacts.write_json(staged.classes, {"classes": train.classes, "sha256": class_hash, "provenance": record})
    return {
        "train": len(train.labels),
        "val": len(val.labels),
        "test": len(test.labels),
        "classes": len(train.classes),
        "shape": train.images.shape[1:],
    }


def load_split(path: Path, expected_classes_sha256: str | None = None) -> tuple[ImageSet, dict]:
    """A prepared split and its metadata, checked against a class-list hash when one is given."""
    tensors, metadata = artifacts.load_tensors(path)
    if metadata.get("kind") != "dataset-split" or set(tensors) != {"images", "labels"}:
        raise HelioError(f"{path}: not a prepared data split (expected images and labels written by `prepare`)")
    if expected_classes_sha256 is not None and metadata["classes_sha256"] != expected_classes_sha256:
        raise HelioError(f"{path}: made for another class list (classes sha256 {metadata['classes_sha256'][:12]}…)")
    return ImageSet(tensors["images"], tensors["labels"], []), metadata


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


# ---- sources -----------------------------------------------------------------------------------------


def _idx_source(classes: list[str], default_roots: tuple[str, ...], label: str) -> Callable:
    def load(params: DataParams, seed: int) -> tuple[ImageSet, ImageSet]:
        root = _find_root(params, default_roots, label)
        splits = []
        for prefix in ("train", "t10k"):
            images = read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"))
            labels = read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"))
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise HelioError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
            splits.append(
                ImageSet(
                    torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), classes
                )
            )
        return splits[0], splits[1]

    return load


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a uint8 array."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise HelioError(f"{path}: cannot read IDX file ({error})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise HelioError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise HelioError(f"{path}: truncated IDX header")
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - offset != int(np.prod(shape)):
        raise HelioError(
            f"{path}: truncated or oversized IDX data (header says {shape}, {len(raw) - offset} bytes follow)"
        )
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz", root / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    raise HelioError(f"{root}: missing {stem}[.gz]")


def _find_root(params: DataParams, default_roots: tuple[str, ...], label: str) -> Path:
    if params.root is not None:
        root = Path(params.root)
        if not root.is_dir():
            raise HelioError(f"data.root={params.root}: folder not found for data.name={params.name}")
        return root
    for candidate in default_roots:
        if Path(candidate).is_dir():
            return Path(candidate)
    if not default_roots:
        raise HelioError(f"data.root must be set for data.name={params.name} ({label})")
    raise HelioError(
        f"{label} not found in {', '.join(default_roots)}: "
        "install it (apt-get install dataset-fashion-mnist) or set data.root"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python batches (dicts of lists and numpy arrays) and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle protocol)
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise HelioError(f"{path}: missing CIFAR batch file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise HelioError(f"{path}: not a CIFAR python batch ({error})") from None
    if not isinstance(batch, dict):
        raise HelioError(f"{path}: not a CIFAR python batch (expected a dict)")
    return batch


def _cifar_split(files: list[Path], label_key: str, classes: list[str]) -> ImageSet:
    images, labels = [], []
    for path in files:
        batch = _read_cifar_batch(path)
        try:
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError) as error:
            raise HelioError(f"{path}: unexpected CIFAR batch content ({error})") from None
    return ImageSet(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes)


def _load_cifar10(params: DataParams, seed: int) -> tuple[ImageSet, ImageSet]:
    root = _find_root(params, (), "the cifar-10-batches-py folder")
    classes = list(_read_cifar_batch(root / "batches.meta")["label_names"])
    train = _cifar_split([root / f"data_batch_{i}" for i in range(1, 6)], "labels", classes)
    return train, _cifar_split([root / "test_batch"], "labels", classes)


def _load_cifar100(params: DataParams, seed: int) -> tuple[ImageSet, ImageSet]:
    root = _find_root(params, (), "the cifar-100-python folder")
    classes = list(_read_cifar_batch(root / "meta")["fine_label_names"])
    return _cifar_split([root / "train"], "fine_labels", classes), _cifar_split([root / "test"], "fine_labels", classes)


def _load_imagefolder(params: DataParams, seed: int) -> tuple[ImageSet, ImageSet]:
    """root/train/<class>/* and root/val/<class>/*; classes in sorted folder-name order (torchvision's)."""
    root = _find_root(params, (), "an ImageFolder root with train/ and val/")
    splits = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise HelioError(f"{folder}: missing; an ImageFolder root needs train/ and val/ class folders")
        splits[split] = sorted(p for p in folder.iterdir() if p.is_dir())
        if not splits[split]:
            raise HelioError(f"{folder}: no class folders")
    folders = [p.name for p in splits["train"]]
    if [p.name for p in splits["val"]] != folders:
        raise HelioError(f"{root / 'val'}: class folders differ from {root / 'train'}")
    classes = folders if params.class_names is None else read_class_names(Path(params.class_names), folders)
    generator = torch.Generator().manual_seed(seed)
    loaded = []
    with progress_bar() as bar:
        for split, cap in (("train", params.train_per_class), ("val", params.test_per_class)):
            task = bar.add_task(f"read {split}/", total=len(classes), status="")
            images, labels = [], []
            for label, folder in enumerate(splits[split]):
                files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise HelioError(f"{folder}: empty class folder (no image files)")
                if cap is not None and len(files) > cap:
                    files = [files[i] for i in sorted(torch.randperm(len(files), generator=generator)[:cap].tolist())]
                images += [_load_square(path, params.size) for path in files]
                labels += [label] * len(files)
                bar.update(task, advance=1, status=folder.name)
            loaded.append(ImageSet(torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes))
    return loaded[0], loaded[1]


def read_class_names(path: Path, folders: list[str]) -> list[str]:
    """Each folder's class name from a file of `<folder> <name>[, synonym ...]` lines (the format of ImageNet's
    LOC_synset_mapping.txt): the first name, in folder order. Names must be distinct, so that the text head
    and the tables tell every class apart."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise HelioError(f"data.class_names={path}: cannot read it ({error})") from None
    names = {}
    for number, line in enumerate(lines, 1):
        folder, _, words = line.strip().partition(" ")
        name = words.split(",")[0].strip()
        if folder and not name:
            raise HelioError(f"{path}:{number}: expected '<folder> <class name>', got {line.strip()!r}")
        if folder:
            names[folder] = name
    missing = [folder for folder in folders if folder not in names]
    if missing:
        raise HelioError(f"{path}: no name for class folder {missing[0]!r} ({len(missing)} folders unnamed)")
    classes = [names[folder] for folder in folders]
    seen: dict[str, str] = {}
    for folder, name in zip(folders, classes, strict=True):
        if name in seen:
            raise HelioError(f"{path}: {name!r} names two class folders, {seen[name]} and {folder}; give each its own")
        seen[name] = folder
    return classes


def _load_square(path: Path, size: int) -> torch.Tensor:
    """An RGB image with its shorter side resized to `size`, centre-cropped (the usual evaluation transform)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = size / min(image.size)
            width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (width - size) // 2, (height - size) // 2
            array = np.asarray(image.crop((left, top, left + size, top + size)))
    except OSError as error:
        raise HelioError(f"{path}: not a readable image ({error})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _load_synthetic(params: DataParams, seed: int) -> tuple[ImageSet, ImageSet]:
    """Learnable toy classes: each class is a smooth random template, samples are shifted noisy copies."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    size, channels, count = params.size, params.synthetic_channels, params.synthetic_classes
    coarse = torch.rand(count, channels, 4, 4, generator=generator)
    templates = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    classes = [f"class_{index}" for index in range(count)]

    def split(per_class: int) -> ImageSet:
        labels = torch.arange(count).repeat_interleave(per_class)
        shifts = torch.randint(-size // 8, size // 8 + 1, (len(labels), 2), generator=generator)
        images = torch.stack(
            [templates[y].roll(tuple(s.tolist()), dims=(1, 2)) for y, s in zip(labels, shifts, strict=True)]
        )
        images = images + 0.15 * torch.randn(images.shape, generator=generator)
        return ImageSet((images.clamp(0, 1) * 255).round().to(torch.uint8), labels, classes)

    return split(params.train_per_class), split(params.test_per_class)


SOURCES: dict[str, Callable[[DataParams, int], tuple[ImageSet, ImageSet]]] = {
    "fashion-mnist": _idx_source(FASHION_MNIST_CLASSES, FASHION_MNIST_ROOTS, "Fashion-MNIST"),
    "mnist": _idx_source(MNIST_CLASSES, (), "a folder with the MNIST idx files"),
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagefolder": _load_imagefolder,
    "synthetic": _load_synthetic,
}
