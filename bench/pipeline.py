"""The pipeline of two revisions stage by stage, side by side in one run: wall time and peak memory per stage.

    python bench/pipeline.py --before 0de2303 [--after HEAD] [--preset presets/quick.yaml] [--save FILE]

Each revision is exported (`git archive`) into a fresh temporary folder and runs its own params.yaml (or the
preset file of that revision), stage after stage with the command its own dvc.yaml gives the stage (`helio
<stage>` as `python -m helio_app <stage>`, or an older revision's `python -m stages.<name>`), the two revisions
alternating stage by stage so that drift on a shared machine hits both alike. Peak memory is
the stage process's maximum resident set size (CPU memory; GPU memory is not counted). At the end the
students' table of each revision is printed, to show that the speed did not cost accuracy. `--save` writes
the same figures as JSON (docs/benchmarks.md's table is generated from bench/results/pipeline.json by `helio report`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
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
    if os.waitstatus_to_exitcode(status) != 0:  # the log's end here: the caller may remove its folder
        tail = (folder / f"{stage}.log").read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{folder.name}: stage {stage} failed; the end of its log:\n" + "\n".join(tail))
    return seconds, usage.ru_maxrss / 1024


def students_table(folder: Path) -> dict[str, str]:
    metrics = json.loads((folder / "metrics/students.json").read_text())
    return {
        f"{arch} {mode}": f"{100 * row['acc']:.2f} ± {100 * row['acc_std']:.2f} (val {100 * row['val_acc']:.2f})"
        for arch in metrics["archs"]
        for mode, row in metrics[arch].items()
    }


def save(path: Path, args: argparse.Namespace, rows: list, tables: dict[str, dict[str, str]]) -> None:
    """The comparison as JSON: revisions, machine, seconds and peak MiB per stage, both students' tables."""
    record = {
        "before": args.before,
        "after": args.after,
        "preset": args.preset,
        "repeats": args.repeats,
        "stages_run": args.stages,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "stages": [
            {"stage": stage, "before_s": b[0], "after_s": a[0], "before_mib": b[1], "after_mib": a[1]}
            for stage, b, a in rows
        ],
        "students": tables,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def measure(folders: dict[str, Path], stages: list[str], repeats: int) -> list[tuple[str, tuple, tuple]]:
    """Each stage `repeats` times per revision, the revisions in turn; the median seconds and the peak MiB."""
    rows = []
    for stage in stages:
        runs = {name: [] for name in folders}
        for _ in range(repeats):
            for name, folder in folders.items():
                runs[name].append(run_stage(folder, stage))
        before, after = ((statistics.median(s for s, _ in runs[n]), max(m for _, m in runs[n])) for n in folders)
        rows.append((stage, before, after))
        print(f"{stage:<18} before {before[0]:7.1f} s   after {after[0]:7.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--preset", default=None, help="a params file inside each revision, e.g. presets/quick.yaml")
    parser.add_argument("--keep", action="store_true", help="keep the two run folders")
    parser.add_argument("--save", type=Path, default=None, help="also write the figures as JSON to this file")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="a subset, in order")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each stage per revision (the median)")
    parser.add_argument("--reuse", type=Path, default=None, help="the folder of a --keep run: rerun stages there")
    args = parser.parse_args()
    root = args.reuse or Path(tempfile.mkdtemp(prefix="helio-bench-"))
    folders = {"before": root / "before", "after": root / "after"}
    if args.reuse is None:
        for name, revision in (("before", args.before), ("after", args.after)):
            export(revision, folders[name], args.preset)
    rows = measure(folders, args.stages, args.repeats)
    report(args, rows)
    tables = {name: students_table(folder) for name, folder in folders.items()}
    print("\nstudents' test accuracy % (mean ± std over seeds)")
    for key in tables["before"]:
        print(f"{key:<24} before {tables['before'][key]:<28} after {tables['after'].get(key, '-')}")
    if args.save:
        save(args.save, args, rows, tables)
    if args.keep or args.reuse:
        print(f"run folders kept in {root}")
    else:
        shutil.rmtree(root)


def report(args: argparse.Namespace, rows: list) -> None:
    print(f"\n{args.before} -> {args.after}, {os.cpu_count()} CPUs, median of {args.repeats}; wall seconds and peak "
          "resident MiB per stage")  # fmt: skip
    print(f"{'stage':<18}{'before s':>10}{'after s':>10}{'speed-up':>10}{'before MiB':>12}{'after MiB':>11}")
    for stage, (before_s, before_mib), (after_s, after_mib) in rows:
        speed = f"{before_s:>10.1f}{after_s:>10.1f}{before_s / after_s:>9.2f}x"
        print(f"{stage:<18}{speed}{before_mib:>12.0f}{after_mib:>11.0f}")
    total_before, total_after = sum(r[1][0] for r in rows), sum(r[2][0] for r in rows)
    print(f"{'total':<18}{total_before:>10.1f}{total_after:>10.1f}{total_before / total_after:>9.2f}x")


if __name__ == "__main__":
    main()
