"""Result tables in the docs, generated from tracked files: no figure in README.md or docs/ is typed by hand.

A table is a block of a Markdown file between two markers; the first names what it shows and its sources::

    <!-- table: students metrics/students.json -->
    ...written by `helio report`...
    <!-- end table -->

Sources are the metrics files DVC tracks (the default run's, the experiment pipelines') and records in results/:
one JSON file per measured variant, written by `helio record` (helio_app/records.py) from a run's metrics files
with the command, date and commit that made them. `helio report --check` says which block is out of date (the test
suite runs it).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

from helio_app.records import read
from helio_app.stage import fail
from helio_core.errors import HelioError
from helio_core.params import load_params
from helio_core.reporting.dd_ranking import mode_scores, require_like, scores, spread, students_of
from helio_core.reporting.figures import MODE_NAMES

BLOCK = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end table -->)", re.DOTALL)
MODES = ("projector", "label_net", "teacher", "teacher_int8", "teacher_int4", "stored", "hard", "teachers")


def percent(row: dict, key: str = "acc") -> str:
    spread = f" ± {100 * row[f'{key}_std']:.2f}" if f"{key}_std" in row else ""
    return f"{100 * row[key]:.2f}{spread}"


def like_tables(paths: tuple[str, ...]) -> list[dict]:
    """The students' tables of `paths` (metrics files or records); refused unless all share the first's IPC and
    epochs."""
    tables = [students_of(read(path)) for path in paths]
    for path, metrics in zip(paths, tables, strict=True):
        require_like(metrics, path, tables[0], paths[0])
    return tables


def students_table(*paths: str) -> list[str]:
    """The side-by-side table of students' metrics files or records of runs (another student on the same images):
    a row per (file, arch, label mode); all of one IPC and number of epochs, which the table does not show."""
    lines = ["| student | label mode | test acc % | val acc % | extra storage (bytes) | seconds per student |"]
    lines.append("|---|---|---|---|---|---|")
    for metrics in like_tables(paths):
        for arch in metrics["archs"]:
            for mode in (m for m in MODES if m in metrics[arch]):
                row = metrics[arch][mode]
                lines.append(
                    f"| {arch} | {MODE_NAMES[mode]} | {percent(row)} | {100 * row['val_acc']:.2f} "
                    f"| {row['extra_storage_bytes']:,} | {row['seconds_per_student']:.0f} |"
                )
    return lines


def refined_row(refine: dict) -> str:
    """What refine_images did: the projector/teacher agreement it moved, or that it passed the images unchanged."""
    before, after = (100 * refine[key]["agreement"] for key in ("before", "after"))
    if not refine.get("enabled", True):
        return f"off: the selected images as they are, projector/teacher agreement {before:.1f} %"
    return f"projector/teacher agreement on the images {before:.1f} % → {after:.1f} %"


def run_table(*paths: str) -> list[str]:
    """What the default run's stages recorded: the teachers, the projector, the label network, refinement, and the
    students' stage."""
    teachers, projector, label_net, refine, students = (read(path) for path in paths)
    after, shipped = projector["after_lora"], label_net["shipped"]
    return [
        "| stage | what it measured | wall seconds |",
        "|---|---|---|",
        f"| train_teachers | last kept epoch {teachers['last_epoch']}: {100 * teachers['last_test_acc_full']:.2f} % "
        f"on {teachers['full_test_images']:,} test images | {teachers['wall_seconds']:.0f} |",
        f"| fit_projector | {projector['projector_bytes']:,} B, {projector['stored_parameters']:,} stored parameters; "
        f"{100 * after['acc']:.1f} % test accuracy, {100 * after['agreement']:.1f} % agreement with its target "
        f"| {projector['wall_seconds']:.0f} |",
        f"| fit_label_net | {label_net['label_net_bytes']:,} B ({label_net['dtype']}), "
        f"{label_net['stored_parameters']:,} parameters; {100 * shipped['acc']:.1f} % val accuracy, "
        f"{100 * shipped['agreement']:.1f} % agreement, KL·T² {shipped['kl']:.3f} to its target "
        f"| {label_net['wall_seconds']:.0f} |",
        f"| refine_images | {refined_row(refine)} | {refine['wall_seconds']:.0f} |",
        f"| evaluate_students | {sum(students[a][m]['seeds'] for a in students['archs'] for m in students[a])} "
        f"students, {students['epochs']} epochs | {students['wall_seconds']:.0f} |",
    ]


