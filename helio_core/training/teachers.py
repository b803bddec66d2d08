"""The weak teachers' training: one trajectory from scratch on an endless shuffled stream of the train split.

The paper takes weak teachers from the early part of a single trajectory (section 3.3). An "epoch" here is
`teachers.epoch_images` images drawn without replacement from the stream, so a short CPU trajectory can
still keep ~9 evenly spaced checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from helio_core.data import views
from helio_core.params import TeacherParams
from helio_core.runtime import Runtime
from helio_core.training.engine import Optimisation, make_optimizer


class ShuffledStream:
    """Indices 0..n-1 in a fresh seeded permutation per pass, served in chunks that may span passes."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator
        self.pending = torch.empty(0, dtype=torch.int64)

    def take(self, count: int) -> torch.Tensor:
        while len(self.pending) < count:
            self.pending = torch.cat([self.pending, torch.randperm(self.n, generator=self.generator)])
        chunk, self.pending = self.pending[:count], self.pending[count:]
        return chunk


def train_trajectory(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: TeacherParams,
    generator: torch.Generator,
    runtime: Runtime,
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Train `model` in place; yield (epoch, step, steps per epoch, loss) after every step, the loss a detached
    tensor (reading it is a host sync on a GPU: read it where it is shown, not every step).

    Every rank draws and augments the same global batch and trains on its shard; DDP averages the gradients,
    so a batch size means the same thing on one process or many."""
    epoch_images = params.epoch_images or len(labels)
    steps_per_epoch = math.ceil(epoch_images / params.batch_size)
    total_steps = params.epochs * steps_per_epoch
    optimizer = make_optimizer(model.parameters(), params.optimizer, params.lr, params.weight_decay, params.momentum)
    optimisation = Optimisation(optimizer, total_steps, int(params.warmup * total_steps), runtime)
    stream = ShuffledStream(len(labels), generator)
    parallel = runtime.parallel(model)
    model.train()
    for epoch in range(1, params.epochs + 1):
        for step in range(steps_per_epoch):
            index = stream.take(min(params.batch_size, epoch_images - step * params.batch_size))
            batch = views.random_crop(images[index].float() / 255, params.crop_padding, generator)
            if params.flip:
                batch = views.random_flip(batch, generator)
            batch = runtime.to_device(runtime.shard(batch)).contiguous(memory_format=torch.channels_last)
            with runtime.autocast():
                logits = parallel(batch)
            target = runtime.to_device(runtime.shard(labels[index]))
            loss = F.cross_entropy(logits.float(), target, label_smoothing=params.label_smoothing)
            optimisation.step(loss)
            yield epoch, step + 1, steps_per_epoch, loss.detach()
