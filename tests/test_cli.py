import json

from typer.testing import CliRunner

from helio_app.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_prepare_and_info_through_the_cli(workdir):
    result = runner.invoke(app, ["prepare", "--params", str(REPO / "presets" / "quick.yaml")])
    assert result.exit_code == 0, result.output
    assert "224 train / 32 val / 40 test images, 4 classes" in result.output
    shown = runner.invoke(app, ["info", "artifacts/data/train"])
    assert shown.exit_code == 0 and "dataset-split" in shown.output and "prepare" in shown.output


def test_bad_parameter_is_one_line_and_exit_2(workdir):
    result = runner.invoke(app, ["prepare", "-p", str(REPO / "params.yaml"), "-S", "select.ipc=1.5"])
    assert result.exit_code == 2
    assert result.output.strip() == "helio: error: select.ipc must be an integer, got 1.5"


def test_info_on_a_missing_artifact(workdir):
    result = runner.invoke(app, ["info", "nothing.safetensors"])
    assert result.exit_code == 2 and "nothing.safetensors: file not found" in result.output


def test_students_prints_several_tables_as_one(workdir):
    row = {"acc": 0.7544, "acc_std": 0.0035, "val_acc": 0.7611, "seeds": 2, "extra_storage_bytes": 311500,
           "seconds_per_student": 39.5}  # fmt: skip
    for arch in ("resnet18", "vgg11"):
        table = {"ipc": 10, "epochs": 120, "test_images": 10000, "archs": [arch], arch: {"projector": row}}
        (workdir / f"{arch}.json").write_text(json.dumps(table))
    result = runner.invoke(app, ["students", "resnet18.json", "vgg11.json"])
    assert result.exit_code == 0, result.output
    assert result.output.count("75.44 ± 0.35") == 2 and "vgg11" in result.output and "311,500" in result.output
    (workdir / "projector.json").write_text(json.dumps({"stored_parameters": 3}))
    refused = runner.invoke(app, ["students", "projector.json"])
    assert refused.exit_code == 2 and "projector.json: not a students' table" in refused.output
    projector = {"ior": 0.0123, "hlr": 0.31, "lrs": 0.2101, "lrs_std": 0.002}
    scores = {"weight": 0.5, "ipc": 10, "epochs": 120, "archs": ["resnet18"],
              "resnet18": {"full_hard_acc": 0.92, "projector": projector}}  # fmt: skip
    (workdir / "scores.json").write_text(json.dumps(scores))
    with_scores = runner.invoke(app, ["students", "resnet18.json", "--scores", "scores.json"])
    assert with_scores.exit_code == 0 and "75.44 ± 0.35" in with_scores.output
    assert "+1.23" in with_scores.output and "0.2101 ± 0.0020" in with_scores.output
    refused = runner.invoke(app, ["students", "resnet18.json", "--scores", "projector.json"])
    assert refused.exit_code == 2 and "projector.json: not a DD-Ranking scores file" in refused.output


LOADED_BY = """
import sys
sys.argv = ["helio", *sys.argv[1:]]
from helio_app.main import main
try:
    main()
except SystemExit:
    pass
print(sorted(name for name in sys.modules if name.startswith("helio_app")))
"""


def test_a_stage_command_never_loads_the_tools_declarations(workdir):
    """The stages' dvc.yaml deps leave helio_app/cli.py out: a stage's process must not load it."""
    import os
    import subprocess
    import sys

    env_path = {**os.environ, "PYTHONPATH": str(REPO)}
    stage = subprocess.run([sys.executable, "-c", LOADED_BY, "prepare", "--help"], capture_output=True, text=True,
                           env=env_path, cwd=workdir)  # fmt: skip
    tool = subprocess.run([sys.executable, "-c", LOADED_BY, "info", "--help"], capture_output=True, text=True,
                          env=env_path, cwd=workdir)  # fmt: skip
    assert "Usage: helio prepare" in stage.stdout and "helio_app.cli" not in stage.stdout.splitlines()[-1]
    assert "helio_app.stage_commands" in stage.stdout.splitlines()[-1]
    assert "Usage: helio info" in tool.stdout and "'helio_app.cli'" in tool.stdout.splitlines()[-1]
