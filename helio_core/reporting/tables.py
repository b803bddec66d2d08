"""The students' side-by-side table as plain text, from a students' metrics file (metrics/students.json,
metrics/cross_arch/<arch>.json): what the evaluation stages print and `helio students` joins."""

from __future__ import annotations

from helio_core.errors import HelioError


def table_rows(metrics: dict, source: str = "students' metrics") -> list[tuple[str, str, dict]]:
    """(arch, label mode, summary row) of a students' table."""
    try:
        return [(arch, mode, row) for arch in metrics["archs"] for mode, row in metrics[arch].items()]
    except (KeyError, TypeError, AttributeError):
        raise HelioError(f"{source}: not a students' table (expected 'archs' and a row per arch and mode)") from None


def table_lines(rows: list[tuple[str, str, dict]]) -> list[str]:
    """A header and one plain-text line per (arch, label mode, summary row): accuracy, seeds, bytes, seconds."""
    lines = [
        f"{'arch':<16}{'label mode':<12}{'test acc %':>16}{'val %':>8}{'seeds':>6}{'extra bytes':>14}{'s/student':>10}"
    ]
    for arch, mode, row in rows:
        accuracy_text = f"{100 * row['acc']:.2f} ± {100 * row['acc_std']:.2f}"
        lines.append(
            f"{arch:<16}{mode:<12}{accuracy_text:>16}{100 * row['val_acc']:>8.2f}{row['seeds']:>6}"
            f"{row['extra_storage_bytes']:>14,}{row['seconds_per_student']:>10.0f}"
        )
    return lines


def format_table(metrics: dict) -> str:
    """The side-by-side table as plain text: accuracy (mean +- std over seeds) and extra storage per mode."""
    whole = metrics["ipc"] is None
    images = f"the whole train split ({metrics['train_images']:,} images)" if whole else f"IPC {metrics['ipc']}"
    lines = [f"{images}, {metrics['epochs']} epochs, final-epoch test accuracy on {metrics['test_images']}"]
    lines += table_lines(table_rows(metrics))
    kind = "in the train split's file" if whole else "of PNG"
    lines.append(f"images: {metrics['images_bytes']:,} bytes {kind}, shared by every mode")
    return "\n".join(lines)
