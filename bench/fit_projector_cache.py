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

import time
from functools import partial
from pathlib import Path

import torch
from timing import arguments, grey_images, interleaved, runtime_of

from helio_core.methods.projector_fit import cached_prefix_inputs, fit, fixed_views, pixel_inputs
from helio_core.models.projector import ProjectorSpec, build_projector
from helio_core.params import load_params
from helio_core.progress import SILENT

LATE = ["blocks.4.*", "blocks.5.*"]
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = arguments(__doc__, repeats=3)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    runtime = runtime_of(args)
    device = runtime.device

    classes, images = grey_images(args.images)
    labels = torch.randint(0, 10, (args.images,))
    targets = torch.randn(args.images, 2, 10)
    val = (images[:100], labels[:100], targets[:100, 0])
    overrides = [
        "projector.views=plain",
        "projector.flip=true",
        "projector.epochs=1",
        f"projector.batch_size={args.batch}",
    ]
    params = load_params(REPO / "params.yaml", overrides).projector
    steps = -(-args.images // args.batch)

    variants, cache_seconds = {}, 0.0
    for name, targets_spec in (("all", "all"), ("late", LATE), ("late+cache", LATE)):
        spec = ProjectorSpec("efficientnet_lite0", args.resolution, "multi", "random", 8, 8.0, targets_spec, 16)
        projector = build_projector(spec, classes, logit_scale=params.logit_scale, seed=0).to(device)
        blocks = projector.frozen_prefix_blocks() if name == "late+cache" else 0
        inputs = pixel_inputs(images)
        if blocks:
            started = time.perf_counter()
            with runtime.autocast():
                inputs = cached_prefix_inputs(projector, images, 2, blocks, args.batch)
            cache_seconds = time.perf_counter() - started
        variants[name] = (projector, fixed_views(inputs, labels, targets, params, runtime), blocks)

    generator = torch.Generator().manual_seed(0)
    runs = {
        name: partial(fit, projector, batches, steps, val, params, generator, SILENT, runtime, blocks)
        for name, (projector, batches, blocks) in variants.items()
    }
    median = interleaved(runs, args.repeats, warm_up=False)
    print(f"{args.images} images x 2 views at {args.resolution} px, batch {args.batch}, {device}, {runtime.precision}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")  # fmt: skip
    for name, value in median.items():
        ratios = f"{median['all'] / value:5.2f}x vs all   {median['late'] / value:5.2f}x vs late"
        print(f"{name:<12} {value:7.2f} s/epoch   {ratios}")
    print(f"cache built once in {cache_seconds:.2f} s ({cache_seconds / median['late+cache']:.1f} cached epochs)")


if __name__ == "__main__":
    main()
