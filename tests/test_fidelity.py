import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helio_app.fidelity import joined_students, labellers
from helio_core.data.splits import ImageSet
from helio_core.data.views import render_views
from helio_core.params import load_params
from helio_core.training import fidelity
from helio_core.training import labels as label_sources
from helio_core.training import students as student
from tests.conftest import REPO


def _plan(epochs=4, batch_size=4, n=10):
    overrides = [f"student.epochs={epochs}", f"student.batch_size={batch_size}"]
    config = load_params(REPO / "presets" / "quick.yaml", overrides)
    return student.make_plan(n, 8, config.student, [0.5, 1.0], seed=0)


def _data(n=10, classes=5):
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return ImageSet(images, torch.arange(n) % classes, [f"c{i}" for i in range(classes)])


def test_dark_knowledge_correlation_on_hand_computed_rows():
    reference = torch.tensor([[5.0, 1.0, 2.0, 3.0], [0.0, 9.0, 1.0, 2.0]])
    reversed_rest = torch.tensor([[0.0, 3.0, 2.0, 1.0], [0.0, 0.0, 1.0, 2.0]])
    # row 0: the argmax (class 0) dropped, [1, 2, 3] against [3, 2, 1]: -1; row 1: class 1 dropped, same order: 1
    torch.testing.assert_close(fidelity.dark_knowledge_correlation(reference, reversed_rest), torch.tensor([-1.0, 1.0]))
    # one swapped pair of three: Spearman 1 - 6 * 2 / (3 * 8) = 0.5
    swapped = torch.tensor([[9.0, 2.0, 1.0, 3.0]])
    torch.testing.assert_close(fidelity.dark_knowledge_correlation(reference[:1], swapped), torch.tensor([0.5]))


def test_a_labeller_identical_to_its_reference_is_perfectly_faithful():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    same = fidelity.compare(logits, logits.clone(), temperature=4.0)
    assert same.views == 64 and same.kl == pytest.approx(0.0, abs=1e-6)
    assert same.agreement == 1.0 and same.dark_rank_corr == pytest.approx(1.0)
    assert same.entropy_reference == pytest.approx(same.entropy_labeller)


def test_kl_is_the_students_distillation_loss_and_entropy_is_bounded_by_log_classes():
    reference = torch.tensor([[2.0, 0.0, 0.0]])
    labeller = torch.tensor([[0.0, 2.0, 0.0]])
    p, q = F.softmax(reference / 2, -1), F.softmax(labeller / 2, -1)
    expected_kl = 4 * (p * (p / q).log()).sum().item()
    result = fidelity.compare(reference, labeller, temperature=2.0)
    assert result.kl == pytest.approx(expected_kl, rel=1e-5) and result.agreement == 0.0
    uniform = fidelity.compare(torch.zeros(1, 3), torch.zeros(1, 3), temperature=2.0)
    assert uniform.entropy_reference == pytest.approx(math.log(3))


def test_stream_fidelity_replays_the_students_batches_and_stored_labels_match_the_teacher():
    data, plan = _data(), _plan()
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    stored = label_sources.teacher_view_logits(teacher, data.images, data.labels, plan, 5)
    rows = fidelity.stream_fidelity(
        label_sources.online_labels(teacher),
        {"stored": label_sources.replayed_labels(stored), "other": label_sources.online_labels(other)},
        data, plan, temperature=4.0, epochs=[0, 2], views=5, device=torch.device("cpu"),
    )  # fmt: skip
    assert [row["epoch"] for row in rows["stored"]] == [1, 3, "all"]
    assert [row["views"] for row in rows["stored"]] == [8, 8, 16]  # 5 views round up to two whole batches of 4
    for row in rows["stored"]:  # the fp16 file replayed against the very views it labels
        assert row["kl"] < 1e-5 and row["agreement"] == 1.0 and row["dark_rank_corr"] == 1.0
    assert rows["other"][-1]["kl"] > 0.01 and rows["other"][-1]["agreement"] < 1.0


def test_replayed_views_are_the_ones_the_student_trains_on():
    data, plan = _data(), _plan()
    seen = []

    def recorder(epoch, positions, views):
        seen.append((epoch, positions, views.clone()))
        return torch.zeros(len(views), 5)

    fidelity.replay_logits({"r": recorder}, data, plan, epoch=1, views=4, device=torch.device("cpu"))
    ((epoch, positions, views),) = seen
    expected, _ = render_views(data.images, data.labels, plan, 1, plan.batches()[0], 5)
    assert epoch == 1 and positions == plan.batches()[0] and torch.equal(views, expected)


def test_students_are_joined_only_to_the_stream_and_the_label_files_they_trained_on():
    row = {"acc": 0.8, "val_acc": 0.81}
    table = {"epochs": 300, "ipc": 10, "label_files_sha256": {"label_net": "aa", "projector": "bb"},
             "resnet18": {"label_net": row, "projector": row, "stored": row}}  # fmt: skip
    names, hashes = ["label_net", "projector", "stored"], {"label_net": "aa", "projector": "bb"}
    assert joined_students([table], names, "resnet18", (300, 10), 0, hashes) == {name: row for name in names}
    refit = joined_students([table], names, "resnet18", (300, 10), 0, {**hashes, "label_net": "cc"})
    assert refit == {"label_net": {}, "projector": row, "stored": row}
    assert joined_students([table], names, "resnet18", (120, 10), 0, hashes) == {name: {} for name in names}
    unrecorded = {key: value for key, value in table.items() if key != "label_files_sha256"}
    assert joined_students([unrecorded], names, "resnet18", (300, 10), 0, hashes) == {"label_net": {}, "projector": {},
                                                                                     "stored": row}  # fmt: skip


def test_each_stream_joins_the_first_table_of_its_own_seeds_students():
    hashes = {"label_net": "aa", "projector": "bb"}
    per_seed = [
        {"epochs": 300, "ipc": 50, "student_seeds": [seed], "label_files_sha256": hashes,
         "resnet18": {mode: {"acc": 0.7 + index / 100, "val_acc": 0.71 + index / 100}}}
        for index, (seed, mode) in enumerate(((0, "label_net"), (1, "label_net"), (1, "projector"), (1, "label_net")))
    ]  # fmt: skip
    seed1 = joined_students(per_seed, ["label_net", "projector"], "resnet18", (300, 50), 1, hashes)
    assert seed1 == {
        "label_net": per_seed[1]["resnet18"]["label_net"],
        "projector": per_seed[2]["resnet18"]["projector"],
    }
    seed2 = joined_students(per_seed, ["label_net", "projector"], "resnet18", (300, 50), 2, hashes)
    assert seed2 == {"label_net": {}, "projector": {}}


def test_the_quantised_teachers_are_labellers_closer_to_the_teacher_the_more_bits_they_keep():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    inputs = student.StudentInputs(_data(), "sha", [0.5], [0.2], _data(), _data(), teacher, None, teacher)
    names = ["teacher_int8", "teacher_int4"]
    inputs = student.with_quantised_teachers(inputs, names)
    sources, _ = labellers(names, inputs, None, load_params(REPO / "presets" / "quick.yaml"), seed=0)
    views = torch.rand(16, 1, 8, 8)
    exact = teacher(views)
    error = {name: (label(0, slice(0, 16), views) - exact).abs().max().item() for name, label in sources.items()}
    assert 0 < error["teacher_int8"] < error["teacher_int4"]
    assert inputs.quantised_teachers["teacher_int8"][1] > inputs.quantised_teachers["teacher_int4"][1]  # file bytes
