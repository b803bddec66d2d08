"""Stage `select_patches`: RDED patch selection with the observer teacher -> artifacts/distilled/{images/*.png,
labels.json} and plots/distilled_grid.png; on the `random` arm of the workspace (experiments/fair/dvc.yaml,
select.method random), the random baseline's images under artifacts/random/ and plots/random/."""

from __future__ import annotations

import torch

from helio_core import artifacts
from helio_core.data.distilled import save_grid, write_distilled
from helio_core.data.splits import load_classes, load_split
from helio_core.errors import HelioError
from helio_core.methods.selection import distill
from helio_core.models.checkpoints import load_teacher
from helio_core.params import Params, as_dict
from helio_core.progress import SILENT, Progress
from helio_core.runtime import CPU, Runtime
from helio_core.workspace import Workspace


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    runtime.require_single("select_patches")
    select = params.select
    classes, class_hash = load_classes(workspace.classes)
    train, _ = load_split(workspace.split("train"), classes)
    for label, name in enumerate(classes):
        members = int((train.labels == label).sum())
        if members < select.patches_per_class:
            raise HelioError(
                f"select.ipc={select.ipc} needs {select.patches_per_class} images of class {name!r}; "
                f"{workspace.split('train')} holds {members}"
            )
    if select.observer_epoch is None:
        checkpoint = workspace.last_teacher()
    else:
        checkpoint = workspace.teacher_checkpoints([select.observer_epoch], "select.observer_epoch")[0]
    observer, observer_meta = load_teacher(checkpoint, class_hash, runtime.device)
    torch.manual_seed(params.seed)
    images, entries = distill(observer, train, classes, select, progress)
    record = artifacts.provenance(
        "select_patches", {"seed": params.seed, "select": as_dict(select)},
        {"train": workspace.split_index("train"), "observer": checkpoint},
    )  # fmt: skip
    labels = {
        "classes": classes,
        "classes_sha256": class_hash,
        "ipc": select.ipc,
        "factor": select.factor,
        "observer_epoch": observer_meta["epoch"],
        "images": entries,
        "provenance": record,
    }
    write_distilled(workspace.distilled, images, labels)
    save_grid(workspace.distilled_grid, images, select.ipc)
    mean_ce = sum(sum(e["patch_ce"]) for e in entries) / (len(entries) * select.factor**2)
    return {"images": len(entries), "observer_epoch": observer_meta["epoch"], "mean_patch_ce": mean_ce}


def summary(metrics: dict) -> list[str]:
    return [f"{metrics['images']} distilled images, observer epoch {metrics['observer_epoch']}"]
