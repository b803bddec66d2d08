"""The `helio` tools beside the stages: soft labels from a shipped light label source (a projector or a label
network), students' tables joined, what an artifact is and what made it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from helio_app.stage import fail
from helio_core import artifacts, runtime
from helio_core.errors import HelioError
from helio_core.models import label_net
from helio_core.models.projector import Projector
from helio_core.reporting.tables import table_lines, table_rows
from helio_core.training.engine import predict_logits

console = Console()


def label_images(
    projector_file: Path, images: list[Path], images_dir: Path | None, output: Path | None, temperature: float,
    device: str,
) -> None:  # fmt: skip
    """Label `images` with a projector or a label network (by the file's kind); print each one's top class, and
    write every logit to `output`."""
    try:
        target = runtime.choose_device(device, local_rank=0)
        metadata = artifacts.read_metadata(projector_file)
        if metadata.get("kind") == label_net.KIND:
            projector = label_net.load_label_net(projector_file)[0].to(target)
        else:
            projector = Projector.load(projector_file, images_dir=images_dir).to(target)
        classes = metadata["classes"]
        pixels = [artifacts.read_png(path) for path in images]
    except HelioError as error:
        fail(error)
    logits = torch.cat([predict_logits(projector, image[None]) for image in pixels])
    probabilities = torch.softmax(logits / temperature, dim=-1)
    rows = [
        {"image": str(path), "logits": [round(v, 6) for v in row.tolist()], "top": classes[int(row.argmax())]}
        for path, row in zip(images, logits, strict=True)
    ]
    if output is not None and output.suffix == ".safetensors":
        artifacts.save_tensors(output, {"logits": logits}, {"kind": "soft-labels", "classes": classes,
                                                             "images": [str(p) for p in images]})  # fmt: skip
    elif output is not None:
        artifacts.write_json(output, {"classes": classes, "labels": rows})
    table = Table("image", "top class", "p(top)")
    for row, probs in zip(rows, probabilities, strict=True):
        table.add_row(row["image"], row["top"], f"{probs.max().item():.3f}")
    console.print(table)


def students_table(paths: list[Path], scores: Path | None = None) -> str:
    """Several students' tables (metrics/students.json, metrics/cross_arch/*.json) as one, a row per (arch, mode);
    below it, DD-Ranking's scores of those students when a file of them is given."""
    from helio_core.reporting.dd_ranking import score_lines

    rows, below = [], []
    try:
        for path in paths:
            rows += table_rows(artifacts.read_json(path), str(path))
        if scores is not None:
            below = ["", *score_lines(artifacts.read_json(scores))]
    except HelioError as error:
        fail(error)
    except (KeyError, TypeError):
        fail(HelioError(f"{scores}: not a DD-Ranking scores file (write one with helio dd-ranking)"))
    return "\n".join([*table_lines(rows), *below])


def show_info(path: Path) -> None:
    """What an artifact is and what made it: its record, the stage, the inputs' hashes and the params."""
    try:
        if path.is_dir():  # a prepared split's shards, or the distilled images
            path = path / ("index.json" if (path / "index.json").is_file() else "labels.json")
        record = artifacts.read_metadata(path) if path.suffix == ".safetensors" else artifacts.read_json(path)
    except HelioError as error:
        fail(error)
    if not isinstance(record, dict):
        fail(HelioError(f"{path}: expected a JSON object"))
    table = Table(title=f"{path} ({path.stat().st_size:,} bytes)", show_header=False)
    provenance = record.get("provenance", {})
    for key, value in record.items():
        if key not in ("provenance", "images"):
            table.add_row(key, _short(value))
    if "images" in record:
        table.add_row("images", f"{len(record['images'])} entries")
    for key in ("stage", "helio_version", "torch_version", "format_version"):
        if key in provenance:
            table.add_row(f"made by: {key}", str(provenance[key]))
    for name, digest in provenance.get("inputs", {}).items():
        table.add_row(f"input: {name}", f"sha256 {digest}")
    for key, value in provenance.get("params", {}).items():
        table.add_row(f"param: {key}", _short(value))
    console.print(table)


def _short(value: object, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
