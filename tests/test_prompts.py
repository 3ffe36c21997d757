"""Prompts: class words, grids, metadata-augmented prompts, sampling, tokenising, ensembles."""
import pytest
import torch
import torch.nn.functional as F

from facet.prompts import (CLASS_WORDS, METADATA_TEMPLATES, SYNONYMS, TEMPLATES, ClassPrompts,
                           build_prompts, class_words, describe_subject, ensemble_embeddings,
                           prompt_tokens, sample_prompts, tokenize_grid)
from facet.tokenizer import drop_padding, train_bpe

EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


def test_every_class_has_the_same_number_of_prompts_naming_it():
    grid = build_prompts(EMOTIONS)
    assert len(grid) == len(EMOTIONS)
    for name, prompts in zip(EMOTIONS, grid):
        assert len(prompts) == len(TEMPLATES) * SYNONYMS
        words = CLASS_WORDS[name].nouns + CLASS_WORDS[name].adjectives
        assert all(any(w in p for w in words) for p in prompts)
        assert len(set(prompts)) == len(prompts)  # known classes: every prompt differs


def test_unknown_and_4dme_classes_fall_back_to_their_name():
    assert class_words("Zorblax").nouns == ("zorblax",) * SYNONYMS
    grid = build_prompts(["positive", "negative", "surprise", "repression", "others", "awe_struck"])
    assert all(len(row) == len(TEMPLATES) * SYNONYMS for row in grid)
    assert all("awe struck" in p for p in grid[-1])


def test_articles_follow_the_next_word():
    prompts = build_prompts(["anger"])[0]
    assert "a rendered face with an angry expression." in prompts
    assert not any(" a angry" in p or " a irritated" in p for p in prompts)


def test_metadata_prompts_are_per_sample_and_keep_P():
    meta = [{"sex": "F", "age": 23, "ethnicity": "AE"}, {}, {"sex": "male", "age_group": "60-69"}]
    grids = build_prompts(["happiness", "fear"], meta)
    assert len(grids) == 3 and all(len(g[0]) == len(TEMPLATES) * SYNONYMS for g in grids)
    assert "a 3D scan of a young east asian female face showing joy." in grids[0][0]
    assert grids[1] == build_prompts(["happiness", "fear"])  # nothing known -> plain prompts
    assert all("older male" in p for p in grids[2][1])
    assert len(METADATA_TEMPLATES) == len(TEMPLATES)
    assert describe_subject({"ethnicity": "XY"}) == "xy"


def test_sample_prompts_is_seeded_and_draws_from_the_grid():
    grid = build_prompts(EMOTIONS)
    a = sample_prompts(grid, torch.Generator().manual_seed(3))
    b = sample_prompts(grid, torch.Generator().manual_seed(3))
    assert a == b and all(p in row for p, row in zip(a, grid))
    draws = {tuple(sample_prompts(grid, torch.Generator().manual_seed(s))) for s in range(5)}
    assert len(draws) > 1
    positions = {row.index(p) for p, row in zip(a, grid)}
    assert len(positions) == 1  # by default the classes share the template within a step
    per_class = sample_prompts(grid, torch.Generator().manual_seed(3), per_class=True)
    assert len({row.index(p) for p, row in zip(per_class, grid)}) > 1


def test_tokenize_grid_layouts():
    grid = build_prompts(["anger", "fear"])
    tok = train_bpe([p for row in grid for p in row], 560)
    tokens = tokenize_grid(tok, grid, 48)
    assert tokens.shape == (2, len(TEMPLATES) * SYNONYMS, 48)
    assert torch.equal(tokens[1, 4], tok.tokenize(grid[1][4], 48)[0])
    assert tokenize_grid(tok, ["a", "b"], 48).shape == (2, 1, 48)
    per_sample = build_prompts(["anger", "fear"], [{"sex": "F"}, {}, {"age": 40}])
    assert tokenize_grid(tok, per_sample, 48).shape == (3, 2, len(TEMPLATES) * SYNONYMS, 48)


