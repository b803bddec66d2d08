"""Label fidelity where the student lives: a label source measured against a reference (the full teacher) on the
student's own view stream, the `ViewPlan` of a seed replayed over the refined images (crops, flips, CutMix),
epoch by epoch. Top-1 agreement on plain train images did not track the students; the KL on these views does
(docs/projector-study.md), so this is what a label source is judged by before a student is trained on it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from helio_core.data.splits import ImageSet
from helio_core.data.views import ViewPlan, render_views
from helio_core.training.labels import SoftLabels
from helio_core.training.losses import distillation_kl


@dataclass(frozen=True)
class Fidelity:
    """How close a labeller's soft labels are to a reference's on the same views (means over the views)."""

    views: int
    kl: float  # T^2 * KL(reference || labeller) at the student's temperature: the students' own loss
    agreement: float  # top-1 agreement
    dark_rank_corr: float  # Spearman correlation of the non-argmax classes (the reference's argmax removed)
    entropy_reference: float  # entropy (nats) of the reference's softmax at T: its calibration
    entropy_labeller: float

    def rounded(self) -> dict[str, float | int]:
        return {name: round(value, 5) if isinstance(value, float) else value for name, value in asdict(self).items()}


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank of each entry along the last dim (0 = smallest), as floats."""
    return values.argsort(-1).argsort(-1).float()


def dark_knowledge_correlation(reference: torch.Tensor, labeller: torch.Tensor) -> torch.Tensor:
    """Per row, the Spearman correlation between the two logit vectors over the classes other than the reference's
    argmax: whether the labeller orders the wrong classes as the reference does (Hinton's "dark knowledge")."""
    classes = reference.shape[-1]
    keep = torch.ones_like(reference, dtype=torch.bool).scatter_(-1, reference.argmax(-1, keepdim=True), False)
    rest_reference = ranks(reference[keep].view(-1, classes - 1))
    rest_labeller = ranks(labeller[keep].view(-1, classes - 1))
    centred_reference = rest_reference - rest_reference.mean(-1, keepdim=True)
    centred_labeller = rest_labeller - rest_labeller.mean(-1, keepdim=True)
    covariance = (centred_reference * centred_labeller).sum(-1)
    return covariance / (centred_reference.norm(dim=-1) * centred_labeller.norm(dim=-1)).clamp_min(1e-12)


def entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = F.log_softmax(logits / temperature, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def compare(reference: torch.Tensor, labeller: torch.Tensor, temperature: float) -> Fidelity:
    """Fidelity of `labeller`'s logits to `reference`'s, row by row on the same views."""
    reference, labeller = reference.float(), labeller.float()
    return Fidelity(
        views=len(reference),
        kl=distillation_kl(labeller, reference, temperature).item(),
        agreement=(labeller.argmax(-1) == reference.argmax(-1)).float().mean().item(),
        dark_rank_corr=dark_knowledge_correlation(reference, labeller).mean().item(),
        entropy_reference=entropy(reference, temperature).mean().item(),
        entropy_labeller=entropy(labeller, temperature).mean().item(),
    )


def replay_logits(
    sources: dict[str, SoftLabels], data: ImageSet, plan: ViewPlan, epoch: int, views: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Each source's logits (CPU, fp32) on the first `views` planned views of `epoch`, whole batches as the student
    draws them (CutMix pairs within a batch), rounded up to a whole batch."""
    batches = plan.batches()[: math.ceil(views / plan.batch_size)]
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in sources}
    for batch in batches:
        rendered, _ = render_views(data.images, data.labels, plan, epoch, batch, len(data.classes))
        rendered = rendered.to(device)
        for name, source in sources.items():
            logits[name].append(source(epoch, batch, rendered).float().cpu())
    return {name: torch.cat(parts) for name, parts in logits.items()}


def stream_fidelity(
    reference: SoftLabels, labellers: dict[str, SoftLabels], data: ImageSet, plan: ViewPlan, temperature: float,
    epochs: list[int], views: int, device: torch.device,
) -> dict[str, list[dict]]:  # fmt: skip
    """Per labeller, one row per measured epoch (0-based `epochs` of the plan): its fidelity to `reference` on that
    epoch's views, and the same over all measured epochs as the last row (`epoch: "all"`)."""
    rows: dict[str, list[dict]] = {name: [] for name in labellers}
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name in ("reference", *labellers)}
    for epoch in epochs:
        logits = replay_logits({"reference": reference, **labellers}, data, plan, epoch, views, device)
        for name, labelled in logits.items():
            pooled[name].append(labelled)
        for name in labellers:
            rows[name].append({"epoch": epoch + 1, **compare(logits["reference"], logits[name], temperature).rounded()})
    everything = torch.cat(pooled["reference"])
    for name in labellers:
        rows[name].append({"epoch": "all", **compare(everything, torch.cat(pooled[name]), temperature).rounded()})
    return rows
