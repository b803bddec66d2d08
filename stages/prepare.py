"""Stage `prepare`: the raw data set (`data.name`) -> artifacts/data/{train,val,test}/ (shards of uint8 images at
`data.size`, helio_core/data/shards.py) and classes.json, with a validation split held out of train. A split passes
through a shard at a time, so its size is bounded by the disk, not by memory."""

from __future__ import annotations

import torch

from helio_core import artifacts
from helio_core.data.sources import load_source
from helio_core.data.splits import classes_sha256, split_off, write_classes, write_split
from helio_core.params import Params, as_dict
from helio_core.progress import SILENT, Progress
from helio_core.runtime import CPU, Runtime
from helio_core.workspace import Workspace


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    runtime.require_single("prepare")
    data = params.data
    train, test = load_source(data, params.seed, progress)
    train, val = split_off(train, data.val_images, torch.Generator().manual_seed(params.seed))
    class_hash = classes_sha256(train.classes)
    record = artifacts.provenance("prepare", {"seed": params.seed, "data": as_dict(data)}, {})
    stats = None  # the train split's, gathered as it is written; val and test are normalised with them
    with artifacts.atomic_path(workspace.data) as folder:
        folder.mkdir()
        for split_name, split in (("train", train), ("val", val), ("test", test)):
            metadata = {"split": split_name, "source": data.name, "classes_sha256": class_hash, "provenance": record}
            task = progress.task(f"write {split_name}", total=len(split.labels))
            stats = write_split(folder / workspace.split(split_name).name, split, data.size, metadata, stats,
                                on_batch=task.advance)  # fmt: skip
            task.finish()
        write_classes(folder / workspace.classes.name, train.classes, record)
    return {
        "train": len(train.labels),
        "val": len(val.labels),
        "test": len(test.labels),
        "classes": len(train.classes),
        "shape": [train.images.shape[1], data.size, data.size],
    }


def summary(metrics: dict) -> list[str]:
    return [
        f"prepared {metrics['train']} train / {metrics['val']} val / {metrics['test']} test images, "
        f"{metrics['classes']} classes"
    ]
