"""Autocast precision vs fp32 on this machine's device, side by side in one run: why `runtime.precision: auto`
stays fp32 on the CPU and takes bf16 on CUDA.

    python bench/precision.py [--device auto] [--repeats 20] [--profile 8]

Times (median ms, A B A B ...) a ResNet-18 student training step (batch 50, 28-px grey) and the projector's
forward (EfficientNet-Lite0 multi-level at 64 px, LoRA r8, batch 50) at fp32 and under bf16 autocast
(and fp16 on CUDA). `--profile N` then lists the N ops (kernels on CUDA) that take the projector's forward longest
at each precision (torch.profiler): where bf16 is slower, the op that falls off the fast path is named there.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from timing import arguments, interleaved, runtime_of
from torch.nn.utils import parametrize

from helio_core.models import architectures as models
from helio_core.models.projector import ProjectorSpec, build_projector
from helio_core.runtime import Runtime


def main() -> None:
    parser = arguments(__doc__, repeats=20)
    parser.add_argument("--profile", type=int, default=0, help="list the N longest ops of the projector's forward")
    args = parser.parse_args()
    device = runtime_of(args).device
    precisions = ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    runtimes = {name: Runtime(device, name) for name in precisions}

    torch.manual_seed(0)
    images = torch.rand(50, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (50,), device=device)
    students = {
        name: models.create_model("resnet18", 10, 1, 28, [0.5], [0.25]).to(device, memory_format=torch.channels_last)
        for name in precisions
    }
    optimizers = {name: torch.optim.AdamW(students[name].parameters(), fused=True) for name in precisions}
    spec = ProjectorSpec("efficientnet_lite0", 64, "multi", "random", 8, 8.0, "all", 16)
    projector = build_projector(spec, [str(i) for i in range(10)], logit_scale=10.0, seed=0).eval().to(device)

    def train_step(name: str) -> None:
        with runtimes[name].autocast():
            loss = F.cross_entropy(students[name](images).float(), labels)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    def label(name: str) -> None:
        with torch.inference_mode(), parametrize.cached(), runtimes[name].autocast():
            projector(images)

    results = {}
    for task, run in (("student train step", train_step), ("projector forward", label)):
        seconds = interleaved({name: partial(run, name) for name in precisions}, args.repeats)
        results[task] = {name: value * 1000 for name, value in seconds.items()}
    print(f"{device}, {torch.get_num_threads()} threads, median of {args.repeats}; speed relative to fp32")
    for task, row in results.items():
        cells = "   ".join(f"{name} {ms:7.1f} ms {row['fp32'] / ms:4.2f}x" for name, ms in row.items())
        print(f"{task:<20} {cells}")
    for name in precisions if args.profile else ():
        print(f"\nprojector forward at {name}: the {args.profile} ops that take longest")
        print(profile(partial(label, name), device, args.profile))


def profile(run: Callable[[], None], device: torch.device, rows: int) -> str:
    """torch.profiler's table of `run` (after a warm-up), sorted by the device's own time."""
    run()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(5):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=key, row_limit=rows)


if __name__ == "__main__":
    main()
