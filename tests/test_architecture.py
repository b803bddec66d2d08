"""The layers the folder tree shows hold in the code, and dvc.yaml's deps cover everything each stage runs.

- helio_core (the library) imports nothing above it; inside it, each part imports only the parts below it.
- stages/ modules import only helio_core, never another stage or the app.
- Every DVC stage (dvc.yaml and the experiments' pipelines) runs `helio <stage>`, and its deps list every project
  file that command can load: the entry point's and stage commands' module-level imports and the whole import
  closure of the stage's module (imports inside functions count too). A missing one would let `dvc repro` keep a
  result the code no longer makes.
- Every metrics file a pipeline declares is committed, so that `dvc metrics show` in a fresh clone loads them all.
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helio_app.stage import STAGES
from tests.conftest import REPO

PACKAGES = ("helio_core", "helio_app", "stages")
# what `helio <stage>` loads before the stage (module-level imports only: the dispatch in main() picks one)
ENTRY = [Path("helio_app/main.py"), Path("helio_app/stage_commands.py")]
# helio_core's parts, lowest first: a module may import its own part and the parts before it
CORE_LAYERS = ["", "data", "models", "training", "methods", "reporting"]  # "": the top-level modules


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The project file of a dotted module name (None for the standard library and third parties)."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    for candidate in (Path(*parts).with_suffix(".py"), Path(*parts) / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def imported_names(path: Path, root: Path = REPO, module_level_only: bool = False) -> list[str]:
    """Every dotted name `path` imports (and, for `from a import b`, both a and a.b), resolved if relative."""
    tree = ast.parse((root / path).read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    package = path.parent.as_posix().split("/")
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` folders up
                base = ".".join(package[: len(package) - node.level + 1] + [base])
            names += [base.strip("."), *(f"{base}.{alias.name}".strip(".") for alias in node.names)]
    return names


def imported_files(path: Path, root: Path = REPO, module_level_only: bool = False) -> set[Path]:
    """The project files an import of `path` loads: each imported module and its packages' __init__ files."""
    files = set()
    for name in imported_names(path, root, module_level_only):
        parts = name.split(".")
        files |= {f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]), root)) is not None}
    return files - {path}


def closure(starts: list[Path], root: Path = REPO, module_level_only: frozenset[Path] = frozenset()) -> set[Path]:
    """Every project file reachable through imports from `starts` (only module-level imports of the files in
    `module_level_only`: code inside their functions does not run when a stage runs)."""
    seen, todo = set(), list(starts)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += imported_files(path, root, path in module_level_only)
    return seen


def stage_files(command: str) -> set[Path]:
    """What `helio <command>` loads: the entry point and the stage commands (their module-level imports, and
    helio_app/stage.py, which main() reads the stage names from), then the stage's module."""
    stage = module_file(STAGES[command])
    return closure([*ENTRY, Path("helio_app/stage.py"), stage], module_level_only=frozenset(ENTRY))


def library_files() -> list[Path]:
    return sorted(path.relative_to(REPO) for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def _layer(path: Path) -> int:
    part = path.parts[1] if len(path.parts) > 2 else ""
    return CORE_LAYERS.index(part)


def test_the_library_imports_nothing_above_it_and_each_part_only_the_parts_below():
    upward = []
    for path in (p for p in library_files() if p.parts[0] == "helio_core"):
        for target in imported_files(path):
            if target.parts[0] != "helio_core" or _layer(target) > _layer(path):
                upward.append(f"{path} imports {target}")
    assert upward == []


def test_stages_import_only_the_library():
    crossing = [
        f"{path} imports {target}"
        for path in library_files()
        if path.parts[0] == "stages"
        for target in imported_files(path)
        if target.parts[0] != "helio_core" and target != Path("stages/__init__.py")
    ]
    assert crossing == []


def test_no_import_cycles():
    graph = {path: imported_files(path) for path in library_files()}
    cycles = []

    def visit(path: Path, trail: list[Path]) -> None:
        if path in trail:
            cycles.append(" -> ".join(map(str, trail[trail.index(path) :] + [path])))
            return
        for target in graph.get(path, ()):
            if target.name != "__init__.py":  # a package's __init__ runs first, whoever imports the package
                visit(target, [*trail, path])

    for path in graph:
        visit(path, [])
    assert cycles == []


def test_every_stage_module_has_run_and_summary():
    import importlib

    for command, module in STAGES.items():
        stage = importlib.import_module(module)
        assert callable(stage.run) and callable(stage.summary), command


def _dvc_stages() -> list[tuple[str, str, dict]]:
    """(dvc.yaml file, stage name, stage) of every pipeline in the repository."""
    files = [REPO / "dvc.yaml", *sorted((REPO / "experiments").rglob("dvc.yaml"))]
    return [
        (str(file.relative_to(REPO)), name, stage)
        for file in files
        for name, stage in yaml.safe_load(file.read_text())["stages"].items()
    ]


def _stage_path(dvcfile: str, stage: dict, path: str, root: Path = REPO) -> Path:
    """A path a stage names (dep, out, metric), relative to the repository root: stages resolve it in their wdir."""
    return ((root / dvcfile).parent / stage.get("wdir", ".") / path).resolve().relative_to(root.resolve())


def missing_deps(dvcfile: str, stage: dict, root: Path = REPO) -> list[str]:
    """The files the stage's command loads that its deps do not cover (a dep covers itself and what is under it)."""
    program, command, *_ = shlex.split(stage["cmd"])
    assert program == "helio" and command in STAGES, f"{dvcfile}: {stage['cmd']!r} is not `helio <stage>`"
    deps = [_stage_path(dvcfile, stage, dep, root) for dep in stage["deps"]]
    return sorted(
        str(path) for path in stage_files(command) if not any(path == dep or dep in path.parents for dep in deps)
    )


@pytest.mark.parametrize(("dvcfile", "name", "stage"), _dvc_stages(), ids=lambda v: v if isinstance(v, str) else "")
def test_dvc_deps_cover_every_file_the_stage_loads(dvcfile, name, stage):
    assert missing_deps(dvcfile, stage) == [], f"{dvcfile}:{name} misses deps"


def test_every_declared_metrics_file_is_committed():
    """Metrics are git's, not the DVC cache's: one a clone lacks (a pipeline whose default run is not committed)
    makes its `dvc metrics show` and `dvc exp show` report that they failed to load some metrics."""
    declared = {
        _stage_path(dvcfile, stage, path).as_posix()
        for dvcfile, _, stage in _dvc_stages()
        for entry in stage.get("metrics", [])
        for path in ([entry] if isinstance(entry, str) else entry)
    }
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "metrics/dd_ranking.json" in declared  # the fair pipeline's scores: a `dvc exp show` column each
    assert sorted(declared - set(tracked.splitlines())) == []


def test_every_helio_stage_is_a_dvc_stage():
    commands = {shlex.split(stage["cmd"])[1] for _, _, stage in _dvc_stages()}
    assert commands == set(STAGES)


def test_no_function_longer_than_sixty_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in library_files()
        for node in ast.walk(ast.parse((REPO / path).read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_the_commands_start_without_torch():
    """`helio --help`, the tools and a stage's argument parsing load no torch (seconds on a busy machine): a stage
    imports it when it runs."""
    code = "import sys, helio_app.main, helio_app.cli, helio_app.stage_commands; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
