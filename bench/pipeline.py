"""The pipeline of two revisions stage by stage, side by side in one run: wall time and peak memory per stage.

    python bench/pipeline.py --before 0de2303 [--after HEAD] [--preset presets/quick.yaml]

Each revision is exported (`git archive`) into a fresh temporary folder and runs its own params.yaml (or the
preset file of that revision), stage after stage with the command its own dvc.yaml gives the stage (`helio
<stage>` as `python -m helio_app <stage>`, or an older revision's `python -m stages.<name>`), the two revisions
alternating stage by stage so that drift on a shared machine hits both alike. Peak memory is
the stage process's maximum resident set size (CPU memory; GPU memory is not counted). At the end the
students' table of each revision is printed, to show that the speed did not cost accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STAGES = ("prepare", "train_teachers", "select_patches", "fit_projector", "refine_images", "evaluate_students")
REPO = Path(__file__).resolve().parents[1]


def export(revision: str, folder: Path, preset: str | None) -> Path:
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    if preset:
        shutil.copy(folder / preset, folder / "params.yaml")
    return folder


def stage_command(folder: Path, stage: str) -> list[str]:
    """The stage's command in the revision's dvc.yaml, run by this interpreter."""
    program, *arguments = shlex.split(yaml.safe_load((folder / "dvc.yaml").read_text())["stages"][stage]["cmd"])
    launcher = {"python": [sys.executable], "helio": [sys.executable, "-m", "helio_app"]}[program]
    return [*launcher, *arguments]


def run_stage(folder: Path, stage: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one stage process."""
    env = {**os.environ, "PYTHONPATH": str(folder)}
    started = time.perf_counter()
    with open(folder / f"{stage}.log", "w") as log:
        process = subprocess.Popen(stage_command(folder, stage), cwd=folder, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{folder.name}: stage {stage} failed, see {folder / (stage + '.log')}")
    return seconds, usage.ru_maxrss / 1024


def students_table(folder: Path) -> dict[str, str]:
    metrics = json.loads((folder / "metrics/students.json").read_text())
    return {
        f"{arch} {mode}": f"{100 * row['acc']:.2f} ± {100 * row['acc_std']:.2f} (val {100 * row['val_acc']:.2f})"
        for arch in metrics["archs"]
        for mode, row in metrics[arch].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--preset", default=None, help="a params file inside each revision, e.g. presets/quick.yaml")
    parser.add_argument("--keep", action="store_true", help="keep the two run folders")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="helio-bench-"))
    folders = {
        name: export(rev, root / name, args.preset) for name, rev in (("before", args.before), ("after", args.after))
    }
    rows = []
    for stage in STAGES:
        measured = {name: run_stage(folder, stage) for name, folder in folders.items()}
        rows.append((stage, measured["before"], measured["after"]))
        print(f"{stage:<18} before {measured['before'][0]:7.1f} s   after {measured['after'][0]:7.1f} s", flush=True)

    print(f"\n{args.before} -> {args.after}, {os.cpu_count()} CPUs; wall seconds and peak resident MiB per stage")
    print(f"{'stage':<18}{'before s':>10}{'after s':>10}{'speed-up':>10}{'before MiB':>12}{'after MiB':>11}")
    for stage, (before_s, before_mib), (after_s, after_mib) in rows:
        speed = f"{before_s:>10.1f}{after_s:>10.1f}{before_s / after_s:>9.2f}x"
        print(f"{stage:<18}{speed}{before_mib:>12.0f}{after_mib:>11.0f}")
    total_before, total_after = sum(r[1][0] for r in rows), sum(r[2][0] for r in rows)
    print(f"{'total':<18}{total_before:>10.1f}{total_after:>10.1f}{total_before / total_after:>9.2f}x")
    tables = {name: students_table(folder) for name, folder in folders.items()}
    print("\nstudents' test accuracy % (mean ± std over seeds)")
    for key in tables["before"]:
        print(f"{key:<24} before {tables['before'][key]:<28} after {tables['after'].get(key, '-')}")
    if args.keep:
        print(f"run folders kept in {root}")
    else:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
