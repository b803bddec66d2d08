"""What each way of labelling a distilled set costs to ship: measured bytes here, formulas at ImageNet scale.

Stored per-epoch labels (SRe2L/FKD) take images x epochs x classes x 2 bytes (fp16) plus the record of
every augmented view they label; a full teacher is its checkpoint; a projector is its file of LoRA tensors.
The formulas below are exactly the layout helio writes (`augment.ViewPlan` + fp16 logits), so the
measured file here and the ImageNet projection come from one definition.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from helio_core import artifacts
from helio_core.params import StudentParams

INDEX_LIMIT_INT16 = 32767
HALF = 2  # bytes per fp16 label value or int16 record value


def stored_label_bytes(images: int, epochs: int, classes: int, batch_size: int) -> dict[str, int]:
    """Bytes of the tensors of a stored-labels file: the fp16 logits and the augmentation records."""
    index = 2 if images <= INDEX_LIMIT_INT16 else 4
    batches = math.ceil(images / batch_size)
    per_view = index + 4 * HALF + HALF + index  # order, crop box, flip, CutMix partner
    records = epochs * (images * per_view + batches * 4 * HALF)  # + one CutMix box per batch
    return {"labels": images * epochs * classes * HALF, "records": records}


def files_bytes(paths: list[Path]) -> int:
    return sum(path.stat().st_size for path in paths)


def resnet18_checkpoint_bytes(classes: int) -> int:
    """fp32 weights of a torchvision ResNet-18 for `classes` classes (tensor data only, no buffers)."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=classes)
    return sum(p.numel() for p in model.parameters()) * 4


def clip_rn50_projector_bytes(classes: int, rank: int, head_rank: int) -> int:
    """fp16 LoRA tensors of an open_clip RN50 projector with a text-initialised head (the paper's setup)."""
    import open_clip

    from helio_core.models.lora import adaptable_layers, lora_parameter_count

    logging.disable(logging.WARNING)  # open_clip warns that an unweighted model is random: only shapes count here
    try:
        visual = open_clip.create_model("RN50", pretrained=None).visual
    finally:
        logging.disable(logging.NOTSET)
    encoder = lora_parameter_count([layer for _, layer in adaptable_layers(visual)], rank)
    feature_dim = visual.output_dim
    head = min(classes * feature_dim, head_rank * (classes + feature_dim))
    return (encoder + head) * HALF + 4  # + the fp32 logit scale


def imagenet_projection(epochs: int = 300, ipcs: tuple[int, ...] = (1, 10, 50), batch_size: int = 100) -> dict:
    """Extra storage of each label source for ImageNet-1K students (paper Table 1's setting), by formula."""
    classes = 1000
    teacher = resnet18_checkpoint_bytes(classes)
    projector = clip_rn50_projector_bytes(classes, rank=8, head_rank=128)
    rows = {}
    for ipc in ipcs:
        stored = stored_label_bytes(ipc * classes, epochs, classes, batch_size)
        rows[f"ipc{ipc}"] = {
            "stored_labels_bytes": stored["labels"] + stored["records"],
            "teacher_bytes": teacher,
            "projector_bytes": projector,
        }
    return {"classes": classes, "epochs": epochs, "batch_size": batch_size, **rows}


def write_storage(
    path: Path, extra: dict[str, int], images: int, config: StudentParams, classes: int, images_bytes: int
) -> dict:
    """Measured bytes of every deliverable here, the stored-label formula checked against the measured
    file, and the same accounting projected to ImageNet-1K."""
    formula = stored_label_bytes(images, config.epochs, classes, config.batch_size)
    report = {
        "measured": {
            "projector_bytes": extra["projector"],
            "label_net_bytes": extra["label_net"],
            "teacher_checkpoint_bytes": extra["teacher"],
            "stored_labels_bytes": extra["stored"],
            "images_png_bytes": images_bytes,
            "images": images,
        },
        "stored_labels_formula": {
            "images": images,
            "epochs": config.epochs,
            "classes": classes,
            "labels_bytes": formula["labels"],
            "records_bytes": formula["records"],
        },
        "imagenet_1k": imagenet_projection(epochs=300),
    }
    artifacts.write_json(path, report)
    return report
