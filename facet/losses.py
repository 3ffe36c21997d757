"""Training losses: classification, multiview consistency, and AffectVLM's contrastive + triplet.

    L = CE(logits, y) + lambda_cons * L_cons + lambda_aff * L_aff

Our reconstruction; the papers give names and intent, not equations:

- `classification_loss`: cross-entropy over the prompt-similarity logits (optional label
  smoothing, Szegedy et al. 2016).
- `clip_loss`: CLIP's symmetric InfoNCE, for pretraining facet's CLIP on captioned faces.
- `consistency_loss` (FACET-VLM's multiview consistency): the views of one face should agree.
  By default on the image embeddings z, *before* CVSA mixes the views ("encoder"): after the
  mixing, attention alone could make the views agree without the encoder becoming
  view-invariant; "fusion" applies it to the fused tokens u, "both" to both.
  (a) embedding agreement: mean over view pairs i < j of 1 - cos(u_i, u_j);
  (b) prediction agreement: mean over views of KL(q || p_v), p_v = softmax(view logits),
      q = mean_v p_v the view-averaged prediction. Direction: the consensus q plays the teacher
      (as in distillation, KL(teacher || student)); KL(q || p_v) is large when a view gives low
      probability to a class the consensus supports, so no view may confidently rule out what the
      others see. q is *not* detached: all views move toward each other, none is a fixed target.
  Masked views take part in neither term; a face with one view contributes 0.
- `affect_loss` (AffectVLM's "gradient-friendly" loss) on unit-norm embeddings with labels:
  contrastive: mean over same-label pairs of (1 - cos) + mean over different-label pairs of
  max(0, cos - alpha) (means, not sums, so the scale does not depend on the batch size);
  triplet with *batch-hard* mining (Hermans et al. 2017): for each anchor the farthest positive
  and the nearest negative, max(0, |z_a - z_p|^2 - |z_a - z_n|^2 + alpha).
- `LearnedMargin`: alpha = low + (high - low) * sigmoid(raw), initialised at 0.25.
  A margin trained by minimising the loss alone degenerates toward "slack": the triplet term
  falls as alpha falls (-> 0), the contrastive negative term falls as alpha rises (-> 1, where no
  negative is pushed any more). With one alpha shared by both terms the two pulls oppose:
  dL/dalpha = (share of violated triplets) - (share of violated negative pairs), so alpha settles
  where the two shares balance. When one side is empty the margin would still run to its slack
  end, which is why it is bounded to [low, high] = [0.05, 0.5] by a sigmoid (softplus would only
  bound it below). We add no extra reward term: the bound is the honest guard, and the trained
  value is logged so a reader sees where it went.

Shapes: B batch, T frames, V views, K classes, E embedding dim, M embeddings in `affect_loss`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over class logits.

    Args:
        logits: (B, K) float. labels: (B,) int64 in [0, K). label_smoothing: in [0, 1).
    Returns:
        Scalar mean loss.
    """
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE (Radford et al. 2021, fig. 3): image i belongs with text i.

    Args:
        logits_per_image: (B, B) scaled cosines, rows = images, columns = texts.
    Returns:
        Scalar: the mean of the image->text and text->image cross-entropies.
    """
    target = torch.arange(len(logits_per_image), device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image.float(), target)
            + F.cross_entropy(logits_per_image.float().T, target)) / 2


def consistency_loss(view_embeddings: torch.Tensor, view_logits: torch.Tensor,
                     view_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multiview consistency: embedding agreement + prediction agreement (module docstring).

    Args:
        view_embeddings: (B, T, V, E) per-view embeddings (any norm; cosines are taken).
        view_logits: (B, T, V, K) per-view class logits.
        view_mask: (B, V) bool, True = view present; None = all present.
    Returns:
        Scalar; 0 when all kept views of every face are identical.
    """
    b, t, v, _ = view_embeddings.shape
    keep = torch.ones(b, v, dtype=torch.bool, device=view_embeddings.device)
    if view_mask is not None:
        keep = view_mask.to(view_embeddings.device)
    keep = keep[:, None, :].expand(b, t, v).float()  # (B, T, V)

    # (a) 1 - cos over pairs i < j of kept views
    unit = F.normalize(view_embeddings.float(), dim=-1)
    cos = unit @ unit.transpose(-1, -2)  # (B, T, V, V)
    upper = torch.triu(torch.ones(v, v, dtype=torch.bool, device=cos.device), diagonal=1)
    pairs = keep.unsqueeze(-1) * keep.unsqueeze(-2) * upper  # (B, T, V, V)
    embedding_term = ((1 - cos) * pairs).sum() / pairs.sum().clamp_min(1)

    # (b) KL(q || p_v), q = average of the kept views' predictions
    log_p = view_logits.float().log_softmax(dim=-1)  # (B, T, V, K)
    weights = keep / keep.sum(dim=-1, keepdim=True).clamp_min(1)  # (B, T, V)
    q = (weights.unsqueeze(-1) * log_p.exp()).sum(dim=2, keepdim=True)  # (B, T, 1, K)
    kl = (q * (q.clamp_min(1e-12).log() - log_p)).sum(dim=-1)  # (B, T, V)
    multi = (keep.sum(dim=-1, keepdim=True) > 1).float()  # faces with >= 2 views
    prediction_term = (kl * keep * multi).sum() / (keep * multi).sum().clamp_min(1)
    return embedding_term + prediction_term


