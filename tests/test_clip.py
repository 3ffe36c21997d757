"""CLIP model: attention oracle, causality, EOT pooling, checkpoint layout, training."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facet.clip import (CLIP, PRESETS, CLIPConfig, causal_mask,
                        config_from_state_dict, interpolate_positional_embedding, normalize_images)
from facet.tokenizer import train_bpe
from facet.transformer import MultiheadAttention

# head dim 64 so that the architecture can be rebuilt from weight shapes
SMALL = CLIPConfig(embed_dim=32, image_size=32, patch_size=8, vision_width=64, vision_layers=2,
                   vision_heads=1, context_length=16, vocab_size=600, text_width=64,
                   text_heads=1, text_layers=2, quick_gelu=False)
PROMPTS = ["a face showing happiness", "a face showing sadness", "a face showing anger",
           "a face showing fear", "a face showing disgust", "a face showing surprise",
           "a neutral face", "a happy smiling face"]


def _tokens(count: int = 4, length: int = 16, seed: int = 0) -> torch.Tensor:
    """(count, length) random ids with the end token at varying positions, zero padded."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, SMALL.vocab_size - 2, (count, length), generator=g)
    for row in range(count):
        tokens[row, 0] = SMALL.vocab_size - 2  # sot
        tokens[row, 3 + row] = SMALL.vocab_size - 1  # eot
        tokens[row, 4 + row:] = 0
    return tokens


