"""Emotion text prompts: class words, templates, metadata-augmented prompts, prompt ensembles.

The text side of facet's pipeline: FACET-VLM classifies a face by the cosine similarity of its
embedding to the text embedding of each class. A class is described by several nouns and adjectives
(happiness: "happiness", "joy", "a smile" / "happy", "joyful", "smiling") and each description is
put into several templates ("a 3D scan of a face showing {noun}"). Our interpretation of the
papers' prompt design (their exact templates are not public):

- Prompt grid: for class k, prompt (i, j) = template i filled with synonym j of that class.
  Every known class has exactly `SYNONYMS` nouns and adjectives, and an unknown class name falls
  back to the name itself, repeated `SYNONYMS` times, so every class gets the same number of
  prompts P = len(templates) * SYNONYMS and the tokens stack into one (K, P, L) tensor. Repeating
  a prompt does not bias the ensemble: each template still weighs the same.
- Ensemble (inference): `ensemble_embeddings` averages the L2-normalised embeddings of a class's
  P prompts and renormalises (CLIP's prompt ensembling, Radford et al. 2021, sec. 3.1.4).
- Training: one random prompt per class and step (`sample_prompts`, seeded), so the model sees
  the class through many phrasings but pays for K prompts per step instead of K * P. By default
  the classes share the drawn template within a step (see `sample_prompts` for why).
- Metadata (AffectVLM): when a dataset knows the subject's sex, age group and ethnicity, the
  templates in `METADATA_TEMPLATES` describe the face ("a young female face showing joy").
  Metadata belongs to a *sample*, so augmented prompts are per sample: `build_prompts` with a
  list of B metadata dicts returns B prompt grids, which tokenise to (B, K, P, L) and which
  `FacetVLM` encodes to per-sample class embeddings (B, K, E) (see facet/model.py).

Shapes: K classes, P prompts per class, L tokens, E embedding dim, B samples.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facet.tokenizer import drop_padding

SYNONYMS = 3  # nouns and adjectives per known class; unknown classes repeat their own name


@dataclass(frozen=True)
class ClassWords:
    """How to talk about one class: SYNONYMS nouns ("joy") and adjectives ("joyful")."""

    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]


# The six basic emotions + neutral (BU-3DFE, BU-4DFE, Bosphorus), and the 4DME micro-expression
# classes. Nouns fit "showing {noun}", adjectives fit "a {adjective} expression".
CLASS_WORDS: dict[str, ClassWords] = {
    "anger": ClassWords(("anger", "rage", "fury"), ("angry", "furious", "irritated")),
    "disgust": ClassWords(("disgust", "revulsion", "distaste"),
                          ("disgusted", "repulsed", "revolted")),
    "fear": ClassWords(("fear", "terror", "fright"), ("fearful", "scared", "afraid")),
    "happiness": ClassWords(("happiness", "joy", "a smile"), ("happy", "joyful", "smiling")),
    "sadness": ClassWords(("sadness", "sorrow", "grief"), ("sad", "unhappy", "sorrowful")),
    "surprise": ClassWords(("surprise", "astonishment", "amazement"),
                           ("surprised", "astonished", "amazed")),
    "neutral": ClassWords(("no emotion", "a neutral expression", "calm"),
                          ("neutral", "expressionless", "relaxed")),
    "positive": ClassWords(("a positive emotion", "pleasure", "delight"),
                           ("positive", "pleased", "delighted")),
    "negative": ClassWords(("a negative emotion", "displeasure", "discomfort"),
                           ("negative", "displeased", "uncomfortable")),
    "repression": ClassWords(("a suppressed emotion", "repression", "restraint"),
                             ("restrained", "suppressed", "tense")),
    "others": ClassWords(("a subtle expression", "a slight movement", "an ambiguous emotion"),
                         ("subtle", "ambiguous", "slightly moving")),
}

# Our templates: the subject is a rendered grey 3D face, which the wording says.
TEMPLATES: tuple[str, ...] = (
    "a 3D scan of a face showing {noun}.",
    "a rendered face with a {adjective} expression.",
    "a grey 3D face mesh that looks {adjective}.",
    "a photo of a {adjective} face.",
    "a 3D model of a person expressing {noun}.",
    "a face rendered from a 3D scan, showing {noun}.",
    "a {adjective} facial expression.",
    "a shaded 3D face of someone who is {adjective}.",
)

# AffectVLM-style augmented prompts; {subject} is e.g. "young female" or "middle-aged male".
# As many as TEMPLATES, so that samples with and without metadata give the same P and stack.
METADATA_TEMPLATES: tuple[str, ...] = (
    "a 3D scan of a {subject} face showing {noun}.",
    "a rendered {subject} face with a {adjective} expression.",
    "a grey 3D face mesh of a {subject} person who looks {adjective}.",
    "a photo of a {adjective} {subject} face.",
    "a 3D model of a {subject} person expressing {noun}.",
    "a {subject} face rendered from a 3D scan, showing {noun}.",
    "a {adjective} facial expression on a {subject} face.",
    "a shaded 3D face of a {subject} person who is {adjective}.",
)

# BU-3DFE ethnicity codes; other codes pass through lower-cased.
ETHNICITY_WORDS = {"WH": "white", "BL": "black", "AE": "east asian", "AM": "middle-east asian",
                   "LA": "latino", "IN": "indian"}


def class_words(name: str) -> ClassWords:
    """Words for a class; an unknown name (zero-shot) becomes its own noun and adjective.

    Args:
        name: class name, matched case-insensitively ("Happiness" == "happiness").
    Returns:
        ClassWords with exactly SYNONYMS nouns and adjectives.
    """
    key = name.strip().lower()
    if not key:
        raise ValueError("class names must be non-empty strings")
    if key in CLASS_WORDS:
        return CLASS_WORDS[key]
    words = (key.replace("_", " "),) * SYNONYMS
    return ClassWords(words, words)


def _age_word(age: object) -> str:
    """'young' / 'middle-aged' / 'older' from a number or a range like '18-29'; words pass."""
    text = str(age).strip().lower()
    digits = text.split("-")[0].strip()
    if not digits.isdigit():
        return text  # already a word ("young")
    years = int(digits)
    return "young" if years < 30 else "middle-aged" if years < 50 else "older"


def describe_subject(metadata: Mapping[str, object]) -> str:
    """The subject phrase of an augmented prompt, e.g. 'young white female'.

    Args:
        metadata: any of "age" / "age_group" (years, a range "18-29" or a word), "ethnicity"
            (BU-3DFE code or a word), "sex" ("female"/"male", "F"/"M"); missing keys are left out.
    Returns:
        The words in English order (age, ethnicity, sex), or "" when nothing is known.
    """
    words = []
    age = metadata.get("age_group", metadata.get("age"))
    if age is not None and str(age).strip():
        words.append(_age_word(age))
    ethnicity = metadata.get("ethnicity")
    if ethnicity is not None and str(ethnicity).strip():
        code = str(ethnicity).strip()
        words.append(ETHNICITY_WORDS.get(code.upper(), code.lower()))
    sex = metadata.get("sex")
    if sex is not None and str(sex).strip():
        s = str(sex).strip().lower()
        words.append({"f": "female", "m": "male"}.get(s, s))
    return " ".join(words)


def with_articles(text: str) -> str:
    """'a angry face' -> 'an angry face' (templates cannot know the word that follows 'a')."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def is_description(name: str) -> bool:
    """A class given as a description ("a face with the lip corners pulled up": 3+ words, or a
    phrase with an article, "a frown") rather than a name: it is its own prompt, not a word to
    put into templates ("a rendered face with an a frown expression")."""
    words = name.lower().split()
    return len(words) >= 3 or (len(words) == 2 and words[0] in ("a", "an", "the"))


