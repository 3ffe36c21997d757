"""CLIP's byte-level BPE tokenizer, written out step by step, and a BPE trainer.

Text -> token ids in five stages (Radford et al. 2021, CLIP; GPT-2's byte-level BPE):
1. clean: `ftfy.fix_text`, HTML-unescape twice, collapse whitespace, lowercase;
2. pre-tokenise with a regex into words, single digits, contractions and punctuation runs;
3. map every UTF-8 byte of a pre-token to a printable unicode character (so any text is
   representable with 256 base symbols) and mark the last symbol with `</w>`;
4. merge adjacent symbol pairs, always the pair of lowest rank (= learned earliest), until no
   pair is in the merge table;
5. look the final symbols up in the vocabulary.

Vocabulary layout (CLIP's, also used for the vocabularies we train): 256 byte symbols, the same
256 with `</w>`, one symbol per merge, then `<|startoftext|>` and `<|endoftext|>`; so the end
token is always `vocab_size - 1`. `tokenize` frames each text as [sot, ids..., eot] and pads
with 0 to a (B, L) LongTensor.

Two vocabularies: `Tokenizer.from_clip_vocab(path)` reads OpenAI's `bpe_simple_vocab_16e6.txt.gz`
(49,408 ids); `train_bpe(corpus, vocab_size)` learns merges from text for models trained from
scratch (the merges travel in checkpoints; `Tokenizer.from_merges` rebuilds the tokenizer).

Show your work: `python -m facet.tokenizer "A happy face!"` prints every stage (`bpe_stages`).
"""
from __future__ import annotations

import gzip
import html
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import ftfy
import regex
import torch

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
CLIP_NUM_MERGES = 48_894  # CLIP uses the first 49152 - 256 - 2 lines after the header
# Contractions, letter runs, single digits, punctuation runs; case-insensitive because CLIP
# matches after lowercasing anyway.
PRE_TOKEN_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"""
    r"""|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Byte value -> printable unicode character (GPT-2/CLIP table).

    Printable latin-1 bytes map to themselves; the 68 others (control characters, space, ...)
    map to chr(256 + n) in increasing byte order, so no symbol is whitespace or invisible.
    The dict's order (printable bytes first, then the others) is the order of the 256 base ids.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    others = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}


def clean_text(text: str) -> str:
    """CLIP's cleaning: fix mojibake, unescape HTML twice, collapse whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def pre_tokenize(text: str) -> list[str]:
    """Split cleaned text into pre-tokens; BPE never merges across their boundaries."""
    return regex.findall(PRE_TOKEN_PATTERN, text)


def to_symbols(pre_token: str) -> tuple[str, ...]:
    """UTF-8 bytes of a pre-token as byte symbols, the last one carrying `</w>`."""
    table = bytes_to_unicode()
    chars = [table[b] for b in pre_token.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + END_OF_WORD,)


def merge_pair(symbols: tuple[str, ...] | list[str], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every occurrence of `pair` in `symbols` by the joined symbol, left to right."""
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def apply_merges(symbols: tuple[str, ...], ranks: dict[tuple[str, str], int],
                 trace: list[tuple[tuple[str, str], tuple[str, ...]]] | None = None
                 ) -> tuple[str, ...]:
    """Merge adjacent pairs, lowest rank first, until no pair is in `ranks`.

    Args:
        symbols: the pre-token's symbols from `to_symbols`.
        ranks: (left, right) -> rank; lower merges first.
        trace: if given, receives (merged pair, symbols after the merge) per step.
    Returns:
        The final symbols.
    """
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        symbols = merge_pair(symbols, best)
        if trace is not None:
            trace.append((best, symbols))
    return symbols


