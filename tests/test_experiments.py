"""The paper's tables as queued DVC experiments: every row's overrides validate, and the CLI prints the queue."""

from typing import get_args

import pytest
import torch
from typer.testing import CliRunner

from helio_app.cli import app
from helio_app.experiments import load_table, queue_commands
from helio_core.errors import HelioError
from helio_core.params import LabelMode, load_params
from helio_core.training.losses import projector_loss
from tests.conftest import REPO

PAPER = REPO / "experiments" / "paper.yaml"


@pytest.mark.parametrize("table", ["ladder", "ranks", "windows", "sources"])
def test_every_row_of_the_paper_tables_validates_against_the_default_params(table):
    rows = load_table(PAPER, table, REPO / "params.yaml")
    assert len(rows) >= 5
    commands = queue_commands(rows)
    for command, name in zip(commands, rows, strict=True):
        assert command[:6] == ["dvc", "exp", "run", "--queue", "-n", name]


def test_the_ladder_adds_one_part_of_the_method_per_step():
    rows = load_table(PAPER, "ladder", REPO / "params.yaml")
    steps = ["ladder-1-probe", "ladder-2-guidance", "ladder-3-lora", "ladder-4-head-init", "ladder-5-refine"]
    assert list(rows) == steps
    assert "projector.loss=ce" in rows["ladder-1-probe"] and "lora.rank=0" in rows["ladder-2-guidance"]
    assert "lora.rank=0" not in rows["ladder-3-lora"] and "projector.head_init=random" not in rows["ladder-4-head-init"]
    assert "refine.enabled=true" in rows["ladder-5-refine"]  # params.yaml leaves the images unrefined
    assert "lora.head_rank=4" in rows["ladder-4-head-init"]  # the head's update is stored, smaller than the head


def test_a_bad_row_or_table_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep:\n  r1: [lora.rank=-3]\n")
    with pytest.raises(HelioError, match=r"bad.yaml: row r1: lora.rank must be >= 0, got -3"):
        load_table(bad, "sweep", REPO / "params.yaml")
    with pytest.raises(HelioError, match=r"no table 'ladders' \(tables: sweep\)"):
        load_table(bad, "ladders", REPO / "params.yaml")


def test_queue_dry_run_prints_one_dvc_command_per_row():
    result = CliRunner().invoke(
        app, ["queue", "windows", "--experiments", str(PAPER), "--params", str(REPO / "params.yaml"), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("dvc exp run --queue -n window-1-3 -S 'projector.teachers=[1,2,3]'")


def test_the_sources_table_has_a_row_per_label_mode_at_rdeds_recipe():
    rows = load_table(PAPER, "sources", REPO / "params.yaml")
    modes = {load_params(REPO / "params.yaml", overrides).student.label_modes[0] for overrides in rows.values()}
    assert modes == set(get_args(LabelMode))
    assert all(load_params(REPO / "params.yaml", overrides).student.epochs == 300 for overrides in rows.values())


def test_extra_overrides_replace_a_rows_own_value_of_the_key():
    rows = load_table(PAPER, "sources", REPO / "params.yaml", ["student.epochs=120", "student.seeds=[0]"])
    assert rows["src-hard"] == ["student.label_modes=[hard]", "student.epochs=120", "student.seeds=[0]"]
    result = CliRunner().invoke(
        app,
        [
            "queue",
            "sources",
            "--experiments",
            str(PAPER),
            "--params",
            str(REPO / "params.yaml"),
            "--dry-run",
            "-S",
            "student.epochs=120",
        ],
    )
    assert result.exit_code == 0, result.output
    assert all(
        line.count("student.epochs=") == 1 and "student.epochs=120" in line for line in result.output.splitlines()
    )
    with pytest.raises(HelioError, match=r"paper.yaml: row src-projector: student.epochs must be > 0, got 0"):
        load_table(PAPER, "sources", REPO / "params.yaml", ["student.epochs=0"])


def test_ce_loss_is_the_hard_labels_alone():
    logits, target, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    params = load_params(REPO / "params.yaml", ["projector.loss=ce", "projector.lambda_ce=0.3"]).projector
    loss = projector_loss(logits, target, labels, params)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels))
