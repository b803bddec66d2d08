"""DVC stage `evaluate_students`: students per label mode on the refined images -> metrics/students.json."""

from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.student import format_table, run_evaluate_students


def main() -> None:
    print(format_table(run_evaluate_students(load_params("params.yaml"))))


if __name__ == "__main__":
    exit_on_error(main)