class Tokenizer:
    """Byte-level BPE with CLIP's vocabulary layout (see module docstring).

    Args:
        merges: (left, right) symbol pairs in rank order.
    """

    def __init__(self, merges: list[tuple[str, str]]):
        self.merges = [(str(a), str(b)) for a, b in merges]
        byte_symbols = list(bytes_to_unicode().values())
        vocab = byte_symbols + [s + END_OF_WORD for s in byte_symbols]
        vocab += [a + b for a, b in self.merges] + [SOT, EOT]
        # Two merges can produce the same symbol ("a"+"bc", "ab"+"c"); as in CLIP the later id
        # wins when encoding and the earlier stays unused, so ids remain 0..len(vocab)-1.
        self.encoder = {symbol: i for i, symbol in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self._cache: dict[str, tuple[str, ...]] = {SOT: (SOT,), EOT: (EOT,)}

    @classmethod
    def from_merges(cls, merges: list[tuple[str, str]] | list[list[str]]) -> Tokenizer:
        """Rebuild from merges saved in a checkpoint (tuples or 2-element lists)."""
        return cls([tuple(m) for m in merges])

    @classmethod
    def from_clip_vocab(cls, path: str | Path, num_merges: int = CLIP_NUM_MERGES) -> Tokenizer:
        """Load OpenAI's `bpe_simple_vocab_16e6.txt.gz` (header line, then `a b` per line)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: CLIP BPE vocabulary not found")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")[1:num_merges + 1]
        except (OSError, EOFError, UnicodeDecodeError) as err:  # not gzip, truncated, not text
            raise ValueError(f"{path}: not a CLIP BPE vocabulary (a gzipped text file of merges "
                             f"like bpe_simple_vocab_16e6.txt.gz): {err}") from None
        merges = [tuple(line.split()) for line in lines]
        bad = [i for i, m in enumerate(merges) if len(m) != 2]
        if bad or len(merges) != num_merges:
            raise ValueError(f"{path}: expected {num_merges} merge lines 'a b' after the header, "
                             f"got {len(merges)} ({len(bad)} malformed, first at line {bad[:1]})")
        return cls(merges)

    @property
    def vocab_size(self) -> int:
        return len(self.decoder)

    @property
    def sot_token(self) -> int:
        return self.encoder[SOT]

    @property
    def eot_token(self) -> int:
        return self.encoder[EOT]

    def bpe(self, pre_token: str) -> tuple[str, ...]:
        """Final BPE symbols of one pre-token (cached: prompts repeat the same words)."""
        if pre_token not in self._cache:
            self._cache[pre_token] = apply_merges(to_symbols(pre_token), self.ranks)
        return self._cache[pre_token]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (without start/end tokens)."""
        return [self.encoder[s] for t in pre_tokenize(clean_text(text)) for s in self.bpe(t)]

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of `ids`: symbols -> bytes -> UTF-8, `</w>` -> space (inverse of `encode` up to
        cleaning and the spaces between pre-tokens). Special tokens appear as their text."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        unknown = [i for i in ids if i not in self.decoder]
        if unknown:
            raise ValueError(f"ids {unknown[:5]} are outside the vocabulary "
                             f"(size {self.vocab_size})")
        out, pending = [], bytearray()
        for symbol in (self.decoder[i] for i in ids):
            if symbol in (SOT, EOT):
                out.append(pending.decode("utf-8", errors="replace") + symbol)
                pending = bytearray()
                continue
            word_end = symbol.endswith(END_OF_WORD)
            pending += bytes(self.byte_decoder[c] for c in symbol.removesuffix(END_OF_WORD))
            if word_end:
                out.append(pending.decode("utf-8", errors="replace") + " ")
                pending = bytearray()
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out).strip()

    def tokenize(self, texts: str | list[str], context_length: int = 77,
                 truncate: bool = False) -> torch.Tensor:
        """Frame texts as [sot, ids..., eot] and zero-pad.

        Args:
            texts: one string or a list of B strings.
            context_length: L, the model's text length.
            truncate: cut long texts (keeping eot as the last token) instead of raising.
        Returns:
            (B, L) int64 token ids.
        Raises:
            ValueError: a text needs more than L tokens and truncate is False.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token] + self.encode(text) + [self.eot_token]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(f"text {row} needs {len(ids)} tokens (with start/end) but "
                                     f"context_length is {context_length}: {text[:60]!r}")
                ids = ids[:context_length - 1] + [self.eot_token]
            out[row, :len(ids)] = torch.tensor(ids)
        return out


def drop_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens (..., L) cut after the last column that holds a real token in any row.

    Columns after every text's end token hold only padding (id 0), which a causal text tower
    never looks at: dropping them makes the tower's work follow the texts' length, not L.
    """
    used = int((tokens != 0).flatten(0, -2).any(dim=0).nonzero().max()) + 1
    return tokens[..., :used]


