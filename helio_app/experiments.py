"""Named sets of DVC experiments (the paper's tables), each row a list of `-S key=value` overrides.

The file is read and every row's overrides are applied to the params file and validated before anything is
queued, so a typo fails here in one line instead of in the middle of a queue of long runs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from helio_core.errors import HelioError
from helio_core.params import load_params


def load_table(
    path: str | Path, table: str, params_path: str | Path = "params.yaml", extra: list[str] | None = None
) -> dict[str, list[str]]:
    """The rows of `table` in the experiments file, each with the `extra` overrides (which replace a row's own
    value of the same key, e.g. student.epochs=120 for a quick check of a 300-epoch table), checked against the
    params file."""
    path = Path(path)
    try:
        tables = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise HelioError(f"{path}: experiments file not found") from None
    except yaml.YAMLError as error:
        raise HelioError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if not isinstance(tables, dict) or table not in tables:
        known = ", ".join(tables) if isinstance(tables, dict) else "none"
        raise HelioError(f"{path}: no table {table!r} (tables: {known})")
    rows = tables[table]
    if not isinstance(rows, dict) or not all(isinstance(v, list) for v in rows.values()):
        raise HelioError(f"{path}: table {table!r} must map row names to lists of key=value overrides")
    rows = {
        name: with_extra([str(override) for override in overrides], extra or []) for name, overrides in rows.items()
    }
    for name, overrides in rows.items():
        try:
            load_params(params_path, overrides)
        except HelioError as error:
            raise HelioError(f"{path}: row {name}: {error}") from None
    return rows


def with_extra(overrides: list[str], extra: list[str]) -> list[str]:
    """A row's overrides, less those of a key `extra` sets, then `extra`: one value per key reaches DVC."""
    keys = {override.split("=", 1)[0] for override in extra}
    return [override for override in overrides if override.split("=", 1)[0] not in keys] + list(extra)


def queue_commands(rows: dict[str, list[str]]) -> list[list[str]]:
    """One `dvc exp run --queue` command per row."""
    return [
        ["dvc", "exp", "run", "--queue", "-n", name, *[arg for override in overrides for arg in ("-S", override)]]
        for name, overrides in rows.items()
    ]
