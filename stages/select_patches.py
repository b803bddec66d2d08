"""DVC stage `select_patches`: RDED patch selection -> artifacts/distilled/{images/*.png,labels.json}."""

from helio_core import runtime
from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.selection import run_select_patches


def main() -> None:
    params = load_params("params.yaml")
    with runtime.started(params.runtime) as here:
        report = run_select_patches(params, runtime=here)
    print(f"{report['images']} distilled images, observer epoch {report['observer_epoch']}")


if __name__ == "__main__":
    exit_on_error(main)
