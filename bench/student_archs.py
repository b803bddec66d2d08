"""Training step time of every registered architecture, side by side: what a student of each costs.

    python bench/student_archs.py [--batch 50] [--size 28] [--channels 1] [--repeats 3] [--threads N] [--device auto]

One step is forward, backward and AdamW on a batch of random images (default: 50 grey 28-px images, the default
students' shape; at this size the cross-architecture students are their low-resolution variants, see
helio_core/models/architectures.py).
Architectures are timed in turn (A B C A B C ...) after one untimed warm-up step each; median ms per step,
and the ratio to resnet18.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timing import arguments, interleaved, runtime_of

from helio_core.models import architectures as models


def main() -> None:
    parser = arguments(__doc__, repeats=3)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, the cores)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = runtime_of(args).device

    torch.manual_seed(0)
    images = torch.rand(args.batch, args.channels, args.size, args.size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(args.batch, device=device) % 10
    steps = {}
    for arch in models.list_models():
        model = models.create_model(arch, 10, args.channels, args.size, [0.5] * args.channels, [0.25] * args.channels)
        model = model.to(device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer) -> None:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[arch] = step

    median = interleaved(steps, args.repeats)
    print(f"batch {args.batch} x {args.channels} x {args.size} px, {device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} steps")  # fmt: skip
    for arch, value in median.items():
        print(f"{arch:<16} {value * 1000:9.1f} ms/step   {value / median['resnet18']:6.2f}x resnet18")


if __name__ == "__main__":
    main()
