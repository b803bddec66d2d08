"""DVC stage `fit_projector`: the LoRA projector fitted to the weak teachers -> artifacts/projector/."""

from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.projector_fit import run_fit_projector


def main() -> None:
    metrics = run_fit_projector(load_params("params.yaml"))
    after, before = metrics["after_lora"], metrics["before_lora"]
    ratio = metrics["teacher_to_projector_ratio"]
    print(f"projector: {metrics['projector_bytes']:,} bytes, {ratio}x smaller than a teacher checkpoint")
    print(f"test accuracy {before['acc']:.4f} (head init only) -> {after['acc']:.4f} (fitted)")
    print(f"agreement with the weak teachers {before['agreement']:.4f} -> {after['agreement']:.4f}")


if __name__ == "__main__":
    exit_on_error(main)
