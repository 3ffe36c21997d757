"""FacetVLM end to end on the tiny CLIP: shapes, gradients, ablations, masking, overfitting."""
import pytest
import torch

import torch.nn.functional as F

from facet.checkpoint import load_openai
from facet.clip import CLIP, CLIP_STD, normalize_images
from facet.losses import LearnedMargin, LossConfig, total_loss
from facet.model import FacetConfig, FacetVLM, zero_shot_model
from facet.prompts import build_prompts, prompt_tokens
from facet.tokenizer import train_bpe

CLASSES = ["anger", "fear", "happiness", "surprise"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([p for row in build_prompts(CLASSES) for p in row], 600)


def _model(tokenizer, **kw) -> FacetVLM:
    torch.manual_seed(0)
    return FacetVLM(FacetConfig(image_size=32, vocab_size=tokenizer.vocab_size, **kw))


def _tokens(model, tokenizer, metadata=None, generator=None) -> torch.Tensor:
    """The class prompts' tokens for `model`'s context length."""
    return prompt_tokens(tokenizer, CLASSES, model.clip.config.context_length, metadata, generator)


def _batch(b=4, t=1, v=3, size=32):
    """Images whose colour codes the class: learnable in a few steps by a random ViT."""
    labels = torch.arange(b) % len(CLASSES)
    views = torch.rand(b, t, v, 3, size, size) * 0.3
    for i, label in enumerate(labels):
        views[i, :, :, label % 3] += 0.3 * (1 + label // 3)
    return views, labels


def _unused(model, margin=None) -> list[str]:
    params = list(model.named_parameters()) + (list(margin.named_parameters()) if margin else [])
    return [n for n, p in params if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]


def test_output_shapes_and_weights(tokenizer):
    model = _model(tokenizer, max_frames=4)
    views, _ = _batch(b=2, t=4, v=3, size=40)  # 40 px is resized to the CLIP's 32
    out = model(views, _tokens(model, tokenizer))
    e = model.clip.config.embed_dim
    assert out.logits.shape == (2, 4) and out.view_logits.shape == (2, 4, 3, 4)
    assert out.view_embeddings.shape == out.image_embeddings.shape == (2, 4, 3, e)
    assert out.frame_embeddings.shape == (2, 4, e) and out.class_embeddings.shape == (4, e)
    torch.testing.assert_close(out.view_weights.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(out.frame_weights.sum(-1), torch.ones(2))
    assert out.view_attention.shape == (2, 4, 4, 4) and out.prompt_attention.shape == (2, 4, 3, 4)
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(2))


def test_logits_are_the_scaled_cosines_of_the_output_embeddings(tokenizer):
    model = _model(tokenizer).eval()
    views, _ = _batch(b=3)
    with torch.no_grad():
        model.clip.logit_scale.fill_(5.0)  # e^5 = 148 is clipped at 100
        out = model(views, _tokens(model, tokenizer))
    p = F.normalize(out.class_embeddings, dim=-1)  # (K, E)
    assert out.logit_scale.item() == pytest.approx(100.0)
    torch.testing.assert_close(out.logits, 100 * F.normalize(out.embedding, dim=-1) @ p.T)
    torch.testing.assert_close(out.view_logits,
                               100 * F.normalize(out.view_embeddings, dim=-1) @ p.T)
    torch.testing.assert_close(out.image_logits,
                               100 * F.normalize(out.image_embeddings, dim=-1) @ p.T)


@pytest.mark.parametrize("frames", [1, 3])
def test_every_trainable_parameter_gets_a_gradient(tokenizer, frames):
    """No unused parameters, so DDP needs no find_unused_parameters (static and 4D). A fresh
    fusion is the views' mean (the frame gate is 0), a fresh temporal fusion the frames' mean
    (its gate is 0): the gated modules' parameters are in the graph but get a zero gradient
    until their gate has moved, which the gate's own gradient does first. The image-side view
    logits (consistency loss) reach CVSA and MTGF without a gate: those get gradients at once."""
    model, margin = _model(tokenizer, max_frames=frames), LearnedMargin()
    views, labels = _batch(t=frames)
    tokens = _tokens(model, tokenizer, generator=torch.Generator().manual_seed(0))
    loss, _ = total_loss(model(views, tokens), labels, LossConfig(lambda_aff=0.1), margin)
    loss.backward()
    gates = ("fusion.gate", "fusion.temporal.gate")
    assert all(model.get_parameter(n).grad.abs() > 0 for n in gates[:frames])
    assert all(p.grad is not None for _, p in model.named_parameters())  # all in the graph
    assert "fusion.ln_frame.weight" in _unused(model, margin)  # behind the closed gate
    model.zero_grad()
    with torch.no_grad():
        for n in gates[:frames]:
            model.get_parameter(n).fill_(0.5)  # gates that have moved
    total_loss(model(views, tokens), labels, LossConfig(lambda_aff=0.1),
               margin)[0].backward()
    assert _unused(model, margin) == []
    assert model.fusion.temporal is None if frames == 1 else model.fusion.temporal is not None


@pytest.mark.parametrize("switch", [{"cvsa": False}, {"mtgf": False}, {"text_head": False},
                                    {"center_images": False},
                                    {"cvsa": False, "mtgf": False},
                                    {"mtgf_queries": "prompts"}, {"fusion_gate": "matrix"},
                                    {"mtgf_queries": "prompts", "cvsa": False}])
def test_ablations_run_and_train_every_parameter(tokenizer, switch):
    model = _model(tokenizer, **switch)
    with torch.no_grad():
        model.fusion.gate.fill_(0.5)  # opened, as after the first steps
    views, labels = _batch()
    tokens = _tokens(model, tokenizer) if model.config.text_head else None
    out = model(views, tokens)
    torch.testing.assert_close(out.view_weights.sum(-1), torch.ones(4, 1))
    total_loss(out, labels, LossConfig(lambda_aff=0.0))[0].backward()
    assert _unused(model) == []
    if not model.config.text_head:
        assert not model.clip.token_embedding.weight.requires_grad  # text tower is unused


def test_freezing_and_precomputed_class_embeddings(tokenizer):
    model = _model(tokenizer, freeze_image=True, freeze_text=True)
    assert not any(p.requires_grad for n, p in model.clip.named_parameters() if n != "logit_scale")
    views, _ = _batch()
    tokens = _tokens(model, tokenizer)
    with torch.no_grad():
        classes = model.encode_classes(tokens)
        torch.testing.assert_close(model(views, class_embeddings=classes).logits,
                                   model(views, tokens).logits)
    with pytest.raises(ValueError, match="exactly one"):
        model(views, tokens, classes)


def test_per_sample_prompts_give_per_sample_class_embeddings(tokenizer):
    model = _model(tokenizer).eval()
    views, _ = _batch(b=2)
    meta = [{"sex": "female", "age": 25}, {"sex": "male", "age": 61}]
    tokens = _tokens(model, tokenizer, meta, generator=torch.Generator().manual_seed(0))
    assert tokens.shape[:3] == (2, 4, 1)
    out = model(views, tokens)
    assert out.class_embeddings.shape == (2, 4, model.clip.config.embed_dim)
    # sample 0 with its own prompts as a shared (K, E) matrix gives the same logits
    alone = model(views[:1], class_embeddings=out.class_embeddings[0])
    torch.testing.assert_close(alone.logits, out.logits[:1], atol=1e-5, rtol=1e-5)


def test_a_masked_view_does_not_change_the_prediction(tokenizer):
    model = _model(tokenizer).eval()
    views, _ = _batch(b=2)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    tokens = _tokens(model, tokenizer)
    with torch.no_grad():
        out = model(views, tokens, view_mask=mask)
        views[0, :, 1] = torch.rand_like(views[0, :, 1])
        changed = model(views, tokens, view_mask=mask)
    torch.testing.assert_close(changed.logits, out.logits)
    assert out.view_weights[0, 0, 1] == 0
    with pytest.raises(ValueError, match="every view"):
        model(views, tokens, view_mask=torch.zeros(2, 3, dtype=torch.bool))


def test_image_centring_spreads_nearly_identical_faces(tokenizer):
    """The same face with small perturbations: raw z nearly coincide, centred z do not."""
    views = torch.full((8, 1, 1, 3, 32, 32), 0.5) + torch.rand(8, 1, 1, 3, 32, 32) * 0.02
    raw, centred = _model(tokenizer, center_images=False), _model(tokenizer)

    def mean_cos(z):
        z = z.flatten(0, 2)  # (B, E)
        return (z @ z.T).mean().item()

    assert mean_cos(raw.encode_views(views)) > 0.99
    assert mean_cos(centred.encode_views(views)) < 0.5


def test_built_on_pretrained_towers_with_the_frozen_tower_frozen(tokenizer, tmp_path):
    config = FacetConfig(image_size=32, vocab_size=tokenizer.vocab_size, freeze_image=True)
    torch.manual_seed(1)
    donor = CLIP(config.clip_config())
    torch.save(donor.state_dict(), tmp_path / "clip.pt")
    model = FacetVLM(config, load_openai(tmp_path / "clip.pt", quick_gelu=False))
    torch.testing.assert_close(model.clip.visual.proj, donor.visual.proj)
    assert not model.clip.visual.proj.requires_grad and model.clip.text_projection.requires_grad


def test_overfits_a_tiny_batch(tokenizer):
    """Trained from scratch on the prompt ensemble, the model fits 8 faces within 30 steps."""
    model, margin = _model(tokenizer), LearnedMargin()
    views, labels = _batch(b=8)
    tokens = _tokens(model, tokenizer)
    opt = torch.optim.AdamW([*model.parameters(), *margin.parameters()], lr=3e-4)
    for step in range(30):
        out = model(views, tokens)
        if (out.logits.argmax(-1) == labels).all():
            break
        loss, _ = total_loss(out, labels, LossConfig(lambda_aff=0.1), margin)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (out.logits.argmax(-1) == labels).all(), f"not fitted after {step + 1} steps"
    assert step > 0  # it did have to learn


def test_pixel_statistics_start_as_clip_normalisation_and_centre_the_mean_face():
    from facet.clip import normalize_images

    model = FacetVLM(FacetConfig(center_images=False)).eval()
    views = torch.rand(4, 1, 3, 3, 64, 64)  # (B, T, V, 3, H, W)
    images = normalize_images(views.view(-1, 3, 64, 64))  # (B*T*V, 3, 64, 64)
    plain = F.normalize(model.clip.encode_image(images), dim=-1)
    torch.testing.assert_close(model.encode_views(views).view(-1, plain.shape[-1]), plain)

    mean_face = views.mean(dim=0, keepdim=True)  # (1, 1, V, 3, H, W)
    model.set_input_statistics(mean_face[0, 0], std=0.2)
    zero_input = F.normalize(model.clip.encode_image(torch.zeros(3, 3, 64, 64)), dim=-1)
    torch.testing.assert_close(model.encode_views(mean_face)[0, 0], zero_input)
    # slots the statistics did not cover keep CLIP's constants
    torch.testing.assert_close(model.pixel_std[3:, :, 0, 0],
                               torch.tensor(CLIP_STD).expand(6, 3))


def test_zero_shot_model_is_clip_alone(tokenizer):
    """`zero_shot_model`: no fusion and no parameter of its own; the logits are CLIP's scaled
    cosines between the normalised mean of the views' unit image embeddings and the prompt
    ensemble, computed here by hand from the towers (the oracle); a masked view is left out."""
    torch.manual_seed(0)
    clip = CLIP(FacetConfig(image_size=32, vocab_size=tokenizer.vocab_size).clip_config()).eval()
    model = zero_shot_model(clip, max_views=3).eval()
    assert model.fusion is None and model.image_norm is None
    assert {n for n, _ in model.named_parameters()} == {f"clip.{n}" for n, _ in
                                                        clip.named_parameters()}
    views, _ = _batch(b=2, t=2, v=3)
    tokens = _tokens(model, tokenizer)
    with torch.no_grad():
        out = model(views, class_tokens=tokens)
        z = F.normalize(clip.encode_image(normalize_images(views.flatten(0, 2))), dim=-1)
        face = F.normalize(z.view(2, 2 * 3, -1).mean(dim=1), dim=-1)  # (B, E) over T and V
        p = model.encode_classes(tokens)  # (K, E)
        torch.testing.assert_close(out.logits, clip.scale() * face @ p.T, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.view_weights, torch.full((2, 2, 3), 1 / 3))
        mask = torch.tensor([[True, False, True], [True, True, True]])
        masked = model(views, class_tokens=tokens, view_mask=mask)
        kept = F.normalize(z.view(2, 2, 3, -1)[0][:, [0, 2]].mean(dim=(0, 1)), dim=-1)
        torch.testing.assert_close(masked.logits[0], clip.scale() * kept @ p.T, rtol=0,
                                   atol=1e-5)


@pytest.mark.parametrize("frames, fusion", [(1, {}), (3, {}),
                                            (1, {"fusion_gate": "matrix"}),
                                            (1, {"mtgf_queries": "prompts"}),
                                            (3, {"mtgf_queries": "prompts",
                                                 "fusion_gate": "matrix"})])
def test_a_fresh_model_predicts_what_its_clip_predicts_zero_shot(tokenizer, frames, fusion):
    """Fine-tuning starts at the pretrained CLIP: with the gates at 0 the fused face embedding
    is the views' mean (and the frames' mean), so FACET-VLM's logits equal zero-shot CLIP's
    (the oracle: `zero_shot_model` on the same towers) whatever CVSA and MTGF are, for either
    gate and either direction of MTGF; opening the gate changes them."""
    model = _model(tokenizer, max_frames=frames, center_images=False, **fusion).eval()
    zero_shot = zero_shot_model(model.clip, max_views=3).eval()
    views, _ = _batch(b=3, t=frames)
    mask = torch.tensor([[True, False, True], [True, True, True], [False, True, True]])
    tokens = _tokens(model, tokenizer)
    with torch.no_grad():
        for m in model.fusion.parameters():  # whatever the fusion's weights are
            m.add_(torch.randn_like(m))
        model.fusion.gate.zero_()
        if frames > 1:
            model.fusion.temporal.gate.zero_()
        fresh = model(views, tokens, view_mask=mask).logits
        torch.testing.assert_close(fresh, zero_shot(views, tokens, view_mask=mask).logits,
                                   rtol=0, atol=1e-4)
        model.fusion.gate.fill_(1.0)
        assert not torch.allclose(model(views, tokens, view_mask=mask).logits, fresh, atol=1e-2)


def test_the_matrix_gate_learns_what_the_scalar_gate_sees_and_more(tokenizer):
    """At 0 both gates are the same function, and gamma_f = Gamma_f / I: the scalar's gradient is
    the trace of the matrix's (the oracle: the chain rule through Gamma = gamma I). The matrix's
    gradient is the outer product of dL/df_t and the fused direction summed over the batch: of
    rank > 1 for a batch of different faces, so it learns features a scalar cannot."""
    views, labels = _batch()
    grads = {}
    for gate in ("scalar", "matrix"):
        model = _model(tokenizer, fusion_gate=gate)
        loss, _ = total_loss(model(views, _tokens(model, tokenizer)), labels,
                             LossConfig(lambda_aff=0.0))
        loss.backward()
        grads[gate] = model.fusion.gate.grad
    assert grads["matrix"].shape == (model.clip.config.embed_dim,) * 2
    torch.testing.assert_close(grads["matrix"].trace(), grads["scalar"], rtol=1e-4, atol=1e-7)
    assert torch.linalg.matrix_rank(grads["matrix"]) > 1
