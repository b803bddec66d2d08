"""DVC stage `refine_images`: paper Eq. 7 through the adapted encoder -> artifacts/refined/."""

from helio_core import runtime
from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.refine import run_refine_images


def main() -> None:
    params = load_params("params.yaml")
    with runtime.started(params.runtime) as here:
        metrics = run_refine_images(params, runtime=here)
    before, after = metrics["before"], metrics["after"]
    print(f"projector/teacher agreement on the distilled images {before['agreement']:.4f} -> {after['agreement']:.4f}")
    if metrics["enabled"]:
        print(f"Eq. 7 loss {metrics['loss_before']:.5f} -> {metrics['loss_after']:.5f}")


if __name__ == "__main__":
    exit_on_error(main)
