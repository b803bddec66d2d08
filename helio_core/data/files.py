"""Image files decoded on demand: an ImageFolder split is a list of paths until `prepare` writes it, so a split of
any size passes through in batches decoded by worker processes (torch's DataLoader), never whole in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from helio_core.errors import HelioError


def load_square(path: Path, size: int) -> torch.Tensor:
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


class _Decoded(Dataset):
    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> torch.Tensor | str:
        """The image, or the one-line error for the main process to raise (a worker's exception arrives there
        wrapped in its traceback)."""
        try:
            return load_square(self.paths[position], self.size)
        except HelioError as error:
            return str(error)


class ImageFiles:
    """RGB image files as `size`×`size` uint8 images. Indexing selects files (lazily, like a view); `split` decodes
    consecutive chunks in `workers` processes, in order."""

    def __init__(self, paths: list[Path], size: int, workers: int = 0) -> None:
        self.paths, self.size, self.workers = paths, size, workers
        self.shape = torch.Size((len(paths), 3, size, size))
        self.dtype = torch.uint8

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: slice | torch.Tensor | list[int]) -> ImageFiles:
        positions = torch.arange(len(self.paths))[index].reshape(-1).tolist()
        return ImageFiles([self.paths[p] for p in positions], self.size, self.workers)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive chunks of `size` decoded images (as Tensor.split, lazily)."""
        loader = DataLoader(_Decoded(self.paths, self.size), batch_size=size, num_workers=self.workers,
                            collate_fn=list)  # fmt: skip
        for batch in loader:
            failed = next((item for item in batch if isinstance(item, str)), None)
            if failed is not None:
                raise HelioError(failed)
            yield torch.stack(batch)
