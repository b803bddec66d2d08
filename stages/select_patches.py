"""DVC stage `select_patches`: RDED patch selection -> artifacts/distilled/{images/*.png,labels.json}."""

from helio_core.errors import exit_on_error
from helio_core.params import load_params
from helio_core.selection import run_select_patches


def main() -> None:
    report = run_select_patches(load_params("params.yaml"))
    print(f"{report['images']} distilled images, observer epoch {report['observer_epoch']}")


if __name__ == "__main__":
    exit_on_error(main)
