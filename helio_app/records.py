"""`helio record`: keep a run's metrics as results/<name>.json with the command, date and commit that made them, the
sources of the docs' tables (helio_app/report.py). A record is written once; rows measured later (another student
architecture on the same images, say) are merged into it only if their table was made under the same conditions,
and the merge keeps its own command, date and commit beside the record's."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

from helio_app.stage import fail
from helio_core.errors import HelioError

METRICS = ("students", "projector", "label_net", "storage", "teachers", "refine")
# what two students' tables must share for their rows to stand in one table (the same images, splits, recipe)
SAME_CONDITIONS = ("ipc", "train_images", "epochs", "student_seeds", "test_images", "augmentation", "images_bytes")
# the label modes whose soft labels come from a file the table records the sha256 of
LABEL_FILES = {"projector": "projector", "label_net": "label_net"}
# what a table says about its whole run rather than its rows
RUN_KEYS = ("archs", "label_files_sha256", "wall_seconds")


def read(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise HelioError(f"{path}: cannot read it as JSON ({error})") from None


def write(target: Path, entry: dict) -> None:
    """Whole or not at all: the docs' tables read results/ while a record is written."""
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(entry, indent=2) + "\n")
    partial.replace(target)


def provenance() -> dict[str, str]:
    """Today's date and the checkout's commit: what a record of a measurement carries."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"date": datetime.date.today().isoformat(), "commit": commit or "unknown"}


def students_table(path: Path) -> dict:
    table = read(path)
    if not isinstance(table, dict) or not isinstance(table.get("archs"), list):
        raise HelioError(f"{path}: not a students' table (expected 'archs', as metrics/students.json)")
    return table


def record(name: str, command: str, note: str, metrics: Path, results: Path, students: Path | None = None) -> Path:
    """results/<name>.json: this workspace's metrics files (or only the students' table `students`, e.g.
    metrics/full_data.json) with the command, date and commit that made them. Never overwrites a record."""
    target = results / f"{name}.json"
    if target.exists():
        raise HelioError(f"{target}: exists; choose another name, or --merge to add the table's rows to it")
    if students is not None:
        present = {"students": students_table(students)}
    else:
        present = {kind: read(metrics / f"{kind}.json") for kind in METRICS if (metrics / f"{kind}.json").is_file()}
    if "students" not in present:
        raise HelioError(f"{metrics / 'students.json'}: not found; record a run that evaluated students")
    entry = {"name": name, "command": command, "note": note, **provenance(), "metrics": present}
    results.mkdir(exist_ok=True)
    write(target, entry)
    return target


def require_same_conditions(kept: dict, table: dict, target: Path, source: Path) -> None:
    """Refuse rows of another IPC, image set, split, recipe or seeds (a field only one side records included)."""
    for key in SAME_CONDITIONS:
        if kept.get(key) != table.get(key):
            raise HelioError(f"{source}: {key} {table.get(key)}, {target}'s {kept.get(key)}: only rows made under "
                             "the same conditions are merged")  # fmt: skip
    theirs, ours = table.get("label_files_sha256", {}), kept.get("label_files_sha256", {})
    for arch in table["archs"]:
        for file in {LABEL_FILES[mode] for mode in table.get(arch, {}) if mode in LABEL_FILES}:
            if file not in theirs:
                raise HelioError(f"{source}: {arch}'s {file} rows without the {file}'s label_files_sha256")
            if ours.get(file, theirs[file]) != theirs[file]:
                raise HelioError(f"{source}: {arch}'s {file} rows learned from another {file} (sha256 "
                                 f"{theirs[file][:12]}…, {target}'s {ours[file][:12]}…)")  # fmt: skip


def merge(name: str, command: str, note: str, students: Path, results: Path) -> list[tuple[str, str]]:
    """Add the (arch, label mode) rows of the students' table `students` to results/<name>.json, which must not
    hold them yet; sums the tables' wall seconds. Returns the rows added."""
    target = results / f"{name}.json"
    if not target.is_file():
        raise HelioError(f"{target}: not found; --merge adds rows to an existing record")
    entry, table = read(target), students_table(students)
    kept = entry.get("metrics", {}).get("students")
    if not isinstance(kept, dict) or "archs" not in kept:
        raise HelioError(f"{target}: not a record of a students' table (expected metrics.students.archs)")
    require_same_conditions(kept, table, target, students)
    rows = [(arch, mode) for arch in table["archs"] for mode in table.get(arch, {})]
    held = [f"{arch} {mode}" for arch, mode in rows if mode in kept.get(arch, {})]
    if held:
        raise HelioError(f"{target}: already holds {', '.join(held)}; a record's rows are never replaced")
    if not rows:
        raise HelioError(f"{students}: no rows to merge")
    for arch, mode in rows:
        kept.setdefault(arch, {})[mode] = table[arch][mode]
        if mode in LABEL_FILES:
            file = LABEL_FILES[mode]
            kept.setdefault("label_files_sha256", {})[file] = table["label_files_sha256"][file]
    kept["archs"] += [arch for arch in table["archs"] if arch not in kept["archs"]]
    kept["wall_seconds"] = round(kept.get("wall_seconds", 0) + table.get("wall_seconds", 0), 1)
    merged = {"command": command, "note": note, **provenance(), "rows": [f"{arch} {mode}" for arch, mode in rows]}
    entry["merges"] = [*entry.get("merges", []), merged]
    write(target, entry)
    return rows


def record_run(name: str, command: str, note: str, students: Path | None, merge_rows: bool) -> None:
    """`helio record`: a new record, or (`merge_rows`) the students' table's rows added to one."""
    results = Path("results")
    try:
        if not merge_rows:
            print(f"wrote {record(name, command, note, Path('metrics'), results, students)}")
            return
        if students is None:
            raise HelioError("--merge needs --students: the students' table whose rows to add")
        rows = merge(name, command, note, students, results)
        print(f"added {', '.join(f'{arch} {mode}' for arch, mode in rows)} to {results / f'{name}.json'}")
    except HelioError as error:
        fail(error)
