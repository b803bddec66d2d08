"""DVC stage `prepare`: the raw data set -> artifacts/data/{train,val,test}.safetensors and classes.json."""

from helio_core.data import run_prepare
from helio_core.errors import exit_on_error
from helio_core.params import load_params


def main() -> None:
    report = run_prepare(load_params("params.yaml"))
    print(
        f"prepared {report['train']} train / {report['val']} val / {report['test']} test images, "
        f"{report['classes']} classes"
    )


if __name__ == "__main__":
    exit_on_error(main)
