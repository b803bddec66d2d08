"""DVC stage `evaluate_continual` (experiments/continual/dvc.yaml): the paper's Fig. 2 -> metrics/continual.json."""

from helio_core import runtime
from helio_core.continual import run_evaluate_continual
from helio_core.errors import exit_on_error
from helio_core.params import load_params


def main() -> None:
    params = load_params("params.yaml")
    with runtime.started(params.runtime) as here:
        metrics = run_evaluate_continual(params, runtime=here)
    for steps, modes in metrics["accuracy_per_step"].items():
        for mode, accuracies in modes.items():
            print(f"{steps:>3} steps  {mode:<10} " + " ".join(f"{100 * a:5.1f}" for a in accuracies))


if __name__ == "__main__":
    exit_on_error(main)
