"""Stage `train_teachers`: one trajectory from scratch -> artifacts/teachers/epoch_XXX.safetensors for each kept
epoch, and metrics/teachers.json (validation accuracy per kept epoch, the last kept one on the whole test split).

Under torchrun every rank trains its shard of each batch (DDP); rank 0 scores, saves and writes the metrics."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from helio_core import artifacts
from helio_core.data.splits import ImageSet, load_classes, load_split
from helio_core.models.architectures import create_model
from helio_core.models.checkpoints import load_checkpoint, save_checkpoint
from helio_core.params import Params, as_dict
from helio_core.progress import SILENT, Progress
from helio_core.runtime import CPU, Runtime
from helio_core.training.engine import accuracy
from helio_core.training.teachers import train_trajectory
from helio_core.workspace import Workspace, teacher_file_name


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    started = time.perf_counter()
    classes, class_hash = load_classes(workspace.classes)
    train, train_meta = load_split(workspace.split("train"), classes)
    val, _ = load_split(workspace.split("val"), classes)
    test, _ = load_split(workspace.split("test"), classes)
    teacher = params.teachers
    torch.manual_seed(params.seed)
    channels, size = train.images.shape[1], train.images.shape[-1]
    spec = {"arch": teacher.arch, "num_classes": len(classes), "in_channels": channels, "image_size": size}
    model = create_model(teacher.arch, len(classes), channels, size, train_meta["mean"], train_meta["std"])
    model = model.to(runtime.device, memory_format=torch.channels_last)
    record = artifacts.provenance(
        "train_teachers",
        {"seed": params.seed, "teachers": as_dict(teacher), "runtime": runtime.record()},
        {"train": workspace.split_index("train")},
    )
    eval_count = min(teacher.eval_images or len(val.labels), len(val.labels))
    eval_index = torch.randperm(len(val.labels), generator=torch.Generator().manual_seed(params.seed))[:eval_count]
    checkpoint = {"spec": spec, "classes_sha256": class_hash, "provenance": record}
    with runtime.output(workspace.teachers) as folder:
        kept = _train_and_keep(model, train, ImageSet(val.images[eval_index], val.labels[eval_index], classes),
                               params, checkpoint, folder, runtime, progress)  # fmt: skip
        if folder is None:
            return {}
        last = max(teacher.keep)
        final_acc = _test_accuracy(folder / teacher_file_name(last), test, runtime, progress)
    metrics = {
        "val_acc": kept,
        "val_images": eval_count,
        "last_epoch": last,
        "last_test_acc_full": round(final_acc, 5),
        "full_test_images": len(test.labels),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(workspace.teachers_metrics, metrics)
    return metrics


def _train_and_keep(
    model: nn.Module, train: ImageSet, scored: ImageSet, params: Params, checkpoint: dict, folder: Path | None,
    runtime: Runtime, progress: Progress,
) -> dict[str, float]:  # fmt: skip
    """Train the trajectory; at the end of each kept epoch score the model on `scored` and save it into `folder`
    (None on ranks other than 0: they only train). Returns the validation accuracy per kept epoch."""
    teacher, kept = params.teachers, {}
    generator = torch.Generator().manual_seed(params.seed)
    task = progress.task("teacher trajectory", total=teacher.epochs)
    if folder is not None:
        folder.mkdir()
    for epoch, step, steps, loss in train_trajectory(model, train.images, train.labels, teacher, generator, runtime):
        if step < steps:
            task.update(epoch - 1 + step / steps)
            continue
        task.update(epoch, status=f"epoch {epoch} last loss {loss.item():.3f}")  # one host sync per epoch
        if epoch not in teacher.keep or folder is None:
            continue
        scoring = progress.task(f"score epoch {epoch}", total=len(scored.labels))
        with runtime.autocast():
            acc = accuracy(model, scored.images, scored.labels, scoring.advance)
        scoring.finish()
        kept[str(epoch)] = round(acc, 5)
        progress.note(f"epoch {epoch}: validation accuracy {acc:.4f} on {len(scored.labels)} val images")
        metadata = {"epoch": epoch, "val_acc": acc, "val_images": len(scored.labels),
                    "classes_sha256": checkpoint["classes_sha256"], "provenance": checkpoint["provenance"]}  # fmt: skip
        save_checkpoint(folder / teacher_file_name(epoch), model, checkpoint["spec"], metadata)
    return kept


def _test_accuracy(path: Path, test: ImageSet, runtime: Runtime, progress: Progress) -> float:
    """The accuracy of a saved checkpoint (the last kept epoch) on the whole test split."""
    model, metadata = load_checkpoint(path)
    task = progress.task(f"score epoch {metadata['epoch']} on the full test split", total=len(test.labels))
    with runtime.autocast():
        return accuracy(model.to(runtime.device), test.images, test.labels, task.advance)


def summary(metrics: dict) -> list[str]:
    return [f"last kept epoch {metrics['last_epoch']}: test accuracy {metrics['last_test_acc_full']:.4f}"]
