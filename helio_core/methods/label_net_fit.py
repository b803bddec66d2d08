"""Distilling a label network from the teacher(s) (label mode `label_net`): the KL at temperature between the
network and the teachers' target on fresh student-style views of the train split every epoch, so that it learns
the labels of the images it will be asked about (crops, flips, CutMix), not only of whole train images; with
lambda_ce, plus the cross-entropy to the views' true labels, which the train split has and the teacher got wrong."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helio_core.params import LabelNetParams
from helio_core.progress import Progress
from helio_core.runtime import Runtime
from helio_core.training.engine import Optimisation, agreement, make_optimizer, predict_logits
from helio_core.training.labels import Batches
from helio_core.training.losses import distillation_kl

HeldOut = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 images, the teachers' target on them, labels


def label_fidelity(net: nn.Module, held_out: HeldOut, temperature: float, runtime: Runtime) -> dict[str, float]:
    """How close `net` is to the target on held-out images: the KL·T² the students will learn from, its accuracy,
    the target's, their top-1 agreement and logit MSE."""
    images, targets, labels = held_out
    with runtime.autocast():
        logits = predict_logits(net, images)
    return {"kl": round(distillation_kl(logits, targets, temperature).item(), 5), **agreement(logits, targets, labels)}


def distil(
    net: nn.Module, batches: Batches, steps_per_epoch: int, held_out: HeldOut, params: LabelNetParams,
    generator: torch.Generator, runtime: Runtime, progress: Progress,
) -> list[dict]:  # fmt: skip
    """Train `net` in place for params.epochs (AdamW, 5 % warm-up, cosine to zero: the last state is kept);
    return its fidelity on the held-out images after every epoch. Under torchrun the gradients are averaged."""
    parallel = runtime.parallel(net)
    optimizer = make_optimizer(net.parameters(), "adamw", params.lr, params.weight_decay)
    total = params.epochs * steps_per_epoch
    optimisation = Optimisation(optimizer, total, total // 20, runtime)
    history, task = [], progress.task("distil the label network", total=params.epochs)
    for epoch in range(1, params.epochs + 1):
        net.train()
        for step, (inputs, target, hard) in enumerate(batches(generator)):
            with runtime.autocast():
                logits = parallel(inputs[0].contiguous(memory_format=torch.channels_last))
            loss = distillation_kl(logits.float(), target, params.temperature)
            if params.lambda_ce:
                loss = loss + params.lambda_ce * F.cross_entropy(logits.float(), hard)
            optimisation.step(loss)
            task.update(epoch - 1 + (step + 1) / steps_per_epoch)
        task.update(epoch, status=f"last KL {loss.item():.4f}")  # one host sync per epoch, not per step
        history.append({"epoch": epoch, **label_fidelity(net, held_out, params.temperature, runtime)})
        progress.note(f"label network epoch {epoch}: {history[-1]}")
    return history
