"""fit_projector epoch time with and without the frozen-prefix cache, side by side in one run.

    python bench/fit_projector_cache.py [--images 2000] [--resolution 64] [--repeats 3] [--device auto]

views=plain with mirrored views (the paper's fit): the teachers' targets are computed once before the
epochs in every variant, so an epoch is the projector's forward and backward alone. Variants, timed in
turn (A B C A B C ...) so that drift hits all alike, median seconds per epoch:
  all        LoRA on every layer (the default targets): nothing to cache;
  late       LoRA on blocks 4-5 only, pixels in (the prefix recomputed every epoch);
  late+cache LoRA on blocks 4-5, the unadapted prefix run once (its one-off cost printed beside it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from helio_core.params import ProjectorParams
from helio_core.progress import progress_bar
from helio_core.projector import ProjectorSpec, build_projector
from helio_core.projector_fit import cached_prefix_inputs, fit, fixed_views, pixel_inputs
from helio_core.runtime import Runtime, choose_device, choose_precision

LATE = ["blocks.4.*", "blocks.5.*"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device, 0)
    runtime = Runtime(device, choose_precision("auto", device))

    torch.manual_seed(0)
    classes = [f"class {i}" for i in range(10)]
    images = torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.images,))
    targets = torch.randn(args.images, 2, 10)
    val = (images[:100], labels[:100], targets[:100, 0])
    params = ProjectorParams(views="plain", flip=True, epochs=1, batch_size=args.batch)
    steps = -(-args.images // args.batch)

    variants, cache_seconds = {}, 0.0
    for name, targets_spec in (("all", "all"), ("late", LATE), ("late+cache", LATE)):
        spec = ProjectorSpec("efficientnet_lite0", args.resolution, "multi", "random", 8, 8.0, targets_spec, 16)
        projector = build_projector(spec, classes).to(device)
        blocks = projector.frozen_prefix_blocks() if name == "late+cache" else 0
        inputs = pixel_inputs(images)
        if blocks:
            started = time.perf_counter()
            with runtime.autocast():
                inputs = cached_prefix_inputs(projector, images, 2, blocks, args.batch)
            cache_seconds = time.perf_counter() - started
        variants[name] = (projector, fixed_views(inputs, labels, targets, params, runtime), blocks)

    seconds: dict[str, list[float]] = {name: [] for name in variants}
    generator = torch.Generator().manual_seed(0)
    with progress_bar(show=False) as bar:
        for _ in range(args.repeats):
            for name, (projector, batches, blocks) in variants.items():
                started = time.perf_counter()
                fit(projector, batches, steps, val, params, generator, bar, runtime, blocks)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.images} images x 2 views at {args.resolution} px, batch {args.batch}, {device}, {runtime.precision}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")  # fmt: skip
    for name, value in median.items():
        ratios = f"{median['all'] / value:5.2f}x vs all   {median['late'] / value:5.2f}x vs late"
        print(f"{name:<12} {value:7.2f} s/epoch   {ratios}")
    print(f"cache built once in {cache_seconds:.2f} s ({cache_seconds / median['late+cache']:.1f} cached epochs)")


if __name__ == "__main__":
    main()
