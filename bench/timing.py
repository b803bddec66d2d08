"""What every benchmark here shares: its command line (device, repeats) and interleaved timing."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from helio_core.runtime import Runtime, choose_device, choose_precision


def arguments(doc: str, repeats: int) -> argparse.ArgumentParser:
    """A parser with --device and --repeats; each script adds its own options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser


def runtime_of(args: argparse.Namespace) -> Runtime:
    """One process on the asked device, with the precision `runtime.precision: auto` takes there."""
    device = choose_device(args.device, 0)
    return Runtime(device, choose_precision("auto", device))


def grey_images(count: int) -> tuple[list[str], torch.Tensor]:
    """Ten class names and `count` random 28-px grey uint8 images (the default data's shape), seeded."""
    torch.manual_seed(0)
    return [f"class {i}" for i in range(10)], torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8)


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Median seconds of each run, timed in turn (A B C A B C ...) so that drift on a shared machine hits all
    alike; CUDA work is waited for before each clock reading."""
    if warm_up:
        for run in runs.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}
