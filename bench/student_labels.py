"""Student epoch time per label source, side by side in one run: projector labels vs teacher labels vs none.

    python bench/student_labels.py [--images 100] [--epochs 5] [--repeats 3] [--device auto]

The default's shapes: a ResNet-18 student on 28-px grey images (IPC 10 x 10 classes, batch 50, RandomResizedCrop
+ flip + CutMix planned as in evaluate_students); the projector is EfficientNet-Lite0 multi-level at 64 px with
LoRA r8 + head r16 (adapted weights computed once, as evaluate_students does), the teacher a ResNet-18. Modes are
timed in turn (A B C A B C ...), median seconds per epoch; the ratio is to the hard-label student.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from timing import arguments, grey_images, interleaved, runtime_of
from torch.nn.utils import parametrize

from helio_core.data.splits import ImageSet
from helio_core.models.architectures import create_model
from helio_core.models.projector import ProjectorSpec, build_projector
from helio_core.params import load_params
from helio_core.training.labels import online_labels
from helio_core.training.students import make_plan, new_student, train_student

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = arguments(__doc__, repeats=3)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    runtime = runtime_of(args)
    device = runtime.device

    classes, images = grey_images(args.images)
    labels = torch.arange(args.images) % 10
    params = load_params(REPO / "params.yaml", [f"student.epochs={args.epochs}", "student.eval_every=1000000"]).student
    plan = make_plan(args.images, 28, params, [0.5, 1.0], seed=0)
    spec = ProjectorSpec("efficientnet_lite0", 64, "multi", "random", 8, 8.0, "all", 16)
    projector = build_projector(spec, classes, logit_scale=10.0, seed=0).requires_grad_(False).eval().to(device)
    teacher = create_model("resnet18", 10, 1, 28, [0.5], [0.25]).eval().to(device)
    sources = {"hard": None, "teacher": online_labels(teacher), "projector": online_labels(projector)}

    data = ImageSet(images, labels, classes)
    runs = {  # each mode trains its own student on, repeat after repeat: an epoch costs the same
        mode: partial(train_student, new_student("resnet18", 10, images, [0.5], [0.25], 0, device), mode, data, plan,
                      source, params, lambda m: 0.0, runtime)
        for mode, source in sources.items()
    }  # fmt: skip
    with parametrize.cached():
        median = {mode: value / args.epochs for mode, value in interleaved(runs, args.repeats, warm_up=False).items()}
    print(f"{args.images} images, batch {params.batch_size}, {device}, {runtime.precision}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} x {args.epochs} epochs")  # fmt: skip
    for mode, value in median.items():
        print(f"{mode:<10} {value * 1000:8.1f} ms/epoch   {value / median['hard']:5.2f}x the hard-label student")
    print(f"projector / teacher labels: {median['projector'] / median['teacher']:.2f}x")


if __name__ == "__main__":
    main()
