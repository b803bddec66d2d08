"""DD-Ranking's scores of a distilled set (Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset
Distillation", arXiv 2505.13300), computed from students' metrics files by `helio dd-ranking`.

As defined in DD-Ranking's README and ddranking/metrics/{hard_label,soft_label,aug_robust}.py (v0.2.0, unchanged
at commit b8b09664), per label mode and student seed:

- HLR, hard-label recovery = acc(full train split, hard labels) - acc(distilled set, hard labels): how far the
  distilled images alone are from the real data (lower is better; one value for every label mode);
- IOR, improvement over random = acc(distilled set) - acc(random real images, same IPC), both under the same label
  mode and training: what the distillation adds over picking images at random;
- LRS, label-robust score = (e^a - e^-1) / (e - e^-1) with a = w * IOR - (1 - w) * HLR, w = 0.5 by default;
- ARS, augmentation-robust score: the same map of b = g * IOR(with augmentation) + (1 - g) * IOR(without), g = 0.5.

Accuracies are fractions in [0, 1], which keeps a in [-1, 1] and the scores in [0, 1] as the README says; its code
passes percentages to the exponential, which leaves that range, so its printed numbers are not comparable. Scores
are computed per seed and then averaged (mean and standard deviation), as DD-Ranking averages over its runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

from helio_core import artifacts
from helio_core.errors import HelioError

SOURCE = "DD-Ranking v0.2.0 (github.com/NUS-HPC-AI-Lab/DD-Ranking, README and ddranking/metrics at b8b09664)"


def robust_score(exponent: float) -> float:
    """DD-Ranking's normalisation: (e^x - e^-1) / (e - e^-1), 0 at x = -1, 1/(1 + e) at 0, 1 at x = 1."""
    return (math.exp(exponent) - math.exp(-1)) / (math.e - math.exp(-1))


def label_robust_score(ior: float, hlr: float, weight: float = 0.5) -> float:
    return robust_score(weight * ior - (1 - weight) * hlr)


def augmentation_robust_score(ior_augmented: float, ior_plain: float, weight: float = 0.5) -> float:
    return robust_score(weight * ior_augmented + (1 - weight) * ior_plain)


def _seed_accuracies(metrics: dict, arch: str, mode: str, source: str) -> list[float]:
    try:
        row = metrics[arch][mode]
    except (KeyError, TypeError):
        raise HelioError(f"{source}: no students of {arch} with label mode {mode!r}") from None
    return [float(acc) for acc in row.get("accs", [row["acc"]])]


def students_of(data: Any) -> Any:
    """The students' table inside a `helio record` of a run (results/<name>.json), or `data` itself."""
    return data.get("metrics", {}).get("students", data) if isinstance(data, dict) else data


def require_like(theirs: dict, path: str | Path, ours: dict, ours_name: str) -> None:
    """Refuse to compare students' tables of other IPC or epochs (`theirs` read from `path`)."""
    if (theirs.get("ipc"), theirs.get("epochs")) != (ours.get("ipc"), ours.get("epochs")):
        raise HelioError(f"{path}: IPC/epochs {theirs.get('ipc')}/{theirs.get('epochs')}, {ours_name}'s "
                         f"{ours.get('ipc')}/{ours.get('epochs')}: compare like with like")  # fmt: skip


def _students(path: Path) -> dict:
    """A students' metrics file, or a `helio record` of a run (results/<name>.json) holding one."""
    metrics = students_of(artifacts.read_json(path))
    if not isinstance(metrics, dict) or "archs" not in metrics:
        raise HelioError(f"{path}: not a students' table or a record of one (expected 'archs')")
    return metrics


def require_plain(metrics: dict, path: Path) -> None:
    """Refuse a table as ARS's no-augmentation students unless it records that they trained without crop, flip
    and CutMix (`helio evaluate-students --plain`)."""
    augmentation = metrics.get("augmentation")
    if augmentation is None or any(augmentation.values()):
        raise HelioError(f"{path}: not students without augmentation (augmentation {augmentation}); ARS needs "
                         "`helio evaluate-students --plain` tables")  # fmt: skip


def _paired(first: list[float], second: list[float], what: str) -> list[tuple[float, float]]:
    if len(first) != len(second):
        raise HelioError(f"{what}: {len(first)} seeds against {len(second)}; train the same student seeds for both")
    return list(zip(first, second, strict=True))


def _improvements(tables: dict[Path, dict], ours: Path, theirs: Path, arch: str, mode: str) -> list[float]:
    """Per seed: the accuracy of the students of `ours` minus that of `theirs` (IOR when `theirs` is random), both
    read already into `tables`."""
    first = _seed_accuracies(tables[ours], arch, mode, str(ours))
    second = _seed_accuracies(tables[theirs], arch, mode, str(theirs))
    pairs = _paired(first, second, f"{ours} against {theirs}, {arch} {mode}")
    return [first - second for first, second in pairs]


