"""DVC stage `evaluate_students`: students per label mode on the refined images -> metrics/students.json.

Runs alone (`python -m stages.evaluate_students`) or with the students dealt out to the processes of
`torchrun --nproc_per_node N -m stages.evaluate_students`."""

from helio_core import runtime
from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.student import format_table, run_evaluate_students


def main() -> None:
    params = load_params("params.yaml")
    with runtime.started(params.runtime) as here:
        metrics = run_evaluate_students(params, runtime=here)
        if here.is_main:
            print(format_table(metrics))


if __name__ == "__main__":
    exit_on_error(main)
