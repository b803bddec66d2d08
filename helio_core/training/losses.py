"""The losses: the projector's fit (paper Eq. 5), the students' per label mode (Algorithm 1 and RDED's KL),
and how the weak teachers' logits are combined into one target."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from helio_core.params import LabelMode, ProjectorParams, StudentParams


def distillation_kl(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(target/T) || softmax(logits/T)), batch mean (Hinton et al.; RDED's student loss)."""
    log_p = F.log_softmax(logits / temperature, dim=-1)
    log_q = F.log_softmax(target_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")


def combine_teachers(logits: list[torch.Tensor], target: str, temperature: float) -> torch.Tensor:
    """The weak teachers' joint target: their mean logits, or (target=mean_probs) T * log of their mean
    softmax at T, whose softmax at T is exactly the ensemble's averaged distribution."""
    if target == "mean_logits":
        return sum(logits) / len(logits)
    log_probs = F.log_softmax(torch.stack(logits) / temperature, dim=-1)
    return temperature * (torch.logsumexp(log_probs, dim=0) - math.log(len(logits)))


def projector_loss(
    logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, params: ProjectorParams
) -> torch.Tensor:
    """Eq. 5: MSE to the target logits (or KL at temperature T) plus lambda * CE to the hard labels; loss=ce
    is the hard labels' cross-entropy alone (no teacher guidance)."""
    if params.loss == "ce":
        return F.cross_entropy(logits, labels)
    if params.loss == "mse":
        soft = F.mse_loss(logits, target)
    else:
        soft = distillation_kl(logits, target, params.temperature)
    return soft + params.lambda_ce * F.cross_entropy(logits, labels)


def student_loss(
    mode: LabelMode, logits: torch.Tensor, soft: torch.Tensor | None, hard: torch.Tensor, params: StudentParams
) -> torch.Tensor:
    """The loss of one label mode; `hard` holds the CutMix-mixed one-hot labels."""
    if mode == "hard":
        return F.cross_entropy(logits, hard)
    if mode == "projector":
        student = standardised(logits) if params.standardise else logits
        target = standardised(soft) if params.standardise else soft
        if params.projector_loss == "mse":
            matched = F.mse_loss(student, target)
        elif params.projector_loss == "kl":
            matched = distillation_kl(student, target, params.temperature)
        else:
            t = params.temperature
            matched = F.mse_loss(F.softmax(student / t, -1), F.softmax(target / t, -1), reduction="sum") / len(logits)
        return matched + params.beta * F.cross_entropy(logits, hard)
    return distillation_kl(logits, soft, params.temperature)


def standardised(logits: torch.Tensor) -> torch.Tensor:
    """Each logit vector z-scored: matches the shape of the distribution, not the labeller's logit scale."""
    return (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + 1e-7)