def _grid(classes: Sequence[str], templates: Sequence[str], subject: str | None) -> list[list[str]]:
    grid = []
    for name in classes:
        if is_description(name):  # the same P prompts as a named class, so the grid stacks
            grid.append([name.strip()] * (len(templates) * SYNONYMS))
            continue
        words = class_words(name)
        grid.append([with_articles(t.format(noun=words.nouns[j], adjective=words.adjectives[j],
                                             subject=subject))
                     for t in templates for j in range(SYNONYMS)])
    return grid


def build_prompts(classes: Sequence[str],
                  metadata: Mapping[str, object] | Sequence[Mapping[str, object]] | None = None,
                  templates: Sequence[str] = TEMPLATES,
                  metadata_templates: Sequence[str] = METADATA_TEMPLATES) -> list:
    """The prompt grid of every class: template i x synonym j.

    Args:
        classes: K class names, known (CLASS_WORDS) or new (zero-shot).
        metadata: None -> plain prompts; one dict -> prompts about that subject; a list of B
            dicts -> one grid per sample (augmented prompts are per sample). A sample whose
            metadata describes nothing gets the plain templates.
        templates: plain templates with {noun} and/or {adjective}.
        metadata_templates: augmented templates, also with {subject}; as many as `templates`
            when metadata is a list, so that every sample's grid has the same P.
    Returns:
        K lists of P = len(templates) * SYNONYMS strings, or a list of B such grids.
    """
    if len(classes) == 0:
        raise ValueError("build_prompts needs at least one class name")
    if metadata is not None and not isinstance(metadata, Mapping):
        if len(templates) != len(metadata_templates):
            raise ValueError(f"per-sample prompts need as many metadata templates "
                             f"({len(metadata_templates)}) as templates ({len(templates)})")
        return [build_prompts(classes, m, templates, metadata_templates) for m in metadata]
    subject = describe_subject(metadata) if metadata is not None else ""
    if subject:
        return _grid(classes, metadata_templates, subject)
    return _grid(classes, templates, None)


