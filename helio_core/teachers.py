"""Stage `train_teachers`: one training trajectory from scratch; its kept checkpoints are the weak teachers.

The paper takes weak teachers from the early part of a single trajectory (section 3.3). An "epoch"
here is `teachers.epoch_images` images drawn without replacement from an endless shuffled stream of
the train split, so a short CPU trajectory can still keep ~9 evenly spaced checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helio_core import artifacts, augment, models
from helio_core.data import DataPaths, load_classes, load_split
from helio_core.errors import HelioError
from helio_core.params import Params, TeacherParams, as_dict
from helio_core.progress import progress_bar
from helio_core.runtime import CPU, Runtime, model_device, optimizer_step


@dataclass(frozen=True)
class TeacherPaths:
    folder: Path = Path("artifacts/teachers")
    metrics: Path = Path("metrics/teachers.json")

    def checkpoint(self, epoch: int, folder: Path | None = None) -> Path:
        return (folder or self.folder) / f"epoch_{epoch:03d}.safetensors"

    def last_kept(self) -> Path:
        """The latest kept checkpoint: the full teacher of RDED's label mode and the default observer."""
        kept = sorted(self.folder.glob("epoch_*.safetensors"))
        if not kept:
            raise HelioError(f"{self.folder}: no teacher checkpoints (run `dvc repro train_teachers`)")
        return kept[-1]


def load_teacher(path: Path, classes_sha256: str, device: torch.device = CPU.device) -> nn.Module:
    """A teacher checkpoint in eval mode and channels-last on `device`, checked against the class list."""
    teacher, metadata = models.load_checkpoint(path)
    if metadata.get("classes_sha256") != classes_sha256:
        raise HelioError(f"{path}: teacher made for another class list")
    return teacher.to(device, memory_format=torch.channels_last)


class ShuffledStream:
    """Indices 0..n-1 in a fresh seeded permutation per pass, served in chunks that may span passes."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator
        self.pending = torch.empty(0, dtype=torch.int64)

    def take(self, count: int) -> torch.Tensor:
        while len(self.pending) < count:
            self.pending = torch.cat([self.pending, torch.randperm(self.n, generator=self.generator)])
        chunk, self.pending = self.pending[:count], self.pending[count:]
        return chunk


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, params: TeacherParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay, fused=True)


def to_input(images: torch.Tensor, device: torch.device = CPU.device) -> torch.Tensor:
    """uint8 NCHW -> float in [0, 1] on `device` (converted there), channels-last (faster convolutions)."""
    return (images.to(device).float() / 255).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = 500, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """fp32 logits on the CPU of uint8 images, run on the model's device in eval mode (restored afterwards),
    under whatever autocast the caller set; `on_batch(n)` after each batch."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    logits = []
    for chunk in images.split(batch_size):
        logits.append(model(to_input(chunk, device)).float().cpu())
        if on_batch is not None:
            on_batch(len(chunk))
    model.train(was_training)
    return torch.cat(logits)


def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, on_batch: Callable[[int], None] | None = None
) -> float:
    return (predict_logits(model, images, on_batch=on_batch).argmax(1) == labels).float().mean().item()


def train_trajectory(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: TeacherParams,
    generator: torch.Generator,
    runtime: Runtime = CPU,
):
    """Train `model` in place; yield (epoch, step, steps per epoch, loss) after every step.

    Every rank draws and augments the same global batch and trains on its shard; DDP averages the gradients,
    so a batch size means the same thing on one process or many."""
    epoch_images = params.epoch_images or len(labels)
    steps_per_epoch = math.ceil(epoch_images / params.batch_size)
    total_steps = params.epochs * steps_per_epoch
    optimizer = make_optimizer(model, params)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, int(params.warmup * total_steps))
    )
    stream = ShuffledStream(len(labels), generator)
    parallel, scaler = runtime.parallel(model), runtime.grad_scaler()
    model.train()
    for epoch in range(1, params.epochs + 1):
        for step in range(steps_per_epoch):
            index = stream.take(min(params.batch_size, epoch_images - step * params.batch_size))
            batch = augment.random_crop(images[index].float() / 255, params.crop_padding, generator)
            if params.flip:
                batch = augment.random_flip(batch, generator)
            batch = runtime.to_device(runtime.shard(batch)).contiguous(memory_format=torch.channels_last)
            with runtime.autocast():
                logits = parallel(batch)
            target = runtime.to_device(runtime.shard(labels[index]))
            loss = F.cross_entropy(logits.float(), target, label_smoothing=params.label_smoothing)
            optimizer_step(loss, optimizer, scaler)
            schedule.step()
            yield epoch, step + 1, steps_per_epoch, loss.item()


