"""Losses: CE, multiview consistency (oracle, invariants), AffectVLM loss and learned margin."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from facet.losses import (LearnedMargin, LossConfig, affect_loss, classification_loss,
                          consistency_loss, total_loss)


def test_classification_loss_is_cross_entropy_with_smoothing():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    expected = -logits.log_softmax(-1)[0, 0]
    torch.testing.assert_close(classification_loss(logits, labels), expected)
    smooth = 0.3 * -logits.log_softmax(-1).mean() + 0.7 * expected
    torch.testing.assert_close(classification_loss(logits, labels, 0.3), smooth)


def test_consistency_is_zero_for_identical_views_and_grows_as_they_diverge():
    base, other = torch.randn(2, 1, 1, 16), torch.randn(2, 1, 1, 16)
    logits_a, logits_b = torch.randn(2, 1, 1, 5) * 3, torch.randn(2, 1, 1, 5) * 3
    losses = []
    for s in (0.0, 0.25, 0.5, 1.0):  # view 2 drifts from view 1 toward another face
        emb = torch.cat([base, base + s * (other - base), base], dim=2)  # (B, T, V=3, E)
        logits = torch.cat([logits_a, logits_a + s * (logits_b - logits_a), logits_a], dim=2)
        losses.append(consistency_loss(emb, logits).item())
    assert losses[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(losses, losses[1:]))


def test_consistency_matches_explicit_formula_and_ignores_masked_views():
    emb, logits = torch.randn(1, 1, 3, 8), torch.randn(1, 1, 3, 4)
    p = logits[0, 0].softmax(-1)  # (V, K)
    q = p.mean(0)
    cos = F.cosine_similarity(emb[0, 0, :, None], emb[0, 0, None], dim=-1)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(1 - cos[i, j] for i, j in pairs) / 3 + \
        sum((q * (q.log() - p[v].log())).sum() for v in range(3)) / 3
    torch.testing.assert_close(consistency_loss(emb, logits), expected)

    mask = torch.tensor([[True, False, True]])
    changed_emb, changed_logits = emb.clone(), logits.clone()
    changed_emb[..., 1, :], changed_logits[..., 1, :] = 50.0, -50.0
    torch.testing.assert_close(consistency_loss(changed_emb, changed_logits, mask),
                               consistency_loss(emb, logits, mask))
    single = torch.tensor([[False, True, False]])  # one view: nothing to agree with
    assert consistency_loss(emb, logits, single).item() == 0.0


def test_learned_margin_is_bounded_and_starts_at_init():
    margin = LearnedMargin(init=0.25, low=0.05, high=0.5)
    assert margin().item() == pytest.approx(0.25)
    with torch.no_grad():
        margin.raw.fill_(1e3)
    assert margin().item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        LearnedMargin(init=0.6)


def test_affect_loss_on_a_hand_computed_example():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # cos(0,1)=.6, cos(0,2)=0, cos(1,2)=.8
    labels, alpha = torch.tensor([0, 0, 1]), 0.3
    pull = 1 - 0.6
    push = (2 * max(0.0, 0.0 - alpha) + 2 * max(0.0, 0.8 - alpha)) / 4  # (0,2),(2,0),(1,2),(2,1)
    # batch-hard triplets, d = 2 - 2 cos: anchor 0: d_p=.8, d_n=2; anchor 1: d_p=.8, d_n=.4
    triplet = (max(0.0, 0.8 - 2 + alpha) + max(0.0, 0.8 - 0.4 + alpha)) / 2
    expected = torch.tensor(pull + push + triplet)
    torch.testing.assert_close(affect_loss(z, labels, alpha), expected)
    with pytest.raises(ValueError):
        affect_loss(z, labels[:2], alpha)


def test_affect_loss_pulls_positives_pushes_negatives_and_learns_its_margin():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(3)  # 4 emotions x 3 views
    z = torch.nn.Parameter(torch.randn(12, 8))
    margin = LearnedMargin()
    opt = torch.optim.SGD([z, *margin.parameters()], lr=0.5)
    same = (labels[:, None] == labels[None]) & ~torch.eye(12, dtype=torch.bool)
    diff = labels[:, None] != labels[None]

    def mean_cos():
        cos = F.normalize(z.detach(), dim=-1) @ F.normalize(z.detach(), dim=-1).T
        return cos[same].mean().item(), cos[diff].mean().item()

    pos0, neg0 = mean_cos()
    for _ in range(30):
        opt.zero_grad()
        affect_loss(z, labels, margin).backward()
        opt.step()
    pos1, neg1 = mean_cos()
    assert pos1 > pos0 + 0.3 and neg1 < neg0
    assert abs(margin().item() - 0.25) > 1e-3 and 0.05 < margin().item() < 0.5


def test_total_loss_is_the_weighted_sum_of_the_separately_computed_parts():
    b, t, v, k, e = 4, 1, 3, 5, 8
    out = SimpleNamespace(logits=torch.randn(b, k), view_logits=torch.randn(b, t, v, k),
                          view_embeddings=torch.randn(b, t, v, e),
                          image_logits=torch.randn(b, t, v, k),
                          image_embeddings=torch.randn(b, t, v, e),
                          view_mask=torch.ones(b, v, dtype=torch.bool))
    labels, margin = torch.tensor([0, 1, 0, 2]), LearnedMargin()
    ce = classification_loss(out.logits, labels)
    on_z = consistency_loss(out.image_embeddings, out.image_logits, out.view_mask)
    on_u = consistency_loss(out.view_embeddings, out.view_logits, out.view_mask)
    aff = affect_loss(out.view_embeddings[:, 0].reshape(b * v, e), labels.repeat_interleave(v),
                      margin)
    for where, cons in (("encoder", on_z), ("fusion", on_u), ("both", on_z + on_u)):
        config = LossConfig(lambda_cons=0.5, lambda_aff=0.2, consistency=where)
        loss, parts = total_loss(out, labels, config, margin)
        torch.testing.assert_close(loss, ce + 0.5 * cons + 0.2 * aff)
        assert parts["cons"] == pytest.approx(cons.item(), rel=1e-6)
    assert math.isclose(parts["margin"], 0.25, rel_tol=1e-5)
    loss, parts = total_loss(out, labels, LossConfig(lambda_cons=0, lambda_aff=0))
    assert set(parts) == {"ce"} and torch.equal(loss, ce)
    with pytest.raises(ValueError, match="margin"):
        total_loss(out, labels, LossConfig(lambda_aff=0.1))