def sample_prompts(grid: Sequence[Sequence[str]], generator: torch.Generator,
                   per_class: bool = False) -> list[str]:
    """The training-time prompts: one random prompt per class, drawn with `generator`.

    By default all classes share the drawn grid position (template i, synonym j), so within a
    step the classes' prompts differ only in the class words and the logits contrast exactly
    those; the template changes from step to step. `per_class=True` draws a position per class,
    which a text tower trained from scratch learns much more slowly (it must first learn to
    ignore the template before it can tell the classes apart).

    Args:
        grid: K lists of P prompts (from `build_prompts`).
        generator: a seeded CPU torch.Generator, so runs repeat exactly.
        per_class: draw the grid position independently per class.
    Returns:
        K strings.
    """
    count = len(grid) if per_class else 1
    picks = torch.randint(0, len(grid[0]), (count,), generator=generator).tolist()
    return [prompts[picks[k % count]] for k, prompts in enumerate(grid)]


def tokenize_grid(tokenizer, grid: Sequence, context_length: int) -> torch.Tensor:
    """Tokenise a prompt grid of any nesting into a token tensor of the same layout.

    Args:
        tokenizer: a facet.tokenizer.Tokenizer (anything with `.tokenize(texts, context_length)`).
        grid: K lists of P strings, a list of K strings (one prompt per class), or B such grids.
        context_length: L, the text encoder's context length.
    Returns:
        LongTensor (K, P, L), (K, 1, L) for a flat list, or (B, K, P, L).
    """
    if isinstance(grid[0], str):  # one prompt per class -> P = 1
        grid = [[p] for p in grid]
    if isinstance(grid[0][0], str):
        k, p = len(grid), len(grid[0])
        if any(len(row) != p for row in grid):
            raise ValueError("every class needs the same number of prompts to stack as (K, P, L)")
        flat = [text for row in grid for text in row]
        try:  # a prompt cut short could lose its class word: refuse it instead
            tokens = tokenizer.tokenize(flat, context_length=context_length)
        except ValueError as err:
            raise ValueError(f"a class prompt does not fit the text tower: {err}; shorten the "
                             "template or class name") from None
        return tokens.view(k, p, -1)  # (K, P, L)
    return torch.stack([tokenize_grid(tokenizer, g, context_length) for g in grid])  # (B, K, P, L)


def prompt_tokens(tokenizer, classes: Sequence[str], context_length: int, metadata=None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids of the class prompts, ready for `FacetVLM`.

    Args:
        tokenizer: a facet.tokenizer.Tokenizer. classes: K class names.
        context_length: L, the text tower's context length.
        metadata: None, one dict, or B dicts (per-sample augmented prompts).
        generator: None -> every prompt (the inference ensemble); a generator -> one random
            prompt per class (and sample), the training-time draw.
    Returns:
        LongTensor (K, P, L') or (B, K, P, L'); P = 1 with a generator; L' <= context_length
        is the longest prompt's length.
    Raises:
        ValueError: a prompt needs more than `context_length` tokens (it is never cut).
    """
    grid = build_prompts(classes, metadata)
    if generator is not None:  # keep the grid layout with P = 1: (K, 1) or (B, K, 1)
        def draw(g):
            return [[text] for text in sample_prompts(g, generator)]
        grid = draw(grid) if isinstance(grid[0][0], str) else [draw(g) for g in grid]
    return drop_padding(tokenize_grid(tokenizer, grid, context_length))


class ClassPrompts:
    """What a model reads for each class: the token ids of its prompts, ready for `FacetVLM`.

    One object answers for training and evaluation alike, so both prompt the same classes the
    same way; the model and the loss never need to know where the prompts came from.

    Args:
        tokenizer: the model's tokenizer. context_length: its text tower's L.
        prompts: what each class is prompted with, in label order: its name ("happiness"),
            which the templates and synonyms expand, or a description of its own ("a face
            with the lip corners pulled up", prompted as it is).
        metadata: AffectVLM's per-sample prompts, written from each sample's metadata.
        generator: one prompt drawn per class on every call (training with
            `--train_prompts=sample`); None = every prompt, the ensemble.
    """

    def __init__(self, tokenizer, prompts: Sequence[str], context_length: int,
                 metadata: bool = False, generator: torch.Generator | None = None):
        self.tokenizer, self.prompts, self.context_length = tokenizer, list(prompts), context_length
        self.metadata, self.generator = metadata, generator
        self._fixed = None
        if not metadata and generator is None:  # the same on every call: tokenise it once
            self._fixed = self.tokens()

    @property
    def fixed(self) -> bool:
        """True when every call returns the same (K, P, L) tokens (no metadata, no draws)."""
        return self._fixed is not None

    def tokens(self, meta: Sequence[Mapping] | None = None) -> torch.Tensor:
        """(K, P, L) tokens, or (B, K, P, L) from the B samples' metadata `meta`."""
        if self._fixed is not None:
            return self._fixed
        return prompt_tokens(self.tokenizer, self.prompts, self.context_length,
                             meta if self.metadata else None, self.generator)


def ensemble_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    """Prompt ensemble: mean of the normalised prompt embeddings of each class, renormalised.

    Args:
        embeddings: (..., P, E) float text embeddings, e.g. (K, P, E) or (B, K, P, E).
    Returns:
        (..., E) unit-norm class embeddings.
    """
    return F.normalize(F.normalize(embeddings.float(), dim=-1).mean(dim=-2), dim=-1)
