"""Fusion invariants: CVSA permutation/mask/V=1, MTGF view weights (both directions of asking),
temporal pass-through, and the fusion's attention block (the towers' block with weights)."""
import pytest
import torch
import torch.nn.functional as F

from facet.fusion import CVSA, MTGF, PatchMTGF, TemporalFusion
from facet.transformer import ResidualAttentionBlock

E = 32


def test_cvsa_aggregate_is_invariant_to_permuting_views_with_their_slots():
    cvsa = CVSA(E, heads=4, depth=2, max_views=5).eval()
    z = torch.randn(2, 5, E)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = cvsa(z)
    with torch.no_grad():
        cvsa.view_embedding.copy_(cvsa.view_embedding[perm])
    permuted = cvsa(z[:, perm])
    torch.testing.assert_close(permuted.aggregate, out.aggregate, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted.tokens, out.tokens[:, perm], atol=1e-5, rtol=1e-5)


def test_cvsa_slot_embeddings_make_view_order_matter():
    cvsa = CVSA(E, heads=4, depth=1, max_views=3).eval()
    z = torch.randn(1, 3, E)
    assert not torch.allclose(cvsa(z).aggregate, cvsa(z[:, [2, 1, 0]]).aggregate)


def test_cvsa_masked_view_has_no_influence():
    cvsa = CVSA(E, heads=4, depth=2, max_views=4).eval()
    z = torch.randn(3, 4, E)
    mask = torch.tensor([[True, False, True, True]] * 3)
    out = cvsa(z, mask)
    z2 = z.clone()
    z2[:, 1] = torch.randn(3, E) * 100
    out2 = cvsa(z2, mask)
    torch.testing.assert_close(out2.aggregate, out.aggregate)
    torch.testing.assert_close(out2.tokens, out.tokens)
    assert torch.all(out.tokens[:, 1] == 0) and torch.all(out.attention[:, :, 2] == 0)
    # dropping the view altogether gives the same aggregate as masking it
    dropped = CVSA(E, heads=4, depth=2, max_views=4).eval()
    dropped.load_state_dict(cvsa.state_dict())
    with torch.no_grad():
        dropped.view_embedding[1:3] = cvsa.view_embedding[2:4]
    torch.testing.assert_close(dropped(z[:, [0, 2, 3]]).aggregate, out.aggregate,
                               atol=1e-5, rtol=1e-5)


def test_cvsa_single_view_and_bad_masks():
    cvsa = CVSA(E, heads=4, depth=1, max_views=3)
    out = cvsa(torch.randn(2, 1, E))
    assert out.tokens.shape == (2, 1, E) and out.aggregate.shape == (2, E)
    with pytest.raises(ValueError, match="every view"):
        cvsa(torch.randn(2, 3, E), torch.tensor([[True, True, False], [False, False, False]]))
    with pytest.raises(ValueError, match="view slots"):
        cvsa(torch.randn(2, 4, E))
    with pytest.raises(ValueError, match="bool"):
        cvsa(torch.randn(2, 3, E), torch.ones(2, 3))


def test_mtgf_weights_sum_to_one_and_follow_the_formula():
    mtgf = MTGF(E, heads=4, tau=0.3).eval()
    h, prompts = torch.randn(4, 3, E), F.normalize(torch.randn(5, E), dim=-1)
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, True],
                         [True, True, False]])
    out = mtgf(h, prompts, mask)
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(4))
    assert torch.all(out.weights[~mask] == 0)
    cos = F.normalize(out.tokens, dim=-1) @ prompts.T  # explicit beta = softmax_v(max_k cos / tau)
    score = (cos.amax(-1) / 0.3).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(out.weights, score.softmax(-1))
    torch.testing.assert_close(out.fused, (out.weights[..., None] * out.tokens).sum(1))
    assert out.attention.shape == (4, 3, 5)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(4, 3))


def test_mtgf_identical_views_get_uniform_weights():
    mtgf = MTGF(E, heads=4, tau=0.2).eval()
    h = torch.randn(2, 1, E).expand(2, 4, E)
    out = mtgf(h, torch.randn(6, E))
    torch.testing.assert_close(out.weights, torch.full((2, 4), 0.25))


def test_mtgf_per_row_prompts_match_shared_prompts():
    mtgf = MTGF(E, heads=4, tau=0.2).eval()
    h, prompts = torch.randn(3, 2, E), torch.randn(5, E)
    shared = mtgf(h, prompts)
    per_row = mtgf(h, prompts.expand(3, 5, E).clone())
    torch.testing.assert_close(per_row.fused, shared.fused)
    with pytest.raises(ValueError, match="tau"):
        MTGF(E, heads=4, tau=0.0)


