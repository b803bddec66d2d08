from typer.testing import CliRunner

from helio_core.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_prepare_and_info_through_the_cli(workdir):
    result = runner.invoke(app, ["prepare", "--params", str(REPO / "presets" / "quick.yaml")])
    assert result.exit_code == 0, result.output
    assert "224 train / 32 val / 40 test images, 4 classes" in result.output
    shown = runner.invoke(app, ["info", "artifacts/data/train.safetensors"])
    assert shown.exit_code == 0 and "dataset-split" in shown.output and "prepare" in shown.output


def test_bad_parameter_is_one_line_and_exit_2(workdir):
    result = runner.invoke(app, ["prepare", "-p", str(REPO / "params.yaml"), "-S", "select.ipc=1.5"])
    assert result.exit_code == 2
    assert result.output.strip() == "helio: error: select.ipc must be an integer, got 1.5"


def test_info_on_a_missing_artifact(workdir):
    result = runner.invoke(app, ["info", "nothing.safetensors"])
    assert result.exit_code == 2 and "nothing.safetensors: file not found" in result.output