def ipc_table(*paths: str) -> list[str]:
    """One row per run (records or metrics files) of the default at another IPC: every label mode's test %."""
    shown = ("projector", "label_net", "teacher", "stored", "hard")
    lines = ["| IPC | " + " | ".join(MODE_NAMES[m] for m in shown) + " | PNG bytes | stored-label bytes |"]
    lines.append("|---" * (len(shown) + 3) + "|")
    runs = [read(path) for path in paths]
    for students in sorted((students_of(run) for run in runs), key=lambda s: s["ipc"]):
        row = students[students["archs"][0]]
        cells = " | ".join(percent(row[m]) if m in row else "–" for m in shown)
        stored = f"{row['stored']['extra_storage_bytes']:,}" if "stored" in row else "–"
        lines.append(f"| {students['ipc']} | {cells} | {students['images_bytes']:,} | {stored} |")
    return lines


def records_table(*paths: str) -> list[str]:
    """One row per record: the command's overrides, the projector it fitted, its students (projector mode)."""
    lines = ["| run | command | projector bytes | stored parameters | proj acc / agr % | students test % | val % |"]
    lines.append("|---|---|---|---|---|---|---|")
    for path in paths:
        data = read(path)
        projector, students = data["metrics"]["projector"], data["metrics"]["students"]
        row = students[students["archs"][0]]["projector"]
        after = projector["after_lora"]
        lines.append(
            f"| {data['name']} | `{data['command']}` | {projector['projector_bytes']:,} "
            f"| {projector['stored_parameters']:,} | {100 * after['acc']:.1f} / {100 * after['agreement']:.1f} "
            f"| {percent(row)} | {100 * row['val_acc']:.2f} |"
        )
    return lines


def cross_arch_table(*paths: str) -> list[str]:
    """Table 2: per architecture of each file (a cross-arch stage's metrics or a record of several), the projector's
    and the teacher's students and their difference."""
    header = (
        "| student | projector test % | val % | full teacher test % | val % | projector − teacher (val) | s/student |"
    )
    lines = [header]
    lines.append("|---|---|---|---|---|---|---|")
    for metrics in like_tables(paths):
        for arch in metrics["archs"]:
            projector, teacher = metrics[arch]["projector"], metrics[arch]["teacher"]
            difference = 100 * (projector["acc"] - teacher["acc"])
            val_difference = 100 * (projector["val_acc"] - teacher["val_acc"])
            seconds = f"{projector['seconds_per_student']:.0f} / {teacher['seconds_per_student']:.0f}"
            lines.append(
                f"| {arch} | {percent(projector)} | {100 * projector['val_acc']:.2f} | {percent(teacher)} "
                f"| {100 * teacher['val_acc']:.2f} | {difference:+.2f} ({val_difference:+.2f}) | {seconds} |"
            )
    return lines


SEEDS_SET = re.compile(r"student\.seeds=\[([0-9, ]+)\]")


def student_seeds(data: dict) -> tuple[int, ...]:
    """The seeds of a run's students, in the order of its rows' accuracies: recorded in its students' table; for a
    record made before they were, the `student.seeds=[...]` its command set, else params.yaml's seeds of that time,
    0 to n-1 (every such run's)."""
    students = students_of(data)
    if "student_seeds" in students:
        return tuple(students["student_seeds"])
    found = SEEDS_SET.search(data.get("command", ""))
    if found:
        return tuple(int(seed) for seed in found.group(1).split(","))
    counts = {row["seeds"] for arch in students["archs"] for row in students[arch].values()}
    return tuple(range(max(counts)))


