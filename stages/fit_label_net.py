"""Stage `fit_label_net`: a small network distilled from the teacher(s) on student-style views of the train split
(and, for `label_net.stream_share` of each batch, of the refined images it will label)
-> artifacts/label_net/label_net.safetensors (label mode `label_net`), measured as written against its target on
held-out val images -> metrics/label_net.json.

Under torchrun every rank trains on its shard of each batch (DDP); rank 0 writes the file and the metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from helio_core import artifacts
from helio_core.data.distilled import load_distilled
from helio_core.data.splits import ImageSet, Rows, load_classes, load_split
from helio_core.methods.label_net_fit import distil, label_fidelity
from helio_core.models.checkpoints import load_teacher
from helio_core.models.label_net import LabelNet, LabelNetSpec, load_label_net, save_label_net
from helio_core.params import Params, as_dict
from helio_core.progress import SILENT, Progress
from helio_core.runtime import CPU, Runtime
from helio_core.training.engine import predict_logits
from helio_core.training.labels import Batches, joined_views, labelled_views
from helio_core.training.losses import combine_teachers
from helio_core.workspace import Workspace


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    started = time.perf_counter()
    config = params.label_net
    classes, class_hash = load_classes(workspace.classes)
    train, train_meta = load_split(workspace.split("train"), classes)
    val, _ = load_split(workspace.split("val"), classes)
    listed = config.teachers
    files = (
        [workspace.last_teacher()] if listed == "last" else workspace.teacher_checkpoints(listed, "label_net.teachers")
    )
    teachers = [load_teacher(file, class_hash, runtime.device)[0] for file in files]
    combine = partial(combine_teachers, target=config.target, temperature=config.temperature)
    generator = torch.Generator().manual_seed(params.seed)
    fit_index = torch.randperm(len(train.labels), generator=generator)[: config.train_images]
    val_index = torch.randperm(len(val.labels), generator=generator)[: config.eval_images]
    with runtime.autocast():
        val_targets = combine([predict_logits(teacher, val.images[val_index]) for teacher in teachers])
    held_out = (val.images[val_index], val_targets, val.labels[val_index])
    torch.manual_seed(params.seed)
    spec = LabelNetSpec(config.arch, tuple(config.widths), train.images.shape[1], len(classes))
    net = LabelNet(spec, train_meta["mean"], train_meta["std"]).to(runtime.device, memory_format=torch.channels_last)
    fit_set = ImageSet(Rows(train.images, fit_index), train.labels[fit_index], classes)  # read a batch at a time
    batches, steps = _fit_views(params, workspace, fit_set, teachers, class_hash, combine, runtime)
    fit_started = time.perf_counter()
    history = distil(net, batches, steps, held_out, config, generator, runtime, progress)
    fit_seconds = time.perf_counter() - fit_started
    if not runtime.is_main:
        return {}
    record = artifacts.provenance(
        "fit_label_net",
        {"seed": params.seed, "label_net": as_dict(config), "student": as_dict(params.student),
         "student_crop_scale": params.student_crop_scale, "runtime": runtime.record()},
        {"train": workspace.split_index("train"), **{file.stem: file for file in files},
         **({"refined": workspace.refined} if config.stream_share else {})},
    )  # fmt: skip
    extra = {"teacher_epochs": [int(file.stem.split("_")[1]) for file in files], "provenance": record}
    with artifacts.atomic_path(workspace.label_net.parent) as folder:
        folder.mkdir()
        size = save_label_net(folder / workspace.label_net.name, net, classes, class_hash, extra, config.dtype)
    shipped, metadata = load_label_net(workspace.label_net, class_hash)
    teacher_bytes = workspace.last_teacher().stat().st_size
    metrics = {
        "eval_images": len(val_index),
        "history": history,
        "shipped": label_fidelity(shipped.to(runtime.device), held_out, config.temperature, runtime),
        "fit_seconds": round(fit_seconds, 1),
        "stored_parameters": metadata["stored_parameters"],
        "dtype": config.dtype,
        "label_net_bytes": size,
        "teacher_checkpoint_bytes": teacher_bytes,
        "teacher_to_label_net_ratio": round(teacher_bytes / size, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    artifacts.write_json(workspace.label_net_metrics, metrics)
    return metrics


def _fit_views(
    params: Params, workspace: Workspace, train: ImageSet, teachers: list[nn.Module], class_hash: str,
    combine: Callable[[list[torch.Tensor]], torch.Tensor], runtime: Runtime,
) -> tuple[Batches, int]:  # fmt: skip
    """Student-style views of the train images labelled by the teachers' `combine`d target, and the steps of one pass
    over them. With a `stream_share`, that share of each batch is views of the refined images, drawn as the
    students draw them: the label network practises on the images it will label."""
    config = params.label_net
    stream_size, train_size = config.stream_batch_size, config.batch_size - config.stream_batch_size

    def views(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Batches:
        return labelled_views(images, labels, teachers, len(train.classes), params.student, params.student_crop_scale,
                              batch_size, combine, runtime)  # fmt: skip

    train_views = views(train.images, train.labels, train_size)
    steps = math.ceil(len(train.labels) / train_size)
    if not stream_size:
        return train_views, steps
    return joined_views(train_views, views(*load_distilled(workspace.refined, class_hash), stream_size)), steps


def summary(metrics: dict) -> list[str]:
    shipped = metrics["shipped"]
    return [
        f"label network: {metrics['label_net_bytes']:,} bytes ({metrics['dtype']}), "
        f"{metrics['teacher_to_label_net_ratio']}x smaller than a teacher checkpoint",
        f"on {metrics['eval_images']} val images: KL·T² {shipped['kl']:.4f} to its target, "
        f"agreement {shipped['agreement']:.4f}, accuracy {shipped['acc']:.4f} (target {shipped['teacher_acc']:.4f})",
    ]
