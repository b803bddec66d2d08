"""Projector labelling throughput vs the plain backbone forward, on the same batch, in one run.

    python bench/projector_throughput.py [--backbone efficientnet_lite0] [--resolution 64] [--batch 256]

Prints images/s (median of the repeats) of: the frozen backbone alone; the projector (LoRA applied as a
weight parametrization, recomputed per call); the projector under `parametrize.cached()` (how helio
labels: the adapted weights are computed once per batch); and the ratios to the backbone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.utils import parametrize

from helio_core.backbones import create_backbone
from helio_core.projector import ProjectorSpec, build_projector
from helio_core.runtime import choose_device


def images_per_second(runs: dict, batch: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median images/s of each callable, timed in turn (A B C A B C ...) so that drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():
            run(batch)  # warm-up
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run(batch)
                if batch.is_cuda:
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    return {name: len(batch) / statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--head-rank", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device, 0)

    torch.manual_seed(0)
    batch = torch.rand(args.batch, 1, 32, 32, device=device)
    spec = ProjectorSpec(args.backbone, args.resolution, "multi", "random", args.rank, 8.0, "all", args.head_rank)
    projector = build_projector(spec, [f"class {i}" for i in range(10)]).eval().to(device)
    for parameter in projector.trainable_parameters():
        torch.nn.init.normal_(parameter, std=0.01)  # a trained-looking projector, not the identity
    backbone = create_backbone(args.backbone, args.resolution, "multi").encoder.to(device)

    def cached(images: torch.Tensor) -> torch.Tensor:
        with parametrize.cached():
            return projector(images)

    speed = images_per_second({"plain": backbone, "adapted": projector, "cached": cached}, batch, args.repeats)
    plain, adapted, merged = speed["plain"], speed["adapted"], speed["cached"]
    print(f"{args.backbone} at {args.resolution} px, batch {args.batch}, {device}, {torch.get_num_threads()} threads")
    print(f"backbone forward            {plain:8.0f} img/s   1.00")
    print(f"projector (per-call LoRA)   {adapted:8.0f} img/s   {adapted / plain:.2f}")
    print(f"projector (cached weights)  {merged:8.0f} img/s   {merged / plain:.2f}")


if __name__ == "__main__":
    main()