def arch_rows(paths: tuple[str, ...]) -> Iterator[tuple]:
    """Every (run name, path, students' table, seeds, arch, rows by label mode, like) of the runs in order, `like`
    being what makes two runs' students comparable: student, epochs, IPC and image bytes (the same images)."""
    for path in paths:
        data = read(path)
        students, name, seeds = students_of(data), data.get("name", path), student_seeds(data)
        for arch in students["archs"]:
            like = (arch, students["epochs"], students["ipc"], students["images_bytes"])
            yield name, path, students, seeds, arch, students[arch], like


def teacher_pairs(paths: tuple[str, ...]) -> Iterator[tuple]:
    """Every (run name, path, students' table, arch, label mode, row, teacher run name, teacher row or None) of the
    runs in order: a row is paired with the teacher-labelled students of its own run, or of the last earlier run
    with the same student, epochs, IPC, image bytes and seeds (the same images and view plans)."""
    teachers: dict[tuple, tuple[str, dict]] = {}
    for name, path, students, seeds, arch, rows, like in arch_rows(paths):
        if "teacher" in rows:
            teachers[(*like, seeds)] = (name, rows["teacher"])
        for mode in (m for m in MODES if m in rows):
            reference, teacher = teachers.get((*like, seeds), (None, None))
            yield name, path, students, arch, mode, rows[mode], reference, teacher


def label_sources_table(*paths: str) -> list[str]:
    """Per run (a record or a students' metrics file), every label source its students trained with: test and val
    accuracy, the difference to the full teacher's students on val (`teacher_pairs`), and the bytes each needs
    beside the images."""
    lines = ["| run | student | epochs | IPC | label source | seeds | test % | val % | val − full teacher "
             "| extra bytes |", "|---" * 10 + "|"]  # fmt: skip
    for name, _, students, arch, mode, row, reference, teacher in teacher_pairs(paths):
        gap = "–" if teacher is None else f"{100 * (row['val_acc'] - teacher['val_acc']):+.2f}"
        gap += f" (vs {reference})" if teacher is not None and reference != name else ""
        lines.append(
            f"| {name} | {arch} | {students['epochs']} | {students['ipc']} "
            f"| {MODE_NAMES[mode]} | {row['seeds']} | {percent(row)} | {100 * row['val_acc']:.2f} | {gap} "
            f"| {row['extra_storage_bytes']:,} |"
        )
    return lines


def paired_seeds_table(*paths: str) -> list[str]:
    """Light sources against the full teacher seed by seed, pooled over runs: each seed's students are paired with the
    teacher-labelled students of the same seed in the run itself or the last earlier one with the same student,
    epochs, IPC and image bytes (the same images and view plan). A source is one label mode and one file: the
    file's sha256 where the students' table records it, else its size. The mean difference with its standard
    error over the pairs, on val (where decisions are made) and on test."""
    lines = ["| student | epochs | IPC | label source | extra bytes | runs | pairs | val − teacher per seed "
             "| val: mean ± s.e. | test: mean ± s.e. |", "|---" * 10 + "|"]  # fmt: skip
    teacher_seeds: dict[tuple, tuple[float, float]] = {}
    pooled: dict[tuple, dict[str, list]] = {}
    for name, path, students, seeds, arch, rows, like in arch_rows(paths):
        if "val_accs" in rows.get("teacher", {}):
            for seed, val, test in zip(seeds, rows["teacher"]["val_accs"], rows["teacher"]["accs"], strict=True):
                teacher_seeds[(*like, seed)] = (val, test)
        unpaired = [seed for seed in seeds if (*like, seed) not in teacher_seeds]
        for mode in (m for m in MODES if m in rows and m != "teacher"):
            if "val_accs" not in rows[mode] or unpaired:
                raise HelioError(f"{path}: {arch} {mode} has no earlier teacher-labelled students with per-seed "
                                 f"val accuracies for its seeds {list(seeds)}; list such a run first")  # fmt: skip
            size = rows[mode]["extra_storage_bytes"]
            source = students.get("label_files_sha256", {}).get(mode, size)
            group = pooled.setdefault((*like[:3], mode, size, source), {"runs": [], "seeds": [], "val": [], "test": []})
            group["runs"].append(name)
            for seed, val, test in zip(seeds, rows[mode]["val_accs"], rows[mode]["accs"], strict=True):
                teacher_val, teacher_test = teacher_seeds[(*like, seed)]
                group["seeds"].append(seed)
                group["val"].append(val - teacher_val)
                group["test"].append(test - teacher_test)
    for (arch, epochs, ipc, mode, size, _), group in pooled.items():
        pairs = zip(group["seeds"], group["val"], strict=True)
        per_pair = ", ".join(f"{seed}: {100 * gap:+.2f}" for seed, gap in pairs)
        lines.append(f"| {arch} | {epochs} | {ipc} | {MODE_NAMES[mode]} | {size:,} | {', '.join(group['runs'])} "
                     f"| {len(group['val'])} | {per_pair} | {_mean_and_error(group['val'])} "
                     f"| {_mean_and_error(group['test'])} |")  # fmt: skip
    return lines


