"""The figures and curves the evaluation stages write beside their tables: accuracy against storage, the
training curves (CSV for `dvc plots show`), the continual-learning curve."""

from __future__ import annotations

import csv
from pathlib import Path

from helio_core import artifacts

MODE_NAMES = {
    "projector": "projector (helio)",
    "label_net": "label network (distilled)",
    "teacher": "full teacher (RDED)",
    "stored": "stored labels (SRe2L/FKD)",
    "hard": "hard labels",
    "teachers": "weak teachers (projector's target)",
    "teacher_int8": "full teacher, int8 weights",
    "teacher_int4": "full teacher, int4 weights",
}


def write_curves(path: Path, rows: list[dict]) -> None:
    """Long-format CSV (run, epoch, train_loss, val_acc) for `dvc plots show`."""
    with artifacts.atomic_path(path) as staged, staged.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_accuracy_vs_storage(path: Path, summary: dict, images_bytes: int, ipc: int | None) -> None:
    """One point per (arch, label mode): final test accuracy (mean +- std over seeds) against the bytes a user
    must fetch to train the student (the images plus the label source)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for arch, modes in summary.items():
        for mode, row in modes.items():
            shipped = images_bytes + row["extra_storage_bytes"]
            axes.errorbar(shipped, 100 * row["acc"], yerr=100 * row["acc_std"], fmt="o", capsize=3)
            axes.annotate(f"{MODE_NAMES[mode]}, {arch}", (shipped, 100 * row["acc"]), textcoords="offset points",
                          xytext=(6, 4), fontsize=8)  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("bytes to ship: distilled PNGs + label source (log scale)")
    axes.set_ylabel("student test accuracy, final epoch (%)")
    images = "the whole train split" if ipc is None else f"IPC {ipc}"
    axes.set_title(f"{images}: accuracy vs storage (mean ± std over seeds)")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    with artifacts.atomic_path(path) as staged:
        figure.savefig(staged, format="png")
    plt.close(figure)


def plot_continual(path: Path, summary: dict[str, dict[str, list[float]]], num_classes: int) -> None:
    """Test accuracy on the seen classes after each step, one line per (schedule, label mode) (paper Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for steps, modes in summary.items():
        seen = [num_classes * (step + 1) // int(steps) for step in range(int(steps))]
        for mode, accuracies in modes.items():
            axes.plot(seen, [100 * a for a in accuracies], marker="o", label=f"{MODE_NAMES[mode]}, {steps} steps")
    axes.set_xlabel("classes seen")
    axes.set_ylabel("test accuracy on the seen classes (%)")
    axes.set_title("class-incremental (GDumb) on the distilled images")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with artifacts.atomic_path(path) as staged:
        figure.savefig(staged, format="png")
    plt.close(figure)
