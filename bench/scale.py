"""Memory against data set size: two revisions' stages on generated ImageFolder sets of growing size, side by side.

    python bench/scale.py [--before REV] [--after HEAD] [--sizes 2000 8000 32000] [--save FILE]
    python bench/scale.py --preset presets/imagenet100.yaml --classes 100 --sizes 8000 --backbone open_clip:RN50 \
        --override projector.head_init=prototypes

For each size N, an ImageFolder of N train JPEGs at 224 px (`--classes` classes, each a smooth colour field with
noise) and a fixed small val/ folder is generated once; then each revision (exported as in bench/pipeline.py; the
before one only when named) runs its stages on it, with its params.yaml or `--preset`'s, and tiny epochs: a few
hundred images per stage, so that the figures are about what a stage holds in memory, not about training.
`--backbone` replaces the projector's (the presets' open_clip:RN50/openai needs its weights from the internet;
open_clip:RN50 is the same network with random weights) and `--override section.key=value` sets any other key.
Peak memory is the largest resident set of the stage's processes (the stage or a decoding
worker: wait4's maximum, not a sum). The point: a stage's peak should not grow with N, and `prepare`'s time should
grow about linearly with N.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from pipeline import export, run_stage  # bench/pipeline.py: the same export and stage runner

STAGES = ("prepare", "train_teachers", "select_patches", "fit_projector", "refine_images", "evaluate_students")
SIZE, VAL_PER_CLASS = 224, 20
# tiny work per stage, whatever N: only what a stage loads should grow with the data
OVERRIDES = {
    "data": {"name": "imagefolder", "size": SIZE, "val_images": 100, "train_per_class": None, "test_per_class": None,
             "decode_workers": 2},
    "teachers": {"epochs": 1, "epoch_images": 256, "keep": [1], "batch_size": 64, "eval_images": 100},
    "select": {"ipc": 2, "factor": 2, "candidates": 20, "crops": 2, "batch_size": 64},
    "projector": {"teachers": [1], "train_images": 200, "val_images": 50, "test_images": 100, "epochs": 1,
                  "batch_size": 50},
    "refine": {"steps": 1, "batch_size": 20},
    "student": {"epochs": 1, "seeds": [0], "label_modes": ["hard", "teacher"], "batch_size": 20, "curve_images": 50,
                "eval_every": 1},
}  # fmt: skip


def generate(root: Path, count: int, classes: int, seed: int = 0) -> None:
    """train/<class>/*.jpg (count in all) and val/<class>/*.jpg at 224 px."""
    generator = np.random.default_rng(seed)
    bases = generator.integers(40, 216, (classes, 3))
    for split, per_class in (("train", count // classes), ("val", VAL_PER_CLASS)):
        for label in range(classes):
            folder = root / split / f"class_{label:02d}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                noise = generator.integers(-40, 41, (SIZE // 8, SIZE // 8, 3))
                pixels = np.clip(bases[label] + noise, 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
                image.save(folder / f"{k:06d}.jpg", quality=90)


def configure(folder: Path, root: Path, overrides: list[str]) -> None:
    """The revision's own params.yaml with the overrides it knows (an older revision may lack a key), then
    `overrides` (section.key=value, the value read as YAML)."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for section, values in OVERRIDES.items():
        params[section].update({key: value for key, value in values.items() if key in params[section]})
    params["data"]["root"] = str(root)
    for override in overrides:
        dotted, value = override.split("=", 1)
        section, key = dotted.split(".", 1)
        params[section][key] = yaml.safe_load(value)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=None, help="git revision to compare against (none: the after side only)")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 8000, 32000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="a prefix, in order")
    parser.add_argument("--save", type=Path, default=None, help="also write the figures as JSON to this file")
    parser.add_argument("--preset", default=None, help="a preset of the revisions (e.g. presets/imagenet100.yaml)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--backbone", default=None, help="projector.backbone instead of the params' own")
    parser.add_argument("--override", nargs="*", default=[], help="section.key=value, after the tiny epochs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="helio-scale-"))
    rows = []
    overrides = [*([f"projector.backbone={args.backbone}"] if args.backbone else []), *args.override]
    try:
        for count in args.sizes:
            generate(work / f"data-{count}", count, args.classes)
            revisions = [("before", args.before)] * (args.before is not None) + [("after", args.after)]
            for name, revision in revisions:
                folder = export(revision, work / f"{name}-{count}", args.preset)
                configure(folder, work / f"data-{count}", overrides)
                for stage in args.stages:
                    seconds, mib = run_stage(folder, stage)
                    rows.append({"images": count, "revision": name, "stage": stage, "seconds": seconds, "mib": mib})
                    print(f"N={count:>6} {name:<6} {stage:<18} {seconds:7.1f} s {mib:8.0f} MiB", flush=True)
                shutil.rmtree(folder)
            shutil.rmtree(work / f"data-{count}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.save:
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        record = {"before": args.before, "after": args.after, "date": datetime.date.today().isoformat(),
                  "machine": machine, "preset": args.preset, "classes": args.classes, "overrides": overrides,
                  "rows": rows}  # fmt: skip
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