def _mean_and_error(gaps: list[float]) -> str:
    """Mean of paired differences in points, with its standard error (sample std / sqrt n; none for one pair)."""
    if len(gaps) < 2:
        return f"{100 * statistics.mean(gaps):+.2f}"
    return f"{100 * statistics.mean(gaps):+.2f} ± {100 * statistics.stdev(gaps) / math.sqrt(len(gaps)):.2f}"


def selection_table(distilled: str, *randoms: str) -> list[str]:
    """What the selection adds over random real images with the same labels: per label mode, the distilled run's
    students beside those of each random-selection run (a record or a students' file) with the same student,
    epochs, IPC and seeds, and the difference, DD-Ranking's improvement over random (IOR), on val and on test."""
    lines = ["| student | IPC | epochs | label source | distilled test % | val % | random test % | val % "
             "| IOR val / test (points) |", "|---" * 9 + "|"]  # fmt: skip
    ours, *others = like_tables((distilled, *randoms))
    for path, theirs in zip(randoms, others, strict=True):
        for arch, mode in shared_rows(ours, theirs):
            mine, other = ours[arch][mode], theirs[arch][mode]
            gain = difference(mine, other, f"{path}: {arch} {mode}", distilled)
            lines.append(
                f"| {arch} | {ours['ipc']} | {ours['epochs']} | {MODE_NAMES[mode]} | {percent(mine)} "
                f"| {100 * mine['val_acc']:.2f} | {percent(other)} | {100 * other['val_acc']:.2f} | {gain} |"
            )
    return lines


def shared_rows(*tables: dict) -> Iterator[tuple[str, str]]:
    """The (arch, label mode) rows every one of the students' `tables` has, in the first's arch order."""
    for arch in (a for a in tables[0]["archs"] if all(a in table["archs"] for table in tables)):
        yield from ((arch, mode) for mode in MODES if all(mode in table[arch] for table in tables))


def difference(mine: dict, other: dict, what: str, ours: str) -> str:
    """The val / test points of `mine` over `other`, rows of students with the same seeds (`what` names other's)."""
    if mine["seeds"] != other["seeds"]:
        raise HelioError(f"{what} has {other['seeds']} seeds, {ours} {mine['seeds']}: train the same student seeds "
                         "for both")  # fmt: skip
    return f"{100 * (mine['val_acc'] - other['val_acc']):+.2f} / {100 * (mine['acc'] - other['acc']):+.2f}"


