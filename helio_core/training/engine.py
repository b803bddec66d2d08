"""The training engine every loop shares: an optimizer with its warm-up + cosine schedule and loss scaler
stepped once per batch, batched inference on a model's own device, and the scores read off its logits."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from helio_core.runtime import Runtime, model_device

PREDICT_BATCH = 500  # images run through a model at a time when only its logits are wanted


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    parameters: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """AdamW (fused), or SGD with Nesterov momentum."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


class Optimisation:
    """An optimizer, its schedule (linear warm-up, then cosine to zero at `total_steps`) and the loss scaler
    (a pass-through unless fp16): `step(loss)` once per batch."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, runtime: Runtime):
        self.optimizer = optimizer
        factor = partial(lr_factor, total_steps=total_steps, warmup_steps=warmup_steps)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self.scaler = runtime.grad_scaler()

    def step(self, loss: torch.Tensor) -> None:
        """Backward, update, and the schedule's next step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW -> float in [0, 1] on `device` (converted there), channels-last (faster convolutions)."""
    return (images.to(device).float() / 255).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = PREDICT_BATCH,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """fp32 logits on the CPU of uint8 images, run on the model's device in eval mode (restored afterwards) under
    whatever autocast the caller set; parametrized weights (LoRA) are computed once, not per batch; `on_batch(n)`
    after each batch."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    logits = []
    with parametrize.cached():
        for chunk in images.split(batch_size):
            logits.append(model(to_input(chunk, device)).float().cpu())
            if on_batch is not None:
                on_batch(len(chunk))
    model.train(was_training)
    return torch.cat(logits)


def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, on_batch: Callable[[int], None] | None = None
) -> float:
    return (predict_logits(model, images, on_batch=on_batch).argmax(1) == labels).float().mean().item()


def agreement(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How a labeller's logits compare with a reference's (the teachers' target, or the full teacher's) on the same
    images: its accuracy, the reference's, their top-1 agreement, and the logit MSE between them."""
    return {
        "acc": round((logits.argmax(1) == labels).float().mean().item(), 5),
        "teacher_acc": round((target.argmax(1) == labels).float().mean().item(), 5),
        "agreement": round((logits.argmax(1) == target.argmax(1)).float().mean().item(), 5),
        "mse": round(F.mse_loss(logits, target).item(), 5),
    }
