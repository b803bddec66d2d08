"""Raw data sources behind one interface (`data.name`): Debian's idx files, CIFAR python batches, an
ImageFolder tree, generated classes. Each returns a train and a test `ImageSet` (uint8 NCHW images, int64
labels, ordered class names), in the order the source fixes (label indices, sorted folder names). An ImageFolder's
images are its files, decoded at `data.size` when `prepare` writes them (helio_core/data/files.py).
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from helio_core.data.files import ImageFiles
from helio_core.data.splits import ImageSet, cap_per_class
from helio_core.errors import HelioError
from helio_core.params import DataParams
from helio_core.progress import SILENT, Progress

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_ROOTS = ("/usr/share/datasets/fashion-mnist", "/usr/local/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


Source = Callable[[DataParams, int, Progress], tuple[ImageSet, ImageSet]]


def load_source(params: DataParams, seed: int, progress: Progress = SILENT) -> tuple[ImageSet, ImageSet]:
    """Train and test splits of `params.name` at their native resolution, capped per class."""
    train, test = SOURCES[params.name](params, seed, progress)
    generator = torch.Generator().manual_seed(seed)
    return cap_per_class(train, params.train_per_class, generator), cap_per_class(
        test, params.test_per_class, generator
    )


def _idx_source(classes: list[str], default_roots: tuple[str, ...], label: str) -> Source:
    def load(params: DataParams, seed: int, progress: Progress) -> tuple[ImageSet, ImageSet]:
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


def _load_cifar10(params: DataParams, seed: int, progress: Progress) -> tuple[ImageSet, ImageSet]:
    root = _find_root(params, (), "the cifar-10-batches-py folder")
    classes = list(_read_cifar_batch(root / "batches.meta")["label_names"])
    train = _cifar_split([root / f"data_batch_{i}" for i in range(1, 6)], "labels", classes)
    return train, _cifar_split([root / "test_batch"], "labels", classes)


def _load_cifar100(params: DataParams, seed: int, progress: Progress) -> tuple[ImageSet, ImageSet]:
    root = _find_root(params, (), "the cifar-100-python folder")
    classes = list(_read_cifar_batch(root / "meta")["fine_label_names"])
    return _cifar_split([root / "train"], "fine_labels", classes), _cifar_split([root / "test"], "fine_labels", classes)


def _load_imagefolder(params: DataParams, seed: int, progress: Progress) -> tuple[ImageSet, ImageSet]:
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
    for split, cap in (("train", params.train_per_class), ("val", params.test_per_class)):
        task = progress.task(f"list {split}/", total=len(classes))
        paths, labels = [], []
        for label, folder in enumerate(splits[split]):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise HelioError(f"{folder}: empty class folder (no image files)")
            if cap is not None and len(files) > cap:
                files = [files[i] for i in sorted(torch.randperm(len(files), generator=generator)[:cap].tolist())]
            paths += files
            labels += [label] * len(files)
            task.advance(status=folder.name)
        images = ImageFiles(paths, params.size, params.decode_workers)
        loaded.append(ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes))
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


def _load_synthetic(params: DataParams, seed: int, progress: Progress) -> tuple[ImageSet, ImageSet]:
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


SOURCES: dict[str, Source] = {
    "fashion-mnist": _idx_source(FASHION_MNIST_CLASSES, FASHION_MNIST_ROOTS, "Fashion-MNIST"),
    "mnist": _idx_source(MNIST_CLASSES, (), "a folder with the MNIST idx files"),
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagefolder": _load_imagefolder,
    "synthetic": _load_synthetic,
}