def versus_table(first: str, second: str) -> list[str]:
    """Two runs of one student, epochs, IPC and seeds that differ in one thing (e.g. refined against unrefined
    images), per label mode of both: each run's students and the first's lead over the second, val / test points."""
    data = [read(path) for path in (first, second)]
    names = [entry.get("name", Path(path).stem) for entry, path in zip(data, (first, second), strict=True)]
    ours, theirs = (students_of(entry) for entry in data)
    require_like(theirs, second, ours, first)
    lines = [f"| student | IPC | epochs | label source | {names[0]}: test % (val) | {names[1]}: test % (val) "
             f"| {names[0]} − {names[1]}: val / test |", "|---" * 7 + "|"]  # fmt: skip
    for arch, mode in shared_rows(ours, theirs):
        mine, other = ours[arch][mode], theirs[arch][mode]
        lines.append(
            f"| {arch} | {ours['ipc']} | {ours['epochs']} | {MODE_NAMES[mode]} | {percent(mine)} "
            f"({100 * mine['val_acc']:.2f}) | {percent(other)} ({100 * other['val_acc']:.2f}) "
            f"| {difference(mine, other, f'{second}: {arch} {mode}', first)} |"
        )
    return lines


def parts_table(distilled: str, unrefined: str, random: str) -> list[str]:
    """What each part adds with the same labels, per label mode, in val / test points (means over the same seeds):
    the selection (the distilled students minus those on random train images refined alike: DD-Ranking's IOR), the
    refinement (minus the same selected images unrefined) and the label source (minus hard labels, same images)."""
    paths = (distilled, unrefined, random)
    tables = dict(zip(paths, like_tables(paths), strict=True))
    ours = tables[distilled]
    lines = ["| student | IPC | epochs | label source | test % (val) | selection | refinement | over hard labels |",
             "|---" * 8 + "|"]  # fmt: skip
    rows = list(shared_rows(*tables.values()))
    for arch in dict.fromkeys(arch for arch, _ in rows):
        if "hard" not in ours[arch]:
            raise HelioError(f"{distilled}: {arch} has no hard-label students; the parts table measures each label "
                             "source over them (train label mode hard too)")  # fmt: skip
    for arch, mode in rows:
        mine = ours[arch][mode]
        selection, refinement = (difference(mine, tables[path][arch][mode], f"{path}: {arch} {mode}", distilled)
                                 for path in (random, unrefined))  # fmt: skip
        labels = difference(mine, ours[arch]["hard"], f"{distilled}: {arch} hard", distilled)
        lines.append(
            f"| {arch} | {ours['ipc']} | {ours['epochs']} | {MODE_NAMES[mode]} | {percent(mine)} "
            f"({100 * mine['val_acc']:.2f}) | {selection} | {refinement} | {labels} |"
        )
    return lines


def dd_ranking_table(params: str, distilled: str, random: str, full: str, *plain: str) -> list[str]:
    """DD-Ranking's scores of a distilled run's students against random images and the full data (the stage's
    definitions, w = the params file's fair.weight), a row per arch and label mode; ARS given the two
    no-augmentation tables."""
    weight = load_params(params).fair.weight
    result = scores(Path(distilled), Path(random), Path(full), weight, *(Path(path) for path in plain))
    lines = [f"| student | IPC | epochs | label source | full data, hard % | IOR (points) | HLR (points) "
             f"| LRS (w = {weight}) | ARS |", "|---" * 9 + "|"]  # fmt: skip
    for arch in result["archs"]:
        rows = mode_scores(result, arch)
        for mode in (m for m in MODES if m in rows):
            row = rows[mode]
            full = result[arch]["full_hard_acc"]
            lines.append(
                f"| {arch} | {result['ipc']} | {result['epochs']} | {MODE_NAMES[mode]} "
                f"| {'not trained' if full is None else f'{100 * full:.2f}'} "
                f"| {100 * row['ior']:+.2f} ± {100 * row['ior_std']:.2f} | {spread(row, 'hlr', 100, 2)} "
                f"| {spread(row, 'lrs')} | {spread(row, 'ars')} |"
            )
    return lines


