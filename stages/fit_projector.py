"""DVC stage `fit_projector`: the LoRA projector fitted to the weak teachers -> artifacts/projector/.

Runs alone (`python -m stages.fit_projector`) or data-parallel (`torchrun --nproc_per_node N -m ...`)."""

from helio_core import runtime
from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.projector_fit import run_fit_projector


def main() -> None:
    params = load_params("params.yaml")
    with runtime.started(params.runtime) as here:
        metrics = run_fit_projector(params, runtime=here)
        if not here.is_main:
            return
    after, before = metrics["after_lora"], metrics["before_lora"]
    ratio = metrics["teacher_to_projector_ratio"]
    print(f"projector: {metrics['projector_bytes']:,} bytes, {ratio}x smaller than a teacher checkpoint")
    print(f"test accuracy {before['acc']:.4f} (head init only) -> {after['acc']:.4f} (fitted)")
    print(f"agreement with the weak teachers {before['agreement']:.4f} -> {after['agreement']:.4f}")


if __name__ == "__main__":
    exit_on_error(main)
