import pytest
import torch
from torch import nn

from helio_core.errors import HelioError
from helio_core.methods.continual import (
    SeenClasses,
    class_steps,
    distinct_seen_sets,
    memory_indices,
    relabel,
    seen_classes,
    seen_test_indices,
)


def test_natural_order_in_5_steps_of_2_and_10_steps_of_1():
    assert class_steps(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert class_steps(10, 10) == [[label] for label in range(10)]


def test_seeded_order_is_a_fixed_permutation_per_seed():
    groups = class_steps(10, 5, seed=0)
    assert [len(group) for group in groups] == [2] * 5
    assert sorted(label for group in groups for label in group) == list(range(10))
    assert class_steps(10, 5, seed=0) == groups and class_steps(10, 5, seed=1) != groups
    assert groups != class_steps(10, 5)
    assert [group[0] for group in class_steps(10, 10, seed=0)] == [label for group in groups for label in group]


@pytest.mark.parametrize("steps", [3, 4, 20, 0])
def test_classes_must_split_into_equal_steps(steps):
    with pytest.raises(HelioError, match=rf"^steps={steps} must divide the 10 classes into equal steps$"):
        class_steps(10, steps)


def test_seen_classes_accumulate_in_order_of_arrival():
    groups = class_steps(10, 5, seed=3)
    assert seen_classes(groups, 0) == groups[0]
    assert seen_classes(groups, 2) == groups[0] + groups[1] + groups[2]
    assert sorted(seen_classes(groups, 4)) == list(range(10))


def test_schedules_from_one_class_order_train_each_seen_set_once():
    schedules = {steps: class_steps(10, steps, seed=0) for steps in (5, 10)}
    seen_sets = distinct_seen_sets(schedules)
    every_step = [tuple(seen_classes(groups, step)) for groups in schedules.values() for step in range(len(groups))]
    assert len(every_step) == 15 and len(seen_sets) == 10 and set(seen_sets) == set(every_step)
    assert seen_sets[:5] == every_step[:5]  # first arrival order: the 5-step schedule's sets, then the new ones


def test_memory_keeps_every_distilled_image_of_the_seen_classes_by_default():
    labels = torch.arange(10).repeat_interleave(10)  # IPC 10, grouped by class
    memory = memory_indices(labels, [7, 3])
    assert memory.tolist() == list(range(30, 40)) + list(range(70, 80))
    groups = class_steps(10, 5, seed=0)
    sizes = [len(memory_indices(labels, seen_classes(groups, step))) for step in range(5)]
    assert sizes == [20, 40, 60, 80, 100]


def test_memory_budget_is_balanced_capped_and_deterministic():
    labels = torch.arange(100) % 10  # IPC 10, interleaved: class c holds indices c, c + 10, ...
    memory = memory_indices(labels, [4, 1, 7], budget=8)
    counts = {label: int((labels[memory] == label).sum()) for label in (4, 1, 7)}
    assert counts == {4: 3, 1: 3, 7: 2}  # the earliest classes take the remainder
    assert memory.tolist() == [1, 4, 7, 11, 14, 17, 21, 24]  # each class's first images
    assert torch.equal(memory_indices(labels, [4, 1, 7], budget=8), memory)
    assert memory_indices(labels, [4, 1, 7], budget=1000).tolist() == memory_indices(labels, [4, 1, 7]).tolist()


def test_a_class_short_of_images_leaves_its_share_to_the_others():
    labels = torch.tensor([0] + [1] * 9 + [2] * 9)
    memory = memory_indices(labels, [0, 1, 2], budget=7)
    assert [int((labels[memory] == label).sum()) for label in range(3)] == [1, 3, 3]


def test_memory_budget_must_be_positive():
    with pytest.raises(HelioError, match=r"^memory budget must be > 0, got 0$"):
        memory_indices(torch.arange(4), [0], budget=0)


def test_test_subset_holds_the_test_images_of_the_seen_classes():
    labels = torch.tensor([3, 0, 1, 3, 2, 0, 1])
    assert seen_test_indices(labels, [3, 0]).tolist() == [0, 1, 3, 5]
    groups = class_steps(4, 2)
    assert seen_test_indices(labels, seen_classes(groups, 1)).tolist() == list(range(7))


def test_seen_classes_restrict_a_classifier_and_relabel_in_seen_order():
    model = nn.Linear(2, 5, bias=False)
    model.weight.data = torch.arange(10.0).view(5, 2)
    restricted = SeenClasses(model, [3, 1])
    torch.testing.assert_close(restricted(torch.ones(1, 2)), torch.tensor([[13.0, 5.0]]))
    assert relabel(torch.tensor([1, 3, 3, 1]), [3, 1]).tolist() == [1, 0, 0, 1]