def label_net_fits_table(*paths: str) -> list[str]:
    """Per record, how its label network's fit went: held-out KL·T² to its target after every epoch (val images),
    the shipped file's agreement and accuracy beside the target's, its bytes and the fit's seconds."""
    lines = ["| run | epochs | KL·T² after each epoch | shipped: agreement % | val acc % (target) | bytes | fit s |",
             "|---" * 7 + "|"]  # fmt: skip
    for path in paths:
        data = read(path)
        fit = data["metrics"]["label_net"]
        shipped, curve = fit["shipped"], " → ".join(f"{epoch['kl']:.3f}" for epoch in fit["history"])
        lines.append(
            f"| {data['name']} | {len(fit['history'])} | {curve} | {100 * shipped['agreement']:.1f} "
            f"| {100 * shipped['acc']:.1f} ({100 * shipped['teacher_acc']:.1f}) | {fit['label_net_bytes']:,} "
            f"| {fit['fit_seconds']:.0f} |"
        )
    return lines


def continual_table(path: str) -> list[str]:
    """Fig. 2 as a table: accuracy on the seen classes after each step, per schedule and label mode."""
    metrics = read(path)
    schedules = metrics["accuracy_per_step"]
    steps = max(int(s) for s in schedules)
    lines = ["| schedule | label mode | " + " | ".join(f"step {i + 1}" for i in range(steps)) + " |"]
    lines.append("|---" * (steps + 2) + "|")
    for schedule, modes in schedules.items():
        for mode, accuracies in modes.items():
            cells = [f"{100 * a:.1f}" for a in accuracies] + [""] * (steps - len(accuracies))
            lines.append(f"| {schedule} steps | {MODE_NAMES[mode]} | " + " | ".join(cells) + " |")
    return lines


