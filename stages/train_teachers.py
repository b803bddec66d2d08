"""DVC stage `train_teachers`: one trajectory from scratch -> artifacts/teachers/epoch_XXX.safetensors."""

from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.teachers import run_train_teachers


def main() -> None:
    metrics = run_train_teachers(load_params("params.yaml"))
    print(f"last kept epoch {metrics['last_epoch']}: test accuracy {metrics['last_test_acc_full']:.4f}")


if __name__ == "__main__":
    exit_on_error(main)
