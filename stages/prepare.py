"""Stage `prepare`: the raw data set (`data.name`) -> artifacts/data/{train,val,test}.safetensors and classes.json,
uint8 at `data.size`, with a validation split held out of train."""

from __future__ import annotations

import torch

from helio_core import artifacts
from helio_core.data.sources import load_source
from helio_core.data.splits import (
    ImageSet,
    channel_stats,
    classes_sha256,
    resize,
    split_off,
    write_classes,
    write_split,
)
from helio_core.params import Params, as_dict
from helio_core.progress import SILENT, Progress
from helio_core.runtime import CPU, Runtime
from helio_core.workspace import Workspace


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    runtime.require_single("prepare")
    data = params.data
    train, test = load_source(data, params.seed, progress)
    train = ImageSet(resize(train.images, data.size), train.labels, train.classes)
    test = ImageSet(resize(test.images, data.size), test.labels, test.classes)
    train, val = split_off(train, data.val_images, torch.Generator().manual_seed(params.seed))
    mean, std = channel_stats(train.images)
    class_hash = classes_sha256(train.classes)
    record = artifacts.provenance("prepare", {"seed": params.seed, "data": as_dict(data)}, {})
    with artifacts.atomic_path(workspace.data) as folder:
        folder.mkdir()
        for split_name, split in (("train", train), ("val", val), ("test", test)):
            metadata = {"split": split_name, "source": data.name, "classes_sha256": class_hash, "mean": mean,
                        "std": std, "provenance": record}  # fmt: skip
            write_split(folder / workspace.split(split_name).name, split, metadata)
        write_classes(folder / workspace.classes.name, train.classes, record)
    return {
        "train": len(train.labels),
        "val": len(val.labels),
        "test": len(test.labels),
        "classes": len(train.classes),
        "shape": list(train.images.shape[1:]),
    }


def summary(metrics: dict) -> list[str]:
    return [
        f"prepared {metrics['train']} train / {metrics['val']} val / {metrics['test']} test images, "
        f"{metrics['classes']} classes"
    ]
