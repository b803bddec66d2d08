"""Student epoch time per label source, side by side in one run: projector labels vs teacher labels vs none.

    python bench/student_labels.py [--images 100] [--epochs 5] [--repeats 3] [--device auto]

The default's shapes: a ResNet-18 student on 28-px grey images (IPC 10 x 10 classes, batch 50, RandomResizedCrop
+ flip + CutMix planned as in evaluate_students); the projector is EfficientNet-Lite0 multi-level at 64 px with
LoRA r8 + head r16 (adapted weights computed once, as evaluate_students does), the teacher a ResNet-18. Modes are
timed in turn (A B C A B C ...), median seconds per epoch; the ratio is to the hard-label student.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.utils import parametrize

from helio_core import models
from helio_core.params import StudentParams
from helio_core.projector import ProjectorSpec, build_projector
from helio_core.runtime import Runtime, choose_device, choose_precision
from helio_core.student import make_plan, new_student, online_labels, train_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device, 0)
    runtime = Runtime(device, choose_precision("auto", device))

    torch.manual_seed(0)
    classes = [f"class {i}" for i in range(10)]
    images = torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(args.images) % 10
    params = StudentParams(epochs=args.epochs, eval_every=10**6)
    plan = make_plan(args.images, 28, params, [0.5, 1.0], seed=0)
    spec = ProjectorSpec("efficientnet_lite0", 64, "multi", "random", 8, 8.0, "all", 16)
    projector = build_projector(spec, classes).requires_grad_(False).eval().to(device)
    teacher = models.create_model("resnet18", 10, 1, 28, [0.5], [0.25]).eval().to(device)
    sources = {"hard": None, "teacher": online_labels(teacher), "projector": online_labels(projector)}

    seconds: dict[str, list[float]] = {mode: [] for mode in sources}
    with parametrize.cached():
        for _ in range(args.repeats):
            for mode, source in sources.items():
                student = new_student("resnet18", 10, images, [0.5], [0.25], seed=0, device=device)
                started = time.perf_counter()
                train_student(student, mode, images, labels, plan, source, params, 10, lambda m: 0.0, runtime=runtime)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[mode].append((time.perf_counter() - started) / args.epochs)
    median = {mode: statistics.median(values) for mode, values in seconds.items()}
    print(f"{args.images} images, batch {params.batch_size}, {device}, {runtime.precision}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} x {args.epochs} epochs")  # fmt: skip
    for mode, value in median.items():
        print(f"{mode:<10} {value * 1000:8.1f} ms/epoch   {value / median['hard']:5.2f}x the hard-label student")
    print(f"projector / teacher labels: {median['projector'] / median['teacher']:.2f}x")


if __name__ == "__main__":
    main()
