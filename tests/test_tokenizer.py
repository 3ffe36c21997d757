"""CLIP BPE tokenizer: parity with OpenAI's vectors, round trips, the BPE trainer, framing."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from facet.tokenizer import (Tokenizer, bpe_stages, bytes_to_unicode, clean_text, pre_tokenize,
                             to_symbols, train_bpe)

CORPUS = ["a 3D scan of a face showing happiness", "a rendered face with a happy expression",
          "a 3D scan of a face showing sadness", "a photo of an angry face",
          "a face showing fear", "a surprised face", "a face showing disgust"]


def test_clip_vocab_reproduces_shared_vectors(shared_data):
    tok = Tokenizer.from_clip_vocab(shared_data / "bpe_simple_vocab_16e6.txt.gz")
    assert (tok.vocab_size, tok.sot_token, tok.eot_token) == (49408, 49406, 49407)
    vectors = json.loads((shared_data / "clip_tokenizer_vectors.json").read_text())
    for text, ids in vectors.items():
        assert tok.encode(text) == ids, text
        row = tok.tokenize(text)[0].tolist()  # (77,)
        assert row == [49406] + ids + [49407] + [0] * (77 - len(ids) - 2)


def test_byte_table_is_printable_and_invertible():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert not any(c.isspace() for c in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == chr(256 + 32)  # 33rd non-printable


def test_cleaning_and_pre_tokenisation():
    assert clean_text("  A &amp;amp; B\t\nC ") == "a & b c"  # HTML unescaped twice
    assert pre_tokenize("it's 2025, wow!!") == ["it", "'s", "2", "0", "2", "5", ",", "wow", "!!"]
    assert to_symbols("hé") == ("h", "Ã", "©</w>")  # é = 2 UTF-8 bytes, the last marked


def test_encode_decode_round_trip():
    tok = train_bpe(CORPUS, 700)
    for text in CORPUS + ["An UNSEEN émoji 😀 face, with punctuation!?"]:
        ids = tok.encode(text)
        decoded = tok.decode(ids)
        assert tok.encode(decoded) == ids
        assert decoded.replace(" ", "") == clean_text(text).replace(" ", "")
    assert tok.decode(tok.encode(CORPUS[1])) == CORPUS[1]  # words only: exact


def _naive_bpe(corpus: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Reference trainer: recount every pair from scratch at every step."""
    words = Counter(to_symbols(t) for text in corpus for t in pre_tokenize(clean_text(text)))
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def test_train_bpe_matches_naive_reference_and_is_deterministic():
    tok = train_bpe(CORPUS, 514 + 60)
    assert tok.merges == _naive_bpe(CORPUS, 60)
    shuffled = random.Random(1).sample(CORPUS, len(CORPUS))
    assert train_bpe(shuffled, 514 + 60).merges == tok.merges  # order of the corpus is irrelevant


def test_train_bpe_learns_frequent_words():
    corpus = ["happiness"] * 20 + ["sadness"] * 10 + ["xq"]
    tok = train_bpe(corpus, 514 + 30)
    # (e, s), (n, e), (s, s</w>) all occur 30 times: the tie goes to the smallest pair
    assert tok.merges[0] == ("e", "s")
    assert tok.encode("happiness sadness") == [tok.encoder["happiness</w>"],
                                               tok.encoder["sadness</w>"]]
    assert tok.merges[-1] == ("x", "q</w>")  # the rarest pair is learned last


def test_train_bpe_stops_when_nothing_left_to_merge():
    tok = train_bpe(["ab ab"], 2000)
    assert tok.merges == [("a", "b</w>")] and tok.vocab_size == 515


def test_vocab_layout_and_from_merges():
    tok = train_bpe(CORPUS, 560)
    assert tok.vocab_size == 560 == 514 + len(tok.merges)
    assert (tok.sot_token, tok.eot_token) == (558, 559)
    as_lists = [list(m) for m in tok.merges]  # what a JSON round trip gives back
    assert Tokenizer.from_merges(as_lists).encode(CORPUS[1]) == tok.encode(CORPUS[1])
    with pytest.raises(ValueError, match="514"):
        train_bpe(CORPUS, 300)


def test_tokenize_overflow_raises_or_truncates_keeping_eot():
    tok = train_bpe(CORPUS, 600)
    n = len(tok.encode(CORPUS[0])) + 2
    assert tok.tokenize(CORPUS[0], context_length=n)[0, -1] == tok.eot_token  # fits exactly
    with pytest.raises(ValueError, match=f"needs {n} tokens"):
        tok.tokenize([CORPUS[1], CORPUS[0]], context_length=n - 1)
    cut = tok.tokenize(CORPUS[0], context_length=5, truncate=True)
    assert cut.shape == (1, 5) and cut[0, 0] == tok.sot_token and cut[0, -1] == tok.eot_token
    assert cut[0, 1:4].tolist() == tok.encode(CORPUS[0])[:3]


def test_decode_rejects_unknown_ids():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        train_bpe(CORPUS, 600).decode([5, 600])


def test_bpe_stages_shows_every_stage():
    tok = train_bpe(CORPUS, 600)
    lines = bpe_stages("A happy face!", tok)
    for stage in ("1 cleaned", "2 pre-tokens", "3 bytes->unicode", "4   merge", "5   ids"):
        assert any(line.startswith(stage) for line in lines), stage
    framed = [tok.sot_token] + tok.encode("A happy face!") + [tok.eot_token]
    assert str(framed) in lines[-2]


def test_merges_producing_the_same_symbol_keep_ids_contiguous():
    merges = [("b", "c</w>"), ("a", "b"), ("ab", "c</w>"), ("a", "bc</w>")]  # "abc</w>" twice
    tok = Tokenizer.from_merges(merges)
    assert (tok.vocab_size, tok.eot_token) == (518, 517)
    assert tok.encode("abc") == [515]  # the later id wins, as in CLIP
    assert tok.decode([514]) == tok.decode([515]) == "abc"


def test_show_your_work_cli_returns_every_stage_silently(capsys):
    from facet.tokenizer import main

    text = main(["A happy face!", "--vocab_size", "540"])
    assert text.startswith("vocabulary:") and "pre-tokens" in text and "decoded" in text
    assert capsys.readouterr().out == ""  # the module prints only under __main__
