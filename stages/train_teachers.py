"""DVC stage `train_teachers`: one trajectory from scratch -> artifacts/teachers/epoch_XXX.safetensors.

Runs alone (`python -m stages.train_teachers`) or data-parallel (`torchrun --nproc_per_node N -m ...`)."""

from helio_core import runtime
from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.teachers import run_train_teachers


def main() -> None:
    params = load_params("params.yaml")
    with runtime.started(params.runtime) as here:
        metrics = run_train_teachers(params, runtime=here)
        if here.is_main:
            print(f"last kept epoch {metrics['last_epoch']}: test accuracy {metrics['last_test_acc_full']:.4f}")


if __name__ == "__main__":
    exit_on_error(main)
