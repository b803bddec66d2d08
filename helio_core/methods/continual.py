"""Class-incremental splits for the continual-learning evaluation (paper Fig. 2: GDumb, as DM and SRe2L use it).

At each step new classes arrive; GDumb trains a model from scratch on its memory (a class-balanced sample of
everything seen so far, here the distilled images of the seen classes) and tests it on the test images of the
seen classes. The pure functions say which classes, memory images and test images each step uses; the stage
`evaluate_continual` (its own pipeline, experiments/continual/dvc.yaml) trains the students per label mode.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from helio_core.errors import HelioError


def class_steps(num_classes: int, steps: int, seed: int | None = None) -> list[list[int]]:
    """The classes arriving at each step: a seeded permutation of the classes (their natural order for seed None)
    cut into `steps` equal groups, e.g. 10 classes in 5 steps of 2 or 10 steps of 1."""
    if steps <= 0 or num_classes % steps:
        raise HelioError(f"steps={steps} must divide the {num_classes} classes into equal steps")
    if seed is None:
        order = torch.arange(num_classes)
    else:
        order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))
    return [group.tolist() for group in order.chunk(steps)]


def seen_classes(groups: list[list[int]], step: int) -> list[int]:
    """Every class that has arrived by `step` (counted from 0), in order of arrival."""
    return [label for group in groups[: step + 1] for label in group]


def distinct_seen_sets(schedules: dict[int, list[list[int]]]) -> list[tuple[int, ...]]:
    """Every step's seen classes over all schedules, each once, in order of first arrival. Schedules cut from
    one class order meet the same seen classes at several steps (5 steps of 2 and 10 of 1 share 5 of their
    15 steps): a student is trained once per seen set, not once per step."""
    seen_sets = (tuple(seen_classes(groups, step)) for groups in schedules.values() for step in range(len(groups)))
    return list(dict.fromkeys(seen_sets))


def memory_indices(labels: torch.Tensor, seen: list[int], budget: int | None = None) -> torch.Tensor:
    """The GDumb memory at a step: indices (ascending) of the images of the seen classes, at most `budget`.

    None keeps them all (IPC x seen classes for a distilled set). A smaller budget deals images round-robin
    over the seen classes in order of arrival, each class's in index order (distilled image 0 first), so class
    counts differ by at most one, the earliest classes get the remainder, a class short of images leaves its
    share to the others, and the same inputs always give the same memory."""
    if budget is not None and budget <= 0:
        raise HelioError(f"memory budget must be > 0, got {budget}")
    members = [(labels == label).nonzero().flatten() for label in seen]
    index = torch.cat(members)
    if budget is None or budget >= len(index):
        return index.sort().values
    deal = torch.cat([torch.arange(len(group)) * len(seen) + arrival for arrival, group in enumerate(members)])
    return index[deal.argsort()[:budget]].sort().values


def seen_test_indices(labels: torch.Tensor, seen: list[int]) -> torch.Tensor:
    """Indices (ascending) of the test images whose class has been seen."""
    return torch.isin(labels, torch.tensor(seen, dtype=labels.dtype)).nonzero().flatten()


class SeenClasses(nn.Module):
    """A classifier restricted to the seen classes (GDumb masks the others): logits in `seen` order."""

    def __init__(self, model: nn.Module, seen: list[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("seen", torch.tensor(seen), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[:, self.seen]


def relabel(labels: torch.Tensor, seen: list[int]) -> torch.Tensor:
    """Class indices -> positions in `seen` (the restricted classifier's output order)."""
    position = torch.full((int(labels.max()) + 1,), -1, dtype=torch.int64)
    position[torch.tensor(seen)] = torch.arange(len(seen))
    return position[labels]


def accuracy_per_step(
    schedules: dict[int, list[list[int]]], seen_accuracy: dict[tuple[int, str, tuple[int, ...]], float],
    seeds: list[int], modes: list[str],
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """Each schedule's accuracy after each step per label mode, mean over seeds, from the accuracy of the student
    trained on each (seed, mode, seen-class set)."""
    return {
        str(steps): {
            mode: [
                round(
                    statistics.fmean(seen_accuracy[seed, mode, tuple(seen_classes(groups, step))] for seed in seeds), 5
                )
                for step in range(steps)
            ]
            for mode in modes
        }
        for steps, groups in schedules.items()
    }
