import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helio_core import runtime
from helio_core.data.splits import ImageSet
from helio_core.data.views import render_views
from helio_core.errors import HelioError
from helio_core.params import load_params
from helio_core.reporting import storage
from helio_core.reporting.tables import format_table
from helio_core.training import labels as label_sources
from helio_core.training import students as student
from helio_core.training.losses import combine_teachers, student_loss
from stages.evaluate_students import cross_arch_params
from tests.conftest import REPO

CPU = runtime.CPU


def _config(*overrides):
    return load_params(REPO / "params.yaml", ["student.epochs=2", "student.batch_size=4", *overrides]).student


class TinyStudent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


class KnownProjector(nn.Module):
    """logit k = (k + 1) * mean of channel k: a known function of whatever images it is given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.stack([(k + 1) * x[:, k].mean((1, 2)) for k in range(3)], dim=1)


def test_projector_labels_are_computed_on_the_augmented_batch(monkeypatch):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    config = _config("student.crop_scale=[0.3, 0.6]", "student.beta=0.5", "student.projector_loss=mse")
    plan = student.make_plan(6, 8, config, config.crop_scale, seed=3)
    projector = KnownProjector()
    losses = []
    original = student_loss

    def spy(mode, logits, soft, hard, params):
        losses.append((logits.detach().clone(), soft.clone(), hard.clone()))
        return original(mode, logits, soft, hard, params)

    monkeypatch.setattr(student, "student_loss", spy)
    data = ImageSet(images, labels, ["a", "b", "c"])
    soft = label_sources.online_labels(projector)
    student.train_student(TinyStudent(), "projector", data, plan, soft, config, lambda m: 0.0, CPU)
    assert len(losses) == len(projector.seen) == 2 * 2  # 2 epochs x 2 batches
    step = 0
    for epoch in range(2):
        for batch in plan.batches():
            views, hard = render_views(images, labels, plan, epoch, batch, 3)
            torch.testing.assert_close(projector.seen[step], views)
            assert not torch.equal(views, images[plan.order[epoch, batch].long()].float() / 255)  # really augmented
            expected = torch.stack([(k + 1) * views[:, k].mean((1, 2)) for k in range(3)], dim=1)
            logits, soft, mixed = losses[step]
            torch.testing.assert_close(soft, expected)
            torch.testing.assert_close(mixed, hard)
            step += 1
    logits, soft, hard = losses[-1]
    recomputed = F.mse_loss(logits, soft) + 0.5 * F.cross_entropy(logits, hard)
    torch.testing.assert_close(original("projector", logits, soft, hard, config), recomputed)


def test_label_mode_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    hard = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.4]])
    config = _config("student.temperature=2")
    assert torch.isclose(student_loss("hard", logits, None, hard, config), F.cross_entropy(logits, hard))
    assert student_loss("teacher", logits, logits.clone(), hard, config).abs() < 1e-6
    target = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    p = F.softmax(target / 2, 1)
    expected = 4 * (p * (p.log() - F.log_softmax(logits / 2, 1))).sum(1).mean()
    torch.testing.assert_close(student_loss("stored", logits, target, hard, config), expected)
    kl = _config("student.projector_loss=kl", "student.temperature=2", "student.beta=0")
    torch.testing.assert_close(student_loss("projector", logits, target, hard, kl), expected)
    probs = _config("student.projector_loss=mse_probs", "student.temperature=2", "student.beta=0")
    expected = ((F.softmax(logits / 2, 1) - p) ** 2).sum(1).mean()
    torch.testing.assert_close(student_loss("projector", logits, target, hard, probs), expected)


def test_standardised_projector_loss_ignores_the_labellers_logit_scale():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    target = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    hard = F.one_hot(torch.tensor([1, 0]), 3).float()
    config = _config("student.standardise=true", "student.beta=0")
    scaled = student_loss("projector", logits, 7.0 * target + 2.0, hard, config)
    torch.testing.assert_close(student_loss("projector", logits, target, hard, config), scaled)
    assert student_loss("projector", 3.0 * target - 1.0, target, hard, config) < 1e-10


def test_stored_labels_file_is_labels_plus_records_and_replays_exactly(tmp_path):
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(10) % 5
    config = _config("student.epochs=3", "student.batch_size=4")
    plan = student.make_plan(10, 8, config, [0.5, 1.0], seed=0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    logits = label_sources.teacher_view_logits(teacher, images, labels, plan, 5)
    path = tmp_path / "seed_0.safetensors"
    size = label_sources.save_stored_labels(path, logits, plan, {"seed": 0, "batch_size": 4})
    header = int.from_bytes(path.read_bytes()[:8], "little")
    expected = storage.stored_label_bytes(images=10, epochs=3, classes=5, batch_size=4)
    assert expected["labels"] == 10 * 3 * 5 * 2
    assert size == 8 + header + expected["labels"] + expected["records"]
    loaded, replayed = label_sources.load_stored_labels(path)
    assert torch.equal(loaded, logits) and loaded.dtype == torch.float16
    for name, tensor in plan.tensors().items():
        assert torch.equal(replayed.tensors()[name], tensor), name
    views, _ = render_views(images, labels, replayed, 2, slice(4, 8), 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded[2, 4:8].float(), teacher(views), atol=2e-3, rtol=1e-3)


def test_summary_has_the_issue_shape_and_table_prints():
    runs = [
        student.StudentRun("resnet18", mode, seed, acc, acc - 0.01, [(1, 1.0, acc)], 2.0)
        for mode, accs in (("projector", (0.80, 0.82)), ("hard", (0.60, 0.64)))
        for seed, acc in enumerate(accs)
    ]
    summary = student.summarise(runs, {"projector": 300_000, "hard": 0})
    assert summary["resnet18"]["projector"]["acc"] == pytest.approx(0.81)
    assert summary["resnet18"]["projector"]["acc_std"] == pytest.approx(0.01414, abs=1e-5)
    assert summary["resnet18"]["hard"]["seeds"] == 2 and summary["resnet18"]["hard"]["extra_storage_bytes"] == 0
    assert summary["resnet18"]["hard"]["val_accs"] == [0.59, 0.63]  # per seed, paired with accs
    metrics = {"ipc": 10, "epochs": 1, "test_images": 100, "archs": ["resnet18"], **summary, "images_bytes": 5}
    json.dumps(metrics)
    table = format_table(metrics)
    assert "81.00 ± 1.41" in table and "300,000" in table


def test_storage_formula_at_imagenet_scale_matches_the_papers_order():
    ipc1 = storage.stored_label_bytes(images=1000, epochs=300, classes=1000, batch_size=100)
    assert ipc1["labels"] == 600_000_000  # the paper: ~0.57 GB for IN-1K IPC 1
    ipc50 = storage.stored_label_bytes(images=50_000, epochs=300, classes=1000, batch_size=100)
    assert ipc50["labels"] == 30_000_000_000 and ipc50["records"] > 50_000 * 300 * 12  # int32 indices past 32,767


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_student_step_learns_with_float_losses(precision):
    """The autocast and loss-scaler path that GPUs take, run on the CPU (autocast supports both dtypes there)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    config = _config("student.epochs=3")
    plan = student.make_plan(6, 8, config, [0.5, 1.0], seed=0)
    model, teacher = TinyStudent(), TinyStudent()
    before = model.fc.weight.detach().clone()
    losses = []
    here = runtime.Runtime(torch.device("cpu"), precision)
    data = ImageSet(images, labels, ["a", "b", "c"])
    curve = student.train_student(
        model, "teacher", data, plan, label_sources.online_labels(teacher), config, lambda m: 0.0, here,
        lambda epoch, loss: losses.append(loss),
    )  # fmt: skip
    assert len(curve) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(model.fc.weight, before) and model.fc.weight.dtype == torch.float32