def test_patch_mtgf_pools_per_class_and_weighs_views_by_the_posterior():
    """The prompts ask the patches: r_k pools what class k attends to; the formulas hand-computed
    from the module's own outputs (attention, evidence, posterior) as the oracle."""
    mtgf = PatchMTGF(E, heads=4, tau=0.3, max_views=4).eval()
    g = 5  # patches per view
    h, patches = torch.randn(3, 3, E), torch.randn(3, 3, g, E)
    prompts = F.normalize(torch.randn(6, E), dim=-1)
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, True]])
    out = mtgf(h, prompts, mask, patches)
    assert torch.equal(out.tokens, h)  # the per-view tokens pass through
    assert out.attention.shape == (3, 3, 6)
    torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(3, 6))  # each class's share
    assert torch.all(out.attention[~mask] == 0) and torch.all(out.weights[~mask] == 0)
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(3))
    # recompute r_k, the evidence and the posterior by hand from the module's layers
    tokens = (patches + mtgf.view_embedding[:3, None]).reshape(3, 3 * g, E)
    kv = mtgf.ln_kv(tokens)
    r, _ = mtgf.cross_attn(mtgf.ln_q(prompts).expand(3, 6, E), kv, kv,
                           key_padding_mask=~mask.repeat_interleave(g, dim=1))
    r = r + mtgf.mlp(mtgf.ln_2(r))
    posterior = ((F.normalize(r, dim=-1) @ prompts.T).diagonal(dim1=1, dim2=2) / 0.3).softmax(-1)
    torch.testing.assert_close(out.fused, (posterior[..., None] * r).sum(1))
    torch.testing.assert_close(out.weights, (posterior[:, None, :] * out.attention).sum(-1))


def test_patch_mtgf_ignores_masked_views_and_the_order_of_patches():
    """A masked view's patches are no keys; within a view the patches are a set (their place in
    the image is in the tower's position embeddings, already inside the tokens)."""
    mtgf = PatchMTGF(E, heads=4, tau=0.2, max_views=3).eval()
    h, patches, prompts = torch.randn(2, 3, E), torch.randn(2, 3, 4, E), torch.randn(6, E)
    mask = torch.tensor([[True, False, True]] * 2)
    out = mtgf(h, prompts, mask, patches)
    noisy = patches.clone()
    noisy[:, 1] = torch.randn(2, 4, E) * 100
    torch.testing.assert_close(mtgf(h, prompts, mask, noisy).fused, out.fused)
    shuffled = patches[:, :, [2, 0, 3, 1]]
    torch.testing.assert_close(mtgf(h, prompts, mask, shuffled).fused, out.fused,
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mtgf(h, prompts, None, noisy).fused, out.fused)
    with pytest.raises(ValueError, match="view slots"):
        mtgf(torch.randn(2, 4, E), prompts, None, torch.randn(2, 4, 4, E))


def test_temporal_fusion_passes_one_frame_through_and_weighs_frames():
    temporal = TemporalFusion(E, heads=4, depth=1, max_frames=4).eval()
    f = torch.randn(2, 1, E)
    out, weights = temporal(f)
    assert torch.equal(out, f[:, 0]) and torch.equal(weights, torch.ones(2, 1))
    out, weights = temporal(torch.randn(2, 4, E))
    assert out.shape == (2, E)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="max_frames"):
        temporal(torch.randn(2, 5, E))


def test_temporal_fusion_sees_every_frame_and_their_order_only_through_its_positions():
    temporal = TemporalFusion(E, heads=4, depth=1, max_frames=4).eval()
    f = torch.randn(2, 4, E)
    with torch.no_grad():
        torch.testing.assert_close(temporal(f)[0], f.mean(dim=1))  # fresh: the frames' mean
        temporal.gate.fill_(1.0)  # a gate that has opened
        temporal.temporal_embedding.mul_(50)  # as distinct as trained positions become
        out, _ = temporal(f)
        changed = f.clone()
        changed[:, 2] += torch.randn(E)  # one frame changes: the sequence embedding must too
        assert not torch.allclose(temporal(changed)[0], out, atol=1e-4)
        # permuting the frames together with their position embeddings leaves it unchanged
        order = torch.tensor([3, 0, 2, 1])
        positions = temporal.temporal_embedding
        shuffled = f[:, order] + positions[order] - positions[:4]
        torch.testing.assert_close(temporal(shuffled)[0], out, atol=1e-5, rtol=0)
        # without the matching position embeddings the order matters
        assert not torch.allclose(temporal(f[:, order])[0], out, atol=1e-4)


def test_fusion_block_is_the_towers_block_that_returns_its_attention():
    """One pre-LN block class: the fusion's kind (need_weights, torch's attention) has the
    towers' parameter names, computes the same function, and returns the head-averaged
    weights; a key mask there equals the towers' attn_mask broadcast over the queries."""
    tower = ResidualAttentionBlock(E, 4, quick_gelu=False)
    fusion = ResidualAttentionBlock(E, 4, quick_gelu=False, need_weights=True)
    assert sorted(fusion.state_dict()) == sorted(tower.state_dict())
    fusion.load_state_dict(tower.state_dict())
    x = torch.randn(2, 5, E)
    keep = torch.tensor([[True] * 5, [True, True, False, True, False]])  # (B, N) keys
    out, weights = fusion(x, key_mask=keep)
    expected, none = tower(x, attn_mask=keep[:, None, None, :])  # (B, 1, 1, N): all queries
    assert none is None
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 5, 5) and torch.all(weights[1][:, [2, 4]] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    with pytest.raises(ValueError, match="key_mask"):
        fusion(x, attn_mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_mask"):
        tower(x, key_mask=keep)
