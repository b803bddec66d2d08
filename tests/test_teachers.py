import torch

from helio_core import artifacts
from helio_core.models.checkpoints import load_checkpoint
from helio_core.training.engine import lr_factor
from helio_core.training.teachers import ShuffledStream
from helio_core.workspace import Workspace
from stages import prepare, train_teachers


def test_stream_serves_each_index_once_per_pass():
    stream = ShuffledStream(10, torch.Generator().manual_seed(0))
    first = torch.cat([stream.take(4), stream.take(4), stream.take(2)])
    assert sorted(first.tolist()) == list(range(10))
    assert sorted(torch.cat([stream.take(7), stream.take(3)]).tolist()) == list(range(10))


def test_lr_warms_up_then_decays_to_zero():
    factors = [lr_factor(step, 100, 10) for step in range(101)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[10] == 1.0
    assert all(a >= b for a, b in zip(factors[10:-1], factors[11:], strict=True)) and factors[100] == 0.0


def test_trajectory_keeps_listed_epochs_and_learns(workdir, quick_params):
    workspace = Workspace()
    prepare.run(quick_params, workspace)
    metrics = train_teachers.run(quick_params, workspace)
    assert sorted(p.name for p in workspace.teachers.iterdir()) == [f"epoch_00{e}.safetensors" for e in (1, 2, 3, 4)]
    assert set(metrics["val_acc"]) == {"1", "2", "3", "4"} and metrics["last_epoch"] == 4
    assert metrics["val_images"] == 32  # the quick preset's validation split, not the test split
    assert metrics["last_test_acc_full"] > 0.5  # 4 classes: chance is 0.25
    teacher, metadata = load_checkpoint(workspace.teacher(2))
    assert metadata["epoch"] == 2  # the train split stands in provenance by its index, which lists every shard's sha256
    assert metadata["provenance"]["inputs"]["train"] == artifacts.sha256_file(workspace.split("train") / "index.json")
    first, _ = load_checkpoint(workspace.teacher(1))
    assert not torch.equal(first.net.fc.weight, teacher.net.fc.weight)