def train_bpe(corpus: list[str], vocab_size: int) -> Tokenizer:
    """Learn BPE merges from text with CLIP's cleaning, pre-tokenisation and `</w>` rule.

    Each step merges the most frequent adjacent pair over all pre-token occurrences; ties go to
    the lexicographically smallest pair, so the result depends only on the corpus. Training stops
    early when no pair is left (every word is one symbol): then `tokenizer.vocab_size` is smaller
    than asked, and models must take their vocabulary size from the tokenizer.

    Args:
        corpus: texts to learn from (e.g. all prompts of the label set).
        vocab_size: target size including 512 byte symbols and the 2 special tokens.
    Returns:
        A Tokenizer with at most vocab_size ids.
    """
    num_merges = vocab_size - 2 * 256 - 2
    if num_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} is below the 514 ids of bytes + specials")
    word_counts = Counter(t for text in corpus for t in pre_tokenize(clean_text(text))
                          if t not in (SOT, EOT))
    words = [to_symbols(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_counts: Counter = Counter()
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> words containing it
    for w, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += counts[w]
            pair_words[pair].add(w)
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        candidates = [(c, p) for p, c in pair_counts.items() if c > 0]
        if not candidates:
            break
        best = min(candidates, key=lambda cp: (-cp[0], cp[1]))[1]
        merges.append(best)
        for w in list(pair_words[best]):  # only words containing the pair change
            old = words[w]
            for pair in zip(old, old[1:]):
                pair_counts[pair] -= counts[w]
            words[w] = new = merge_pair(old, best)
            for pair in zip(new, new[1:]):
                pair_counts[pair] += counts[w]
                pair_words[pair].add(w)
        del pair_counts[best], pair_words[best]
    return Tokenizer(merges)


DEMO_CORPUS = [f"a {adj} face showing {emotion}." for adj in ("happy", "sad", "3D", "rendered")
               for emotion in ("happiness", "sadness", "anger", "fear", "disgust", "surprise")]


def bpe_stages(text: str, tokenizer: Tokenizer) -> list[str]:
    """Every stage of encoding `text` (module docstring, stages 1-5), as printable lines: the
    "show your work" mode of `python -m facet.tokenizer`."""
    lines = [f"input:            {text!r}"]
    cleaned = clean_text(text)
    pre_tokens = pre_tokenize(cleaned)
    lines += [f"1 cleaned:        {cleaned!r}", f"2 pre-tokens:     {pre_tokens}"]
    for t in pre_tokens:
        symbols = to_symbols(t)
        lines.append(f"3 bytes->unicode: {t!r} {list(t.encode('utf-8'))} -> {list(symbols)}")
        trace: list = []
        final = apply_merges(symbols, tokenizer.ranks, trace)
        for step, (pair, after) in enumerate(trace, 1):
            lines.append(f"4   merge {step} (rank {tokenizer.ranks[pair]}) {pair}: {list(after)}")
        lines.append(f"5   ids: {[tokenizer.encoder[s] for s in final]}")
    ids = tokenizer.tokenize(text, context_length=len(tokenizer.encode(text)) + 2)[0].tolist()
    lines.append(f"framed ids:       {ids}   "
                 f"(sot={tokenizer.sot_token}, eot={tokenizer.eot_token})")
    lines.append(f"decoded:          {tokenizer.decode(ids[1:-1])!r}")
    return lines


def main(argv: list[str] | None = None) -> str:
    """`python -m facet.tokenizer "A happy face!"`: every BPE stage, as the text `__main__`
    prints."""
    import argparse

    parser = argparse.ArgumentParser(description="Show every stage of CLIP's BPE tokenizer.")
    parser.add_argument("text", nargs="?", default="A happy face!")
    parser.add_argument("--vocab", type=Path, help="bpe_simple_vocab_16e6.txt.gz (default: train "
                        "a small BPE on a built-in corpus of face descriptions)")
    parser.add_argument("--vocab_size", type=int, default=600, help="size when training")
    args = parser.parse_args(argv)
    tok = Tokenizer.from_clip_vocab(args.vocab) if args.vocab else train_bpe(DEMO_CORPUS,
                                                                               args.vocab_size)
    header = f"vocabulary: {tok.vocab_size} ids ({len(tok.merges)} merges)"
    return "\n".join([header] + bpe_stages(args.text, tok))


if __name__ == "__main__":
    print(main())
