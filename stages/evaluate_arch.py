"""DVC matrix stage `evaluate_arch@<arch>` (experiments/cross_arch/dvc.yaml): the paper's Table 2, one
architecture's students -> metrics/cross_arch/<arch>.json. Run alone as `python -m stages.evaluate_arch <arch>`."""

import sys

from helio_core import runtime
from helio_core.errors import HelioError, exit_on_error
from helio_core.params import load_params
from helio_core.student import format_table, run_evaluate_arch


def main() -> None:
    if len(sys.argv) != 2:
        raise HelioError("usage: python -m stages.evaluate_arch <arch>, one of cross_arch.archs in params.yaml")
    params = load_params("params.yaml")
    with runtime.started(params.runtime) as here:
        metrics = run_evaluate_arch(params, sys.argv[1], runtime=here)
        if here.is_main:
            print(format_table(metrics))


if __name__ == "__main__":
    exit_on_error(main)