def pipeline_table(path: str) -> list[str]:
    """bench/pipeline.py --save: two revisions' stages side by side, seconds and peak memory."""
    bench = read(path)
    lines = [f"| stage | {bench['before']} s | {bench['after']} s | speed-up | {bench['before']} MiB | "
             f"{bench['after']} MiB |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in bench["stages"]:
        speed_up = row["before_s"] / row["after_s"]
        lines.append(
            f"| {row['stage']} | {row['before_s']:.1f} | {row['after_s']:.1f} | {speed_up:.2f}x "
            f"| {row['before_mib']:,.0f} | {row['after_mib']:,.0f} |"
        )
    before, after = (sum(row[key] for row in bench["stages"]) for key in ("before_s", "after_s"))
    lines.append(f"| total | {before:.1f} | {after:.1f} | {before / after:.2f}x | | |")
    return lines


def scale_table(*paths: str) -> list[str]:
    """bench/scale.py --save files: each revision's stages at every size, wall seconds / peak MiB, and the peak at the
    largest size it ran over the peak at the smallest (flat in N: near 1)."""
    benches = [read(path) for path in paths]
    sizes = sorted({row["images"] for bench in benches for row in bench["rows"]})
    lines = [f"| run | stage | {' | '.join(f'{n:,} images: s / MiB' for n in sizes)} | peak MiB, largest / smallest |",
             "|---" * (len(sizes) + 3) + "|"]  # fmt: skip
    for bench in benches:
        cells: dict[tuple[str, str], dict[int, dict]] = {}
        for row in bench["rows"]:
            run = f"{row['revision']} ({bench[row['revision']]}, {bench['date']})"
            cells.setdefault((run, row["stage"]), {})[row["images"]] = row
        for (run, stage), by_size in cells.items():
            figures = " | ".join(f"{by_size[n]['seconds']:.0f} / {by_size[n]['mib']:,.0f}" if n in by_size else "–"
                                 for n in sizes)  # fmt: skip
            ran = sorted(by_size)
            growth = by_size[ran[-1]]["mib"] / by_size[ran[0]]["mib"]
            lines.append(f"| {run} | {stage} | {figures} | {growth:.2f}x |")
    return lines


def pipeline_students_table(path: str) -> list[str]:
    """bench/pipeline.py --save: each revision's students' table, side by side (seeded runs: identical or not)."""
    tables = read(path)["students"]
    lines = ["| student, label mode | before: test % (val %) | after: test % (val %) | identical |"]
    lines.append("|---|---|---|---|")
    for key, before in tables["before"].items():
        after = tables["after"].get(key, "–")
        lines.append(f"| {key} | {before} | {after} | {'yes' if after == before else 'no'} |")
    return lines


FIDELITY_SCORES = ("kl", "agreement", "dark_rank_corr", "entropy_reference", "entropy_labeller")


def fidelity_groups(paths: tuple[str, ...]) -> dict[tuple[str, str, str], list[dict]]:
    """`helio fidelity` runs (results/fidelity-<run>-seed<S>[-<note>].json) grouped by (run, label source,
    reference), each entry the run with that source's rows as `source`, in the order first seen."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for path in paths:
        run = read(path)
        label = re.sub(r"-seed\d+(-.*)?$", "", Path(path).stem.removeprefix("fidelity-"))
        for name, source in run["sources"].items():
            groups.setdefault((label, name, run["reference"]), []).append({**run, "source": source})
    return groups


def mean_scores(runs: list[dict], keys: tuple[str, ...] = FIDELITY_SCORES) -> dict[str, float]:
    """Fidelity scores of a group, pooled over all measured epochs and averaged over the seeds' streams."""
    return {key: sum(run["source"]["all"][key] for run in runs) / len(runs) for key in keys}


def students_mean(runs: list[dict], key: str) -> float | None:
    """A source's students' accuracy over a group's streams: the mean of the rows each seed's stream was joined to
    (one table of every seed, or a table per seed); None where none was."""
    joined = [run["source"][key] for run in runs if run["source"][key] is not None]
    return sum(joined) / len(joined) if joined else None


def fidelity_table(*paths: str) -> list[str]:
    """Per run, label source and reference (the full teacher or the weak teachers): its fidelity on the students'
    view streams, beside the students trained on that source (mean over the seeds joined)."""
    lines = ["| run | IPC | label source | against | streams | bytes | KL·T² | top-1 agreement "
             "| dark-knowledge rank corr. | entropy reference / source | students test % | val % |",
             "|---" * 12 + "|"]  # fmt: skip
    against = {"teacher": "full teacher", "teachers": "weak teachers"}
    for (label, name, reference), runs in fidelity_groups(paths).items():
        source, mean = runs[0]["source"], mean_scores(runs)
        streams = f"seeds {', '.join(str(run['seed']) for run in runs)} × {runs[0]['student_epochs']} epochs"
        test, val = students_mean(runs, "students_test_acc"), students_mean(runs, "students_val_acc")
        students = "– | –" if test is None else f"{100 * test:.2f} | {100 * val:.2f}"
        scores = " | ".join(f"{mean[key]:.3f}" for key in ("kl", "agreement", "dark_rank_corr"))
        entropy = f"{mean['entropy_reference']:.3f} / {mean['entropy_labeller']:.3f}"
        lines.append(
            f"| {label} | {runs[0]['ipc']} | {MODE_NAMES[name]} | {against[reference]} | {streams} "
            f"| {source['bytes']:,} | {scores} | {entropy} | {students} |"
        )
    return lines


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank)."""

    def ranks(values: list[float]) -> list[float]:
        return [sum(o < v for o in values) + (sum(o == v for o in values) - 1) / 2 for v in values]

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    covariance = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    spread = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return covariance / spread if spread else float("nan")


def fidelity_predictors_table(*paths: str) -> list[str]:
    """Which fidelity measure predicts the students: across the label sources measured against the full teacher
    whose students exist, the rank correlation of each measure (averaged over seeds) with their val accuracy, within
    each IPC (more images per class lift every source's students; pooled, the IPC would be ranked, not the source),
    for every IPC with at least three such sources."""
    by_ipc: dict[int, list[list[dict]]] = {}
    for (_, _, reference), runs in fidelity_groups(paths).items():
        if reference == "teacher" and students_mean(runs, "students_val_acc") is not None:
            by_ipc.setdefault(runs[0]["ipc"], []).append(runs)
    by_ipc = {ipc: groups for ipc, groups in sorted(by_ipc.items()) if len(groups) >= 3}
    names = {"kl": "KL·T² (lower is better)", "agreement": "top-1 agreement", "dark_rank_corr": "dark-knowledge rank "
             "corr.", "entropy_labeller": "entropy of the source's labels"}  # fmt: skip
    heads = "".join(f" IPC {ipc}: Spearman with students' val % ({len(groups)} label sources) |"
                    for ipc, groups in by_ipc.items())  # fmt: skip
    lines = [f"| measure on the students' views |{heads}", "|---" * (1 + len(by_ipc)) + "|"]
    columns = [
        (
            [mean_scores(runs, tuple(names)) for runs in groups],
            [students_mean(runs, "students_val_acc") for runs in groups],
        )
        for groups in by_ipc.values()
    ]  # per IPC: each source's scores and its students' val accuracy, computed once
    for key, title in names.items():
        cells = "".join(f" {spearman([mean[key] for mean in means], val):+.2f} |" for means, val in columns)
        lines.append(f"| {title} |{cells}")
    return lines


TABLES: dict[str, Callable[..., list[str]]] = {
    "fidelity": fidelity_table,
    "fidelity_predictors": fidelity_predictors_table,
    "pipeline": pipeline_table,
    "pipeline_students": pipeline_students_table,
    "scale": scale_table,
    "students": students_table,
    "run": run_table,
    "ipc": ipc_table,
    "records": records_table,
    "label_sources": label_sources_table,
    "paired_seeds": paired_seeds_table,
    "selection": selection_table,
    "parts": parts_table,
    "versus": versus_table,
    "dd_ranking": dd_ranking_table,
    "label_net_fits": label_net_fits_table,
    "cross_arch": cross_arch_table,
    "continual": continual_table,
}


def render(spec: str, root: Path) -> str:
    """The table a marker names, from files relative to `root` (a glob names the files that match it, sorted)."""
    kind, *sources = spec.split()
    if kind not in TABLES:
        raise HelioError(f"unknown table {kind!r} (known: {', '.join(TABLES)})")
    paths = [str(p) for source in sources for p in (sorted(root.glob(source)) if "*" in source else [root / source])]
    return "\n".join(TABLES[kind](*paths)) + "\n"


def refresh(document: Path, root: Path) -> tuple[str, list[str]]:
    """The document with every table block regenerated, and the specs of the blocks that changed."""
    text, changed = document.read_text(), []

    def regenerate(match: re.Match) -> str:
        body = render(match["spec"], root)
        if body != match["body"]:
            changed.append(match["spec"])
        return match.group(1) + body + match.group(4)

    try:
        return BLOCK.sub(regenerate, text), changed
    except (KeyError, TypeError, IndexError) as error:
        raise HelioError(f"{document}: a table's sources lack {error} (are they the files it expects?)") from None


DOCUMENTS = ("README.md", "docs/*.md")


def publish(documents: list[Path] | None, check: bool) -> int:
    """`helio report`: regenerate (or, with `check`, compare) every table block; the exit status."""
    root = Path(".")
    try:
        files = documents or sorted(p for pattern in DOCUMENTS for p in root.glob(pattern))
        stale = []
        for document in files:
            text, changed = refresh(document, root)
            stale += [f"{document}: table '{spec}'" for spec in changed]
            if changed and not check:
                document.write_text(text)
    except HelioError as error:
        fail(error)
    for line in stale:
        print(f"{'out of date' if check else 'regenerated'}: {line}")
    return 1 if check and stale else 0