class LearnedMargin(nn.Module):
    """A learnable margin alpha in (low, high), alpha = low + (high - low) * sigmoid(raw)."""

    def __init__(self, init: float = 0.25, low: float = 0.05, high: float = 0.5):
        super().__init__()
        if not low < init < high:
            raise ValueError(f"LearnedMargin needs low < init < high, got {low}, {init}, {high}")
        self.low, self.high = low, high
        share = (init - low) / (high - low)
        self.raw = nn.Parameter(torch.tensor(math.log(share / (1 - share))))  # sigmoid^-1

    def forward(self) -> torch.Tensor:
        """Returns: the scalar margin alpha (differentiable)."""
        return self.low + (self.high - self.low) * torch.sigmoid(self.raw)


def affect_loss(embeddings: torch.Tensor, labels: torch.Tensor,
                margin: LearnedMargin | torch.Tensor | float) -> torch.Tensor:
    """AffectVLM loss: multiview contrastive + batch-hard triplet, margin alpha.

    Args:
        embeddings: (M, E) embeddings (normalised here), e.g. every kept view of every face.
        labels: (M,) int64 class of each embedding.
        margin: a LearnedMargin (trained with the model), a scalar tensor or a float.
    Returns:
        Scalar. Pairs of a sample with itself are excluded; with no positive or no negative pair
        in the batch the corresponding terms are 0 (still connected to the graph).
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"affect_loss wants embeddings (M, E) and labels (M,), got "
                         f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
    alpha = margin() if isinstance(margin, nn.Module) else margin
    unit = F.normalize(embeddings.float(), dim=-1)
    cos = unit @ unit.T  # (M, M)
    same = labels[:, None] == labels[None, :]  # (M, M)
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = (same & not_self).float()
    negative = (~same).float()

    pull = ((1 - cos) * positive).sum() / positive.sum().clamp_min(1)
    push = (F.relu(cos - alpha) * negative).sum() / negative.sum().clamp_min(1)

    # batch-hard triplet on squared distances of unit vectors: |a - b|^2 = 2 - 2 cos
    dist = 2 - 2 * cos  # (M, M)
    hardest_positive = (dist * positive).amax(dim=1)  # (M,), distances are >= 0
    hardest_negative = dist.masked_fill(negative == 0, float("inf")).amin(dim=1)  # (M,)
    valid = (positive.sum(dim=1) > 0) & (negative.sum(dim=1) > 0)  # anchors with both
    hinge = F.relu(hardest_positive - hardest_negative + alpha)
    triplet = torch.where(valid, hinge, torch.zeros_like(hinge)).sum() / valid.sum().clamp_min(1)
    return pull + push + triplet


def action_unit_loss(au_logits: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
    """Which action units a face shows, as A independent yes/no questions: the mean binary
    cross-entropy of (B, A) logits against (B, A) multi-hot annotations."""
    return F.binary_cross_entropy_with_logits(au_logits.float(), aus.float())


@dataclass
class LossConfig:
    label_smoothing: float = 0.0  # CE smoothing
    lambda_cons: float = 0.1  # multiview consistency weight; 0 = the paper's ablation
    lambda_aff: float = 0.0  # AffectVLM contrastive + triplet weight; 0 = off (needs a margin)
    consistency: str = "encoder"  # on z before fusion ("encoder"), on u after ("fusion"), "both"
    lambda_au: float = 0.0  # auxiliary action-unit loss weight (facet.objective); 0 = off


def total_loss(output, labels: torch.Tensor, config: LossConfig = LossConfig(),
               margin: LearnedMargin | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L = CE + lambda_cons * L_cons + lambda_aff * L_aff on a FacetOutput.

    The affect loss sees one embedding per kept view of each face (view_embeddings averaged over
    the T frames, since all frames of a clip share its label).

    Args:
        output: facet.model.FacetOutput (logits, view_logits, view_embeddings, view_mask).
        labels: (B,) int64.
        config: the weights. margin: needed when config.lambda_aff > 0.
    Returns:
        (scalar loss, {"ce", "cons", "aff", "margin": floats for logging}).
    """
    ce = classification_loss(output.logits, labels, config.label_smoothing)
    loss, parts = ce, {"ce": ce.item()}
    if config.lambda_cons > 0:
        cons = sum(consistency_loss(embeddings, logits, output.view_mask)
                   for where, embeddings, logits in (
                       ("encoder", output.image_embeddings, output.image_logits),
                       ("fusion", output.view_embeddings, output.view_logits))
                   if config.consistency in (where, "both"))
        loss = loss + config.lambda_cons * cons
        parts["cons"] = cons.item()
    if config.lambda_aff > 0:
        if margin is None:
            raise ValueError("lambda_aff > 0 needs a LearnedMargin (pass margin=...)")
        per_view = output.view_embeddings.float().mean(dim=1)  # (B, V, E)
        b, v, e = per_view.shape
        keep = output.view_mask.reshape(b * v)  # (B*V,)
        aff = affect_loss(per_view.reshape(b * v, e)[keep],
                          labels.repeat_interleave(v)[keep], margin)
        loss = loss + config.lambda_aff * aff
        parts["aff"] = aff.item()
        parts["margin"] = margin().item()
    return loss, parts