def test_a_cross_arch_stage_refuses_an_arch_outside_its_list():
    params = load_params(REPO / "params.yaml", ["cross_arch.archs=[resnet18]", "cross_arch.lr={}"])
    with pytest.raises(HelioError, match=re.escape("arch 'vgg11' is not one of cross_arch.archs ['resnet18']")):
        cross_arch_params(params, "vgg11")


def test_a_cross_arch_stage_trains_with_its_arch_learning_rate():
    params = load_params(REPO / "params.yaml", ["cross_arch.lr={swin_v2_t: 0.0001}", "cross_arch.seeds=[3]"])
    swin = cross_arch_params(params, "swin_v2_t").student
    assert swin.lr == 0.0001 and swin.archs == ["swin_v2_t"] and swin.seeds == [3]
    assert swin.label_modes == params.cross_arch.label_modes and swin.epochs == params.student.epochs
    assert cross_arch_params(params, "mobilenet_v2").student.lr == params.student.lr


@pytest.mark.parametrize("target", ["mean_logits", "mean_probs"])
def test_weak_teachers_label_with_the_target_the_projector_was_fit_to(target):
    torch.manual_seed(0)
    teachers = [nn.Linear(6, 4) for _ in range(3)]
    images = torch.randn(5, 6)
    labels = label_sources.WeakTeachers(teachers, target, 2.0)(images)
    logits = [teacher(images) for teacher in teachers]
    assert torch.allclose(labels, combine_teachers(logits, target, 2.0))
    if target == "mean_logits":
        assert torch.allclose(labels, torch.stack(logits).mean(0))
    else:  # its softmax at T is the teachers' averaged softmax at T
        averaged = torch.stack([F.softmax(x / 2.0, -1) for x in logits]).mean(0)
        assert torch.allclose(F.softmax(labels / 2.0, -1), averaged, atol=1e-6)
