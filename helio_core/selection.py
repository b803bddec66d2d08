"""Stage `select_patches`: RDED patch selection (paper Eq. 6) and tiling into distilled images.

For each class: `candidates` random train images, `crops` random square crops of each (size //
factor), each crop scored by the observer teacher's cross-entropy on it (resized to full size); each
image keeps its best crop; the `ipc * factor^2` lowest-CE crops of the class are tiled factor x factor,
image i taking crops i, i + ipc, i + 2 ipc, ... in row-major order.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import RandomResizedCrop

from helio_core import artifacts, models
from helio_core.data import DataPaths, load_classes, load_split
from helio_core.distilled import DistilledPaths, save_grid
from helio_core.errors import HelioError
from helio_core.params import Params, SelectParams, as_dict
from helio_core.progress import progress_bar
from helio_core.runtime import CPU, Runtime, model_device
from helio_core.teachers import TeacherPaths


def random_square_crops(image: torch.Tensor, count: int, out_size: int, scale: list[float]) -> torch.Tensor:
    """`count` RandomResizedCrop crops (aspect ratio 1) of one float CHW image, each resized to out_size."""
    crops = []
    for _ in range(count):
        top, left, height, width = RandomResizedCrop.get_params(image, scale=scale, ratio=[1.0, 1.0])
        crops.append(TF.resized_crop(image, top, left, height, width, [out_size, out_size], antialias=True))
    return torch.stack(crops)


@torch.inference_mode()
def crop_losses(observer: nn.Module, crops: torch.Tensor, label: int, full_size: int, batch_size: int) -> torch.Tensor:
    """Cross-entropy of the observer on each crop (float NCHW in [0, 1]), crops resized to full size, computed
    on the observer's device."""
    device = model_device(observer)
    losses = []
    for chunk in crops.split(batch_size):
        chunk = chunk.to(device)
        if chunk.shape[-1] != full_size:
            chunk = F.interpolate(
                chunk, size=(full_size, full_size), mode="bilinear", antialias=True, align_corners=False
            )
        logits = observer(chunk.contiguous(memory_format=torch.channels_last))
        target = torch.full((len(chunk),), label, dtype=torch.int64, device=device)
        losses.append(F.cross_entropy(logits.float(), target, reduction="none").cpu())
    return torch.cat(losses)


def select_lowest_ce(losses: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From per-crop losses (images x crops): each image's best crop, then the `count` lowest images.

    Returns (image index, crop index), ordered by increasing loss (ties keep image order).
    """
    best, crop_index = losses.min(dim=1)
    order = torch.sort(best, stable=True).indices[:count]
    return order, crop_index[order]


def tile(patches: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """(ipc * factor^2, C, s, s) patches -> (ipc, C, factor*s, factor*s); image i, cell j gets patch i + j*ipc."""
    count, channels, side, _ = patches.shape
    if count != ipc * factor**2:
        raise ValueError(f"expected {ipc * factor**2} patches, got {count}")
    cells = patches.view(factor, factor, ipc, channels, side, side)  # [row, col, image]
    return cells.permute(2, 3, 0, 4, 1, 5).reshape(ipc, channels, factor * side, factor * side)


def distill_class(
    observer: nn.Module, images: torch.Tensor, label: int, params: SelectParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distilled uint8 images of one class and the observer loss of each patch (patches x ...)."""
    full_size = images.shape[-1]
    candidates = images[torch.randperm(len(images))[: params.candidates]].float() / 255
    crops = torch.stack(
        [
            random_square_crops(image, params.crops, full_size // params.factor, params.crop_scale)
            for image in candidates
        ]
    )
    losses = crop_losses(observer, crops.flatten(0, 1), label, full_size, params.batch_size).view(len(candidates), -1)
    image_index, crop_index = select_lowest_ce(losses, params.patches_per_class)
    patches = crops[image_index, crop_index]
    distilled = tile((patches * 255).round().clamp(0, 255).to(torch.uint8), params.ipc, params.factor)
    return distilled, losses[image_index, crop_index].view(params.factor**2, params.ipc).T


def observer_path(teacher_paths: TeacherPaths, epoch: int | None) -> Path:
    """The checkpoint of `epoch`, or of the last kept epoch when None."""
    if epoch is not None:
        path = teacher_paths.checkpoint(epoch)
        if not path.is_file():
            raise HelioError(f"select.observer_epoch={epoch}: {path} not found (is it in teachers.keep?)")
        return path
    return teacher_paths.last_kept()


def run_select_patches(
    params: Params,
    paths: DistilledPaths = DistilledPaths(),
    teacher_paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    runtime: Runtime = CPU,
) -> dict:
    """Select and tile patches for every class; write PNGs, labels.json and the grid picture."""
    runtime.require_single("select_patches")
    select = params.select
    classes, class_hash = load_classes(data_paths.classes)
    train, _ = load_split(data_paths.train, class_hash)
    checkpoint = observer_path(teacher_paths, select.observer_epoch)
    observer, observer_meta = models.load_checkpoint(checkpoint)
    if observer_meta.get("classes_sha256") != class_hash:
        raise HelioError(f"{checkpoint}: teacher made for another class list than {data_paths.classes}")
    observer = observer.to(runtime.device, memory_format=torch.channels_last)
    torch.manual_seed(params.seed)
    entries, distilled = [], []
    with progress_bar() as bar:
        task = bar.add_task("select patches", total=len(classes), status="")
        for label, name in enumerate(classes):
            members = train.images[train.labels == label]
            if len(members) < select.patches_per_class:
                raise HelioError(
                    f"select.ipc={select.ipc} needs {select.patches_per_class} images of class {name!r}; "
                    f"{data_paths.train} holds {len(members)}"
                )
            images, losses = distill_class(observer, members, label, select)
            distilled.append(images)
            for k in range(select.ipc):
                patch_ce = [round(v, 5) for v in losses[k].tolist()]
                entries.append(
                    {"file": paths.image_name(label, k), "label": label, "class": name, "patch_ce": patch_ce}
                )
            bar.update(task, advance=1, status=name)
    record = artifacts.provenance(
        "select_patches",
        {"seed": params.seed, "select": as_dict(select)},
        {"train": data_paths.train, "observer": checkpoint},
    )
    with artifacts.atomic_path(paths.folder) as folder:
        (folder / "images").mkdir(parents=True)
        for entry, image in zip(entries, torch.cat(distilled), strict=True):
            artifacts.write_png(folder / entry["file"], image)
        labels = {
            "classes": classes,
            "classes_sha256": class_hash,
            "ipc": select.ipc,
            "factor": select.factor,
            "observer_epoch": observer_meta["epoch"],
            "images": entries,
            "provenance": record,
        }
        artifacts.write_json(folder / "labels.json", labels)
    save_grid(paths.grid, torch.cat(distilled), select.ipc)
    mean_ce = sum(sum(e["patch_ce"]) for e in entries) / (len(entries) * select.factor**2)
    return {"images": len(entries), "observer_epoch": observer_meta["epoch"], "mean_patch_ce": mean_ce}