def test_ensemble_is_the_renormalised_mean_of_unit_embeddings():
    emb = torch.randn(3, 5, 8) * torch.rand(3, 5, 1) * 10  # arbitrary norms must not matter
    out = ensemble_embeddings(emb)
    expected = F.normalize(F.normalize(emb, dim=-1).sum(dim=1), dim=-1)
    torch.testing.assert_close(out, expected)
    # repeating every prompt the same number of times (unknown classes) changes nothing
    torch.testing.assert_close(ensemble_embeddings(emb.repeat(1, 3, 1)), out)
    assert ensemble_embeddings(torch.randn(2, 3, 4, 8)).shape == (2, 3, 8)


def test_no_prompt_facet_builds_is_cut():
    """Every class x every template x every subject description fits the tiny text tower, so
    no prompt ever loses its class word; a prompt that would not fit is refused, not cut."""
    from facet import build
    from facet.clip import PRESETS
    from facet.config import TrainConfig
    from facet.data.layouts import BU3DFE_CODES
    from facet.prompts import CLASS_WORDS, ETHNICITY_WORDS, prompt_tokens

    tokenizer = build.build_tokenizer(TrainConfig())
    length = PRESETS["tiny"].context_length
    people = [{"sex": sex, "age_group": age, "ethnicity": code}
              for sex in ("female", "male") for age in ("young", "middle-aged", "older", "18-29")
              for code in ETHNICITY_WORDS]
    classes = [*CLASS_WORDS, *BU3DFE_CODES.values()]
    tokens = prompt_tokens(tokenizer, list(dict.fromkeys(classes)), length, people)
    assert tokens.shape[-1] <= length
    ends = (tokens == tokenizer.eot_token).sum(-1)  # exactly one end token per prompt
    assert (ends == 1).all()
    with pytest.raises(ValueError, match="does not fit the text tower.*shorten"):
        prompt_tokens(tokenizer, ["a very " * 40 + "long class"], length)


def test_a_description_is_its_own_prompt():
    """Zero-shot by description: a sentence is not put into templates ("a photo of a a face
    with ... face"), it is every prompt of its class; names still fill the templates."""
    from facet.prompts import build_prompts, is_description

    grid = build_prompts(["happiness", "a face with the lip corners pulled up"])
    assert len(grid[0]) == len(grid[1])  # the same P: the grid stacks into (K, P, L)
    assert set(grid[1]) == {"a face with the lip corners pulled up"}
    assert any("happy" in p for p in grid[0])
    assert is_description("brows drawn together and lowered") and is_description("a frown")
    assert not is_description("deep sadness") and not is_description("joy")


def test_class_prompts_fixed_ensemble_draws_and_metadata():
    """ClassPrompts: the plain ensemble is `prompt_tokens`, tokenised once; with a generator
    one prompt per class is drawn per call (as `prompt_tokens` draws it from the same seed);
    with metadata every sample gets its own prompts, and metadata is ignored otherwise."""
    tokenizer = train_bpe([p for row in build_prompts(EMOTIONS) for p in row], 600)
    ensemble = ClassPrompts(tokenizer, EMOTIONS, 64)
    assert ensemble.fixed and ensemble.tokens() is ensemble.tokens([{"sex": "female"}])
    assert torch.equal(ensemble.tokens(), prompt_tokens(tokenizer, EMOTIONS, 64))
    drawn = ClassPrompts(tokenizer, EMOTIONS, 64, generator=torch.Generator().manual_seed(3))
    oracle = torch.Generator().manual_seed(3)
    for _ in range(3):
        tokens = drawn.tokens()
        assert not drawn.fixed and tokens.shape[:2] == (len(EMOTIONS), 1)
        assert torch.equal(tokens, prompt_tokens(tokenizer, EMOTIONS, 64, generator=oracle))
    meta = [{"sex": "female", "age_group": "young"}, {"sex": "male", "age_group": "old"}]
    per_sample = ClassPrompts(tokenizer, EMOTIONS, 64, metadata=True).tokens(meta)
    assert torch.equal(per_sample, prompt_tokens(tokenizer, EMOTIONS, 64, meta))
    assert per_sample.shape[:2] == (2, len(EMOTIONS))


def test_drop_padding_keeps_every_real_token():
    """Columns after the longest text's end token are padding only; nothing else is cut."""
    tokens = torch.tensor([[5, 6, 7, 0, 0, 0], [5, 8, 0, 0, 0, 0]])
    assert torch.equal(drop_padding(tokens), tokens[:, :3])
    assert torch.equal(drop_padding(tokens.view(2, 1, 6)), tokens.view(2, 1, 6)[..., :3])