def run_train_teachers(
    params: Params,
    paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    runtime: Runtime = CPU,
) -> dict:
    """Train the trajectory, save the kept epochs, write validation accuracy per kept epoch to metrics
    (choices of teacher windows read it) and the last kept epoch's accuracy on the whole test split.
    Under torchrun every rank trains its shard of each batch; rank 0 scores, saves and writes metrics."""
    started = time.perf_counter()
    classes, class_hash = load_classes(data_paths.classes)
    train, train_meta = load_split(data_paths.train, class_hash)
    val, _ = load_split(data_paths.val, class_hash)
    test, _ = load_split(data_paths.test, class_hash)
    teacher = params.teachers
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    channels, size = train.images.shape[1], train.images.shape[-1]
    spec = {"arch": teacher.arch, "num_classes": len(classes), "in_channels": channels, "image_size": size}
    model = models.create_model(teacher.arch, len(classes), channels, size, train_meta["mean"], train_meta["std"])
    model = model.to(runtime.device, memory_format=torch.channels_last)
    record = artifacts.provenance(
        "train_teachers",
        {"seed": params.seed, "teachers": as_dict(teacher), "runtime": runtime.record()},
        {"train": data_paths.train},
    )
    eval_count = min(teacher.eval_images or len(val.labels), len(val.labels))
    eval_index = torch.randperm(len(val.labels), generator=torch.Generator().manual_seed(params.seed))[:eval_count]
    eval_images, eval_labels = val.images[eval_index], val.labels[eval_index]
    kept: dict[str, float] = {}
    trajectory = train_trajectory(model, train.images, train.labels, teacher, generator, runtime)
    with runtime.output(paths.folder) as folder, progress_bar(runtime.is_main) as bar:
        if folder is not None:
            folder.mkdir()
        task = bar.add_task("teacher trajectory", total=teacher.epochs, status="")
        for epoch, step, steps, loss in trajectory:
            bar.update(task, completed=epoch - 1 + step / steps, status=f"epoch {epoch} loss {loss:.3f}")
            if step < steps or epoch not in teacher.keep or folder is None:
                continue
            scoring = bar.add_task(f"score epoch {epoch}", total=eval_count, status="")
            with runtime.autocast():
                acc = accuracy(model, eval_images, eval_labels, partial(bar.advance, scoring))
            bar.remove_task(scoring)
            kept[str(epoch)] = round(acc, 5)
            bar.console.print(f"epoch {epoch}: validation accuracy {acc:.4f} on {eval_count} val images")
            metadata = {
                "epoch": epoch,
                "val_acc": acc,
                "val_images": eval_count,
                "classes_sha256": class_hash,
                "provenance": record,
            }
            models.save_checkpoint(paths.checkpoint(epoch, folder), model, spec, metadata)
        if folder is None:
            return {}
        last = max(teacher.keep)
        last_model, _ = models.load_checkpoint(paths.checkpoint(last, folder))
        scoring = bar.add_task(f"score epoch {last} on the full test split", total=len(test.labels), status="")
        with runtime.autocast():
            final_acc = accuracy(last_model.to(runtime.device), test.images, test.labels, partial(bar.advance, scoring))
    metrics = {
        "val_acc": kept,
        "val_images": eval_count,
        "last_epoch": last,
        "last_test_acc_full": round(final_acc, 5),
        "full_test_images": len(test.labels),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(paths.metrics, metrics)
    return metrics