def test_sdpa_attention_equals_explicit_math_and_torch_mha():
    B, N, C, heads = 2, 5, 16, 4
    attn = MultiheadAttention(C, heads)
    nn.init.normal_(attn.in_proj_bias)
    x = torch.randn(B, N, C)
    keep = causal_mask(N)
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    split = lambda t: t.view(B, N, heads, C // heads).transpose(1, 2)  # (B, heads, N, d)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(C // heads)  # (B, heads, N, N)
    weights = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
    expected = attn.out_proj((weights @ split(v)).transpose(1, 2).reshape(B, N, C))
    torch.testing.assert_close(attn(x, keep), expected, rtol=1e-5, atol=1e-6)

    reference = nn.MultiheadAttention(C, heads, batch_first=True)
    reference.load_state_dict(attn.state_dict())  # same parameter layout
    out, _ = reference(x, x, x, attn_mask=~keep, need_weights=False)  # torch: True = blocked
    torch.testing.assert_close(attn(x, keep), out, rtol=1e-5, atol=1e-6)


def float32_rounding(reference: torch.Tensor) -> float:
    """Tolerance for two computations that are equal in exact arithmetic but sum in another
    order (another kernel, another sequence length, another CPU): 100 float32 epsilons (1.2e-7)
    of the largest magnitude. Measured differences were ~10 epsilons on an AVX2 EPYC."""
    return 100 * torch.finfo(torch.float32).eps * reference.abs().max().item()


def test_text_tower_is_causal():
    model = CLIP(SMALL).eval()
    tokens = _tokens(2)
    t = 5
    changed = tokens.clone()
    changed[:, t + 1:] = torch.randint(1, 500, (2, SMALL.context_length - t - 1))
    mask = causal_mask(SMALL.context_length)
    hidden = [model.transformer(model.token_embedding(x) + model.positional_embedding, mask)
              for x in (tokens, changed)]
    torch.testing.assert_close(hidden[0][:, :t + 1], hidden[1][:, :t + 1], rtol=0,
                               atol=float32_rounding(hidden[0]))
    assert not torch.allclose(hidden[0][:, t + 1:], hidden[1][:, t + 1:])  # the test can fail


def test_text_feature_ignores_everything_after_eot():
    model = CLIP(SMALL).eval()
    tokens = _tokens(4)
    noisy = tokens.clone()
    for row in range(4):  # replace the padding after each eot with random ids
        noisy[row, 4 + row:] = torch.randint(1, 598, (SMALL.context_length - 4 - row,))
    with torch.no_grad():
        clean = model.encode_text(tokens)
        torch.testing.assert_close(clean, model.encode_text(noisy), rtol=0,
                                   atol=float32_rounding(clean))
        shorter = model.encode_text(tokens[:1, :8])  # fewer positions than the context length
    torch.testing.assert_close(shorter, clean[:1], rtol=0, atol=float32_rounding(clean))
    changed = tokens.clone()
    changed[0, 1] += 1  # a token before the eot: the feature must change (the test can fail)
    assert not torch.allclose(model.encode_text(changed)[:1], clean[:1])
    with pytest.raises(ValueError, match="no end-of-text"):
        model.encode_text(torch.ones(1, 8, dtype=torch.long))


def test_view_batches_and_other_image_sizes():
    model = CLIP(SMALL).eval()
    views = normalize_images(torch.rand(2, 3, 3, 32, 32))  # (B, V, 3, H, W)
    with torch.no_grad():
        out = model.encode_image(views)
        single = model.encode_image(views[1, 2])
    assert out.shape == (2, 3, SMALL.embed_dim)
    torch.testing.assert_close(out[1, 2], single, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        larger = model.encode_image(normalize_images(torch.rand(2, 3, 48, 64)))
    assert larger.shape == (2, SMALL.embed_dim) and larger.isfinite().all()
    with pytest.raises(ValueError, match="multiple of patch"):
        model.encode_image(torch.rand(1, 3, 30, 32))


def test_positional_interpolation_keeps_class_slot_and_constants():
    pos = torch.cat([torch.randn(1, 8), torch.full((16, 8), 0.5)])  # class + constant 4x4 grid
    out = interpolate_positional_embedding(pos, (6, 5))
    assert out.shape == (31, 8) and torch.equal(out[0], pos[0])
    torch.testing.assert_close(out[1:], torch.full((30, 8), 0.5))
    assert interpolate_positional_embedding(pos, (4, 4)) is pos


@pytest.mark.parametrize("preset, layout", [("vit-b-16", "clip_vit_b16_state_dict.txt"),
                                            ("vit-b-32", "clip_vit_b32_state_dict.txt"),
                                            ("vit-l-14", "clip_vit_l14_state_dict.txt")])
def test_parameter_layout_equals_openai(shared_data, preset, layout):
    expected = {}
    for line in (shared_data / layout).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            expected[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    with torch.device("meta"):  # shapes only: ViT-L/14 would need 1.7 GB on the CPU
        model = CLIP(PRESETS[preset])
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert ours == expected
    assert config_from_state_dict(model.state_dict()) == PRESETS[preset]


@pytest.mark.parametrize("preset", ["tiny", "tiny-stem"])
def test_tiny_presets_rebuild_from_shapes(preset):
    with torch.device("meta"):
        model = CLIP(PRESETS[preset])
    assert config_from_state_dict(model.state_dict(), quick_gelu=False) == PRESETS[preset]


def test_conv_stem_tokens_see_their_receptive_field_only():
    """Oracle: the receptive field of the stem's token grid, computed by hand. Two 3x3 stride-2
    convolutions (padding 1) then conv1 on 2x2 of their outputs: token (r, c) of an 8-px grid
    reads input rows 8r - 3 .. 8r + 7 (and the same columns), so a pixel changed at (20, 20)
    moves the token of row and column 2 (16 - 3 <= 20 <= 16 + 7) only, the others exactly not."""
    visual = CLIP(replace(SMALL, stem_layers=2)).visual.eval()
    assert [conv.stride for conv in visual.stem] == [(2, 2), (2, 2)]
    assert visual.conv1.kernel_size == (2, 2)  # 8 px per token = 2 x 2 x 2

    def tokens(x: torch.Tensor) -> torch.Tensor:
        for conv in visual.stem:
            x = F.gelu(conv(x))
        return visual.conv1(x)[0].abs().sum(0)  # (4, 4) grid of 8-px tokens

    image = torch.randn(1, 3, 32, 32)
    changed = image.clone()
    changed[0, :, 20, 20] += 10.0
    with torch.no_grad():
        moved = (tokens(changed) - tokens(image)).abs() > 0  # (4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[2, 2] = True
    assert torch.equal(moved, expected)
    with pytest.raises(ValueError, match="stride-2 layers"):
        CLIP(replace(SMALL, patch_size=8, stem_layers=4))


def test_zero_shot_gives_probabilities():
    tokenizer = train_bpe(PROMPTS, 600)
    model = CLIP(replace(SMALL, vocab_size=tokenizer.vocab_size)).eval()
    images = normalize_images(torch.rand(3, 3, 32, 32))
    with torch.no_grad():
        logits, logits_per_text = model(images, tokenizer.tokenize(PROMPTS[:6], 16))
    probs = logits.softmax(dim=-1)  # (B, K)
    assert probs.shape == (3, 6) and torch.equal(logits_per_text, logits.t())
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    assert ((probs >= 0) & (probs <= 1)).all()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # e^10 would be 22026: clamped to 100
        assert model(images, tokenizer.tokenize(PROMPTS[:6], 16))[0].abs().max() <= 100 + 1e-4


def test_tiny_clip_overfits_a_toy_batch():
    tokenizer = train_bpe(PROMPTS, 600)
    model = CLIP(replace(SMALL, vocab_size=tokenizer.vocab_size))
    images = normalize_images(torch.rand(8, 3, 32, 32))
    tokens = tokenizer.tokenize(PROMPTS, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    target = torch.arange(8)
    losses = []
    for _ in range(12):  # ~0.05 s each on an idle core
        logits_per_image, logits_per_text = model(images, tokens)
        loss = (F.cross_entropy(logits_per_image, target)
                + F.cross_entropy(logits_per_text, target)) / 2  # CLIP's symmetric loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