def scores(
    distilled: Path, random: Path, full: Path, weight: float = 0.5,
    distilled_plain: Path | None = None, random_plain: Path | None = None,
) -> dict:  # fmt: skip
    """Per arch and label mode found in both `distilled` and `random`: IOR, HLR and LRS (mean and std over seeds;
    with the two no-augmentation tables, ARS too, for the archs and label modes both hold). `full` holds the
    full-data students (mode `hard`); an arch it lacks gets IOR and ARS only, its full-data accuracy None (HLR and
    LRS need that arch's full-data students)."""
    if not 0 <= weight <= 1:
        raise HelioError(f"dd-ranking: the weight must lie in [0, 1], got {weight}")
    inputs = (distilled, random, full, distilled_plain, random_plain)
    tables = {path: _students(path) for path in inputs if path is not None}
    syn, rdm, real = tables[distilled], tables[random], tables[full]
    require_like(rdm, random, syn, "the distilled run")
    for plain in (path for path in (distilled_plain, random_plain) if path is not None):
        require_like(tables[plain], plain, syn, "the distilled run")
        require_plain(tables[plain], plain)
    result = {"source": SOURCE, "weight": weight, "accuracy_unit": "fraction", "ipc": syn["ipc"],
              "epochs": syn["epochs"], "archs": [arch for arch in syn["archs"] if arch in rdm["archs"]]}  # fmt: skip
    both_plain = distilled_plain is not None and random_plain is not None
    plain_runs = _runs_of(tables[distilled_plain]) & _runs_of(tables[random_plain]) if both_plain else set()
    for arch in result["archs"]:
        result[arch], hlr = {"full_hard_acc": None}, None
        if arch in real["archs"]:
            full_hard = mean(_seed_accuracies(real, arch, "hard", str(full)))
            hlr = [full_hard - hard for hard in _seed_accuracies(syn, arch, "hard", str(distilled))]
            result[arch]["full_hard_acc"] = round(full_hard, 5)
        for mode in (mode for mode in syn[arch] if mode in rdm[arch]):
            ior = _improvements(tables, distilled, random, arch, mode)
            row = _summary("ior", ior)
            if hlr is not None:
                lrs = [
                    label_robust_score(i, h, weight) for i, h in _paired(ior, hlr, f"{arch} {mode}: IOR against HLR")
                ]
                row |= _summary("hlr", hlr) | _summary("lrs", lrs)
            if (arch, mode) in plain_runs:
                plain = _improvements(tables, distilled_plain, random_plain, arch, mode)
                ars = [augmentation_robust_score(a, p, weight) for a, p in _paired(ior, plain, f"{arch} {mode}: ARS")]
                row |= _summary("ars", ars)
            result[arch][mode] = row
    return result


def _runs_of(metrics: dict) -> set[tuple[str, str]]:
    """The (arch, label mode) pairs a students' table holds."""
    rows = {arch: metrics.get(arch, {}) for arch in metrics["archs"]}
    return {(arch, mode) for arch, modes in rows.items() for mode, row in modes.items() if isinstance(row, dict)}


def _summary(name: str, values: list[float]) -> dict:
    return {name: round(mean(values), 5), f"{name}_std": round(pstdev(values), 5), f"{name}_seeds": len(values)}


def mode_scores(result: dict, arch: str) -> dict[str, dict]:
    """The per-label-mode rows of `scores`' result for `arch` (beside them: its full-data accuracy)."""
    return {mode: row for mode, row in result[arch].items() if isinstance(row, dict)}


def spread(row: dict, score: str, scale: float = 1.0, digits: int = 4) -> str:
    """A score of a `mode_scores` row as mean ± std over seeds (times `scale`; the mean alone where a file has no
    std), or – where the row lacks it (no full-data students for HLR and LRS, none without augmentation for ARS)."""
    if score not in row:
        return "–"
    std = f" ± {scale * row[f'{score}_std']:.{digits}f}" if f"{score}_std" in row else ""
    return f"{scale * row[score]:.{digits}f}{std}"


def score_lines(result: dict) -> list[str]:
    """The scores as plain text, a line per (arch, label mode)."""
    lines = [f"DD-Ranking scores (w = {result['weight']}), IPC {result['ipc']}, {result['epochs']} epochs; "
             "IOR and HLR in accuracy points", f"{'arch':<16}{'label mode':<12}{'IOR':>9}{'HLR':>16}"
             f"{'LRS':>18}{'ARS':>18}"]  # fmt: skip
    for arch in result["archs"]:
        for mode, row in mode_scores(result, arch).items():
            scores = f"{spread(row, 'hlr', 100, 2):>16}{spread(row, 'lrs'):>18}{spread(row, 'ars'):>18}"
            lines.append(f"{arch:<16}{mode:<12}{100 * row['ior']:>+9.2f}{scores}")
    return lines
