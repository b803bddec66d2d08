"""Named sets of DVC experiments (the paper's tables), each row a list of `-S key=value` overrides.

The file is read and every row's overrides are applied to the params file and validated before anything is
queued, so a typo fails here in one line instead of in the middle of a queue of long runs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from helio_core.errors import HelioError
from helio_core.params import load_params


def load_table(path: str | Path, table: str, params_path: str | Path = "params.yaml") -> dict[str, list[str]]:
    """The rows of `table` in the experiments file, each checked against the params file."""
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
    for name, overrides in rows.items():
        try:
            load_params(params_path, [str(override) for override in overrides])
        except HelioError as error:
            raise HelioError(f"{path}: row {name}: {error}") from None
    return {name: [str(override) for override in overrides] for name, overrides in rows.items()}


def queue_commands(rows: dict[str, list[str]]) -> list[list[str]]:
    """One `dvc exp run --queue` command per row."""
    return [
        ["dvc", "exp", "run", "--queue", "-n", name, *[arg for override in overrides for arg in ("-S", override)]]
        for name, overrides in rows.items()
    ]
