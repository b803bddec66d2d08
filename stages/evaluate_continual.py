"""Stage `evaluate_continual` (experiments/continual/dvc.yaml): the paper's Fig. 2, class-incremental learning
(GDumb) on the refined images -> metrics/continual.json and plots/continual.png.

For each schedule in continual.steps, each seed and label mode, a student per step is trained from scratch on
the memory (the student section's recipe, labels restricted to the seen classes) and tested on the seen classes;
schedules that meet the same seen classes share that student."""

from __future__ import annotations

import itertools

from torch.nn.utils import parametrize

from helio_core import artifacts
from helio_core.data.splits import ImageSet
from helio_core.methods.continual import (
    SeenClasses,
    accuracy_per_step,
    class_steps,
    distinct_seen_sets,
    memory_indices,
    relabel,
    seen_test_indices,
)
from helio_core.params import Params
from helio_core.progress import SILENT, Progress
from helio_core.reporting.figures import plot_continual
from helio_core.runtime import CPU, Runtime
from helio_core.training.engine import accuracy
from helio_core.training.labels import online_labels
from helio_core.training.students import StudentInputs, load_student_inputs, make_plan, new_student, train_student
from helio_core.workspace import Workspace


def run(params: Params, workspace: Workspace, runtime: Runtime = CPU, progress: Progress = SILENT) -> dict:
    runtime.require_single("evaluate_continual")
    config, student = params.continual, params.student
    label_net = "label_net" in config.label_modes
    inputs = load_student_inputs(workspace, runtime, student.teacher_batchnorm, label_net=label_net)
    classes = inputs.distilled.classes
    schedules = {steps: class_steps(len(classes), steps, config.class_order_seed) for steps in config.steps}
    seen_sets = distinct_seen_sets(schedules)
    jobs = list(itertools.product(config.seeds, config.label_modes, seen_sets))
    task = progress.task(f"{len(seen_sets)} seen-class sets", total=len(jobs))
    seen_accuracy = {}
    with parametrize.cached():
        for seed, mode, seen_set in jobs:
            seen_accuracy[seed, mode, seen_set] = _seen_set_accuracy(
                inputs, params, seed, mode, list(seen_set), runtime
            )
            task.advance()
    summary = accuracy_per_step(schedules, seen_accuracy, config.seeds, config.label_modes)
    metrics = {
        "arch": student.archs[0],
        "epochs": student.epochs,
        "class_order": {str(steps): groups for steps, groups in schedules.items()},
        "accuracy_per_step": summary,
        "seeds": config.seeds,
        "students_trained": len(jobs),
    }
    artifacts.write_json(workspace.continual_metrics, metrics)
    plot_continual(workspace.continual_plot, summary, len(classes))
    return metrics


def _seen_set_accuracy(
    inputs: StudentInputs, params: Params, seed: int, mode: str, seen: list[int], runtime: Runtime
) -> float:
    """A student trained from scratch on the memory of the seen classes, scored on their test images."""
    student, images, labels = params.student, inputs.distilled.images, inputs.distilled.labels
    memory = memory_indices(labels, seen, params.continual.memory)
    plan = make_plan(len(memory), images.shape[-1], student, params.student_crop_scale, seed)
    model = new_student(student.archs[0], len(inputs.distilled.classes), images, inputs.mean, inputs.std, seed,
                        runtime.device)  # fmt: skip
    networks = {"projector": inputs.projector, "label_net": inputs.label_net, "teacher": inputs.teacher}
    labeller = networks.get(mode)
    soft = online_labels(SeenClasses(labeller, seen).to(runtime.device)) if labeller else None
    restricted = SeenClasses(model, seen).to(runtime.device)
    memory_set = ImageSet(images[memory], relabel(labels[memory], seen), [inputs.distilled.classes[c] for c in seen])
    train_student(restricted, mode, memory_set, plan, soft, student, lambda m: 0.0, runtime)
    tested = seen_test_indices(inputs.test.labels, seen)
    with runtime.autocast():
        return accuracy(restricted, inputs.test.images[tested], relabel(inputs.test.labels[tested], seen))


def summary(metrics: dict) -> list[str]:
    return [
        f"{steps:>3} steps  {mode:<10} " + " ".join(f"{100 * a:5.1f}" for a in accuracies)
        for steps, modes in metrics["accuracy_per_step"].items()
        for mode, accuracies in modes.items()
    ]
