"""Memory against data set size: two revisions' stages on generated ImageFolder sets of growing size, side by side.

    python bench/scale.py --before REV [--after HEAD] [--sizes 2000 8000 32000] [--save FILE]

For each size N, an ImageFolder of N train JPEGs at 224 px (10 classes, each a smooth colour field with noise) and a
fixed small val/ folder is generated once; then each revision (exported as in bench/pipeline.py) runs its stages
on it with tiny epochs: a few hundred images per stage, so that the figures are about what a stage holds in memory,
not about training. Peak memory is the largest resident set of the stage's processes (the stage or a decoding
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
CLASSES, SIZE, VAL_PER_CLASS = 10, 224, 20
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


def generate(root: Path, count: int, seed: int = 0) -> None:
    """train/<class>/*.jpg (count in all) and val/<class>/*.jpg at 224 px."""
    generator = np.random.default_rng(seed)
    bases = generator.integers(40, 216, (CLASSES, 3))
    for split, per_class in (("train", count // CLASSES), ("val", VAL_PER_CLASS)):
        for label in range(CLASSES):
            folder = root / split / f"class_{label:02d}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                noise = generator.integers(-40, 41, (SIZE // 8, SIZE // 8, 3))
                pixels = np.clip(bases[label] + noise, 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
                image.save(folder / f"{k:06d}.jpg", quality=90)


def configure(folder: Path, root: Path) -> None:
    """The revision's own params.yaml with the overrides it knows (an older revision may lack a key)."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for section, values in OVERRIDES.items():
        params[section].update({key: value for key, value in values.items() if key in params[section]})
    params["data"]["root"] = str(root)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 8000, 32000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="a prefix, in order")
    parser.add_argument("--save", type=Path, default=None, help="also write the figures as JSON to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="helio-scale-"))
    rows = []
    try:
        for count in args.sizes:
            generate(work / f"data-{count}", count)
            for name, revision in (("before", args.before), ("after", args.after)):
                folder = export(revision, work / f"{name}-{count}", None)
                configure(folder, work / f"data-{count}")
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
                  "machine": machine, "rows": rows}  # fmt: skip
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
