"""Class-incremental splits for the continual-learning evaluation (paper Fig. 2: GDumb, as DM and SRe2L use it).

At each step new classes arrive; GDumb trains a model from scratch on its memory (a class-balanced sample of
everything seen so far, here the distilled images of the seen classes) and tests it on the test images of the
seen classes. The pure functions say which classes, memory images and test images each step uses; the stage
`evaluate_continual` (its own pipeline, experiments/continual/dvc.yaml) trains the students per label mode.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from helio_core import artifacts, report
from helio_core.data import DataPaths
from helio_core.distilled import REFINED, DistilledPaths
from helio_core.errors import HelioError
from helio_core.params import Params
from helio_core.progress import progress_bar
from helio_core.projector_fit import ProjectorPaths
from helio_core.runtime import CPU, Runtime
from helio_core.student import load_student_inputs, make_plan, new_student, online_labels, train_student
from helio_core.teachers import TeacherPaths, accuracy


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


@dataclass(frozen=True)
class ContinualPaths:
    metrics: Path = Path("metrics/continual.json")
    plot: Path = Path("plots/continual.png")


def run_evaluate_continual(
    params: Params,
    paths: ContinualPaths = ContinualPaths(),
    refined_paths: DistilledPaths = REFINED,
    distilled_paths: DistilledPaths = DistilledPaths(),
    projector_paths: ProjectorPaths = ProjectorPaths(),
    teacher_paths: TeacherPaths = TeacherPaths(),
    data_paths: DataPaths = DataPaths(),
    runtime: Runtime = CPU,
) -> dict:
    """For each schedule in continual.steps, each seed and label mode: a student per step trained from scratch
    on the memory (the student section's recipe, labels restricted to the seen classes) and its test accuracy
    on the seen classes. Writes the accuracy per step, mean over seeds, and a plot of it."""
    runtime.require_single("evaluate_continual")
    config, student = params.continual, params.student
    inputs = load_student_inputs(runtime, refined_paths, distilled_paths, projector_paths, teacher_paths, data_paths,
                                 teacher_batchnorm=student.teacher_batchnorm)  # fmt: skip
    classes, train_meta, test, images, labels = (
        inputs.classes,
        inputs.train_meta,
        inputs.test,
        inputs.images,
        inputs.labels,
    )
    labellers = {"projector": inputs.projector, "teacher": inputs.teacher, "hard": None}
    schedules = {steps: class_steps(len(classes), steps, config.class_order_seed) for steps in config.steps}
    seen_sets = distinct_seen_sets(schedules)
    jobs = list(itertools.product(config.seeds, config.label_modes, seen_sets))
    seen_accuracy: dict[tuple[int, str, tuple[int, ...]], float] = {}
    with progress_bar(runtime.is_main) as bar, parametrize.cached():
        task = bar.add_task(f"{len(seen_sets)} seen-class sets", total=len(jobs), status="")
        for seed, mode, seen_set in jobs:
            seen = list(seen_set)
            memory = memory_indices(labels, seen, config.memory)
            plan = make_plan(len(memory), images.shape[-1], student, params.student_crop_scale, seed)
            model = new_student(student.archs[0], len(classes), images, train_meta["mean"], train_meta["std"], seed,
                                runtime.device)  # fmt: skip
            labeller = labellers[mode]
            soft = online_labels(SeenClasses(labeller, seen).to(runtime.device)) if labeller else None
            restricted = SeenClasses(model, seen).to(runtime.device)
            train_student(restricted, mode, images[memory], relabel(labels[memory], seen), plan, soft, student,
                          len(seen), lambda m: 0.0, runtime=runtime)  # fmt: skip
            tested = seen_test_indices(test.labels, seen)
            with runtime.autocast():
                seen_accuracy[seed, mode, seen_set] = accuracy(restricted, test.images[tested],
                                                               relabel(test.labels[tested], seen))  # fmt: skip
            bar.advance(task)
    accuracy_per_step = {
        str(steps): {
            mode: [
                [seen_accuracy[seed, mode, tuple(seen_classes(groups, step))] for step in range(steps)]
                for seed in config.seeds
            ]
            for mode in config.label_modes
        }
        for steps, groups in schedules.items()
    }
    summary = {
        steps: {
            mode: [round(statistics.fmean(values), 5) for values in zip(*curves, strict=True)]
            for mode, curves in modes.items()
        }
        for steps, modes in accuracy_per_step.items()
    }
    metrics = {
        "arch": student.archs[0],
        "epochs": student.epochs,
        "class_order": {str(steps): groups for steps, groups in schedules.items()},
        "accuracy_per_step": summary,
        "seeds": config.seeds,
        "students_trained": len(jobs),
    }
    artifacts.write_json(paths.metrics, metrics)
    report.plot_continual(paths.plot, summary, len(classes))
    return metrics
