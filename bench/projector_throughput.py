"""Projector labelling throughput vs the plain backbone forward, on the same batch, in one run.

    python bench/projector_throughput.py [--backbone efficientnet_lite0] [--resolution 64] [--batch 256]

Prints images/s (median of the repeats) of: the frozen backbone alone; the projector (LoRA applied as a
weight parametrization, recomputed per call); the projector under `parametrize.cached()` (how helio
labels: the adapted weights are computed once per batch); and the ratios to the backbone.
"""

from __future__ import annotations

from functools import partial

import torch
from timing import arguments, interleaved, runtime_of
from torch.nn.utils import parametrize

from helio_core.models.backbones import create_backbone
from helio_core.models.projector import ProjectorSpec, build_projector


def main() -> None:
    parser = arguments(__doc__, repeats=7)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--head-rank", type=int, default=16)
    args = parser.parse_args()
    device = runtime_of(args).device

    torch.manual_seed(0)
    batch = torch.rand(args.batch, 1, 32, 32, device=device)
    spec = ProjectorSpec(args.backbone, args.resolution, "multi", "random", args.rank, 8.0, "all", args.head_rank)
    projector = build_projector(spec, [f"class {i}" for i in range(10)], logit_scale=10.0, seed=0).eval().to(device)
    for parameter in projector.trainable_parameters():
        torch.nn.init.normal_(parameter, std=0.01)  # a trained-looking projector, not the identity
    backbone = create_backbone(args.backbone, args.resolution, "multi").encoder.to(device)

    def cached(images: torch.Tensor) -> torch.Tensor:
        with parametrize.cached():
            return projector(images)

    with torch.inference_mode():
        runs = {"plain": backbone, "adapted": projector, "cached": cached}
        seconds = interleaved({name: partial(run, batch) for name, run in runs.items()}, args.repeats)
    speed = {name: len(batch) / value for name, value in seconds.items()}
    plain, adapted, merged = speed["plain"], speed["adapted"], speed["cached"]
    print(f"{args.backbone} at {args.resolution} px, batch {args.batch}, {device}, {torch.get_num_threads()} threads")
    print(f"backbone forward            {plain:8.0f} img/s   1.00")
    print(f"projector (per-call LoRA)   {adapted:8.0f} img/s   {adapted / plain:.2f}")
    print(f"projector (cached weights)  {merged:8.0f} img/s   {merged / plain:.2f}")


if __name__ == "__main__":
    main()
