"""Captions of built-in scans, written from what the generator knows: the text of pretraining.

The pretraining stage of facet's CLIP (`train.py --preset=pretrain`): OpenAI trained CLIP on
images with the sentences people wrote about them; facet's faces come with their ground truth
instead -- the action units (AUs) and their strengths on each side, the emotion and its
intensity, who the person is, which view -- and `caption` turns it into varied sentences:

    "a 3D scan of a young woman smiling broadly, cheeks raised, seen from the left"
    "the face of an older man frowning: brows lowered and drawn together, lips pressed"
    "a slight look of surprise: brows raised, mouth a little open"

Variety is what lets a text tower learn the parts: sentence templates are drawn at random
(`CAPTION_TEMPLATES`, `PARTS_ONLY`; the class prompts' templates are `facet.prompts.TEMPLATES`),
AU phrases come in random order with synonyms and strength words ("slightly", "strongly", "on
the left side"), the detail varies (all, some or none of the AUs), and a quarter of the
captions leave the emotion word out, so the model must read the face from its parts. Emotion
words are the class words of `facet.prompts` (one place for how facet names a class), so
zero-shot prompts speak the captions' language. AUs are named in words, never numbers.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from facet.prompts import CLASS_WORDS, with_articles

# How to say each action unit in words (FACS numbers; several phrasings, drawn at random). A
# "{}" takes a strength word ("slightly ", "strongly "); phrases without one take none.
AU_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("inner brows {}raised", "the inner ends of the brows {}lifted"),
    2: ("outer brows {}raised", "the outer ends of the brows {}lifted"),
    4: ("brows {}lowered and drawn together", "a furrowed brow", "brows {}knitted"),
    5: ("eyes {}wide open", "upper lids {}raised"),
    6: ("cheeks {}raised", "cheeks {}lifted"),
    7: ("lids {}tightened", "eyes {}narrowed"),
    9: ("nose {}wrinkled", "a wrinkled nose"),
    10: ("upper lip {}raised", "the upper lip {}lifted"),
    11: ("nasolabial folds {}deepened", "deep lines beside the nose"),
    12: ("lip corners {}pulled up", "mouth corners {}raised"),
    14: ("dimples", "lip corners {}tightened into dimples"),
    15: ("lip corners {}pulled down", "mouth corners {}turned down"),
    16: ("lower lip {}pulled down", "the lower lip {}lowered"),
    17: ("chin {}raised", "the chin {}pushed up"),
    18: ("lips {}puckered", "pursed lips"),
    20: ("lips {}stretched sideways", "a stretched mouth"),
    22: ("lips {}funnelled", "funnel-shaped lips"),
    23: ("lips {}tightened", "tight lips"),
    24: ("lips {}pressed together", "pressed lips"),
    25: ("lips {}parted", "lips apart"),
    26: ("jaw {}dropped", "mouth a little open"),
    27: ("mouth {}wide open", "mouth stretched open"),
    28: ("lips {}sucked in", "lips rolled inward"),
    29: ("jaw {}pushed forward", "a thrust jaw"),
    30: ("jaw {}shifted sideways", "the jaw moved to one side"),
    33: ("cheeks {}puffed", "puffed-out cheeks"),
    43: ("eyes {}closed", "closed eyes"),
    45: ("blinking", "eyes blinking"),
    61: ("eyes turned left", "looking to the left"),
    62: ("eyes turned right", "looking to the right"),
    63: ("eyes looking up", "gaze raised"),
    64: ("eyes looking down", "gaze lowered"),
}

# A sentence names at most this many parts, the strongest, as a person describing a face would;
# it also keeps every caption within the text tower's context (tests/test_captions.py).
MAX_PARTS = 4

# How strongly, by BU-3DFE intensity level (1 subtle .. 4 strongest).
INTENSITY_WORDS = {1: ("a slight", "a faint", "a weak"), 2: ("a mild", "a light"),
                   3: ("a clear", "a marked"), 4: ("a strong", "an intense", "a full")}
PERSON_WORDS = {("female", "young"): ("a young woman", "a woman in her twenties"),
                ("female", "middle-aged"): ("a middle-aged woman", "a woman in her forties"),
                ("female", "older"): ("an older woman", "an elderly woman"),
                ("male", "young"): ("a young man", "a man in his twenties"),
                ("male", "middle-aged"): ("a middle-aged man", "a man in his forties"),
                ("male", "older"): ("an older man", "an elderly man")}
ANYONE = ("a person", "someone")
VIEW_WORDS = {-1: "seen from the left", 0: "seen from the front", 1: "seen from the right"}

CAPTION_TEMPLATES = (  # {who} a person, {feeling} an emotion phrase, {parts} AU phrases
    "a 3D scan of {who} {feeling}, {parts}",
    "the face of {who} {feeling}: {parts}",
    "{who} {feeling}; {parts}",
    "a face scan showing {feeling_noun}: {parts}",
    "{feeling_noun} on the face of {who}",
)
PARTS_ONLY = (  # no emotion word: the parts alone
    "a 3D scan of {who} with {parts}",
    "the face of {who}: {parts}",
    "a face with {parts}",
)


def _pick(options, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def describe_aus(aus: Mapping[int, tuple[float, float]], rng: np.random.Generator,
                 detail: float = 1.0) -> list[str]:
    """Phrases for the visible AUs (strength >= 0.15), strongest first, in shuffled order.

    Args:
        aus: {au: (left, right)} strengths in [0, 1].
        rng: draws the phrasing, the order and which AUs are mentioned.
        detail: the share of the visible AUs mentioned (at least one, at most MAX_PARTS).
    Returns:
        e.g. ["cheeks strongly raised", "lip corners pulled up on the left side"].
    """
    visible = sorted(((max(s), au, s) for au, s in aus.items()
                      if au in AU_PHRASES and max(s) >= 0.15), reverse=True)
    keep = visible[:min(MAX_PARTS, max(1, round(detail * len(visible))))] if visible else []
    phrases = []
    for strength, au, (left, right) in keep:
        adverb = "slightly " if strength < 0.35 else \
            "strongly " if strength > 0.85 and rng.random() < 0.5 else ""
        phrase = _pick(AU_PHRASES[au], rng).format(adverb)
        if abs(left - right) > 0.5 * strength:  # clearly one-sided
            phrase += " on the left side" if left > right else " on the right side"
        phrases.append(phrase)
    order = rng.permutation(len(phrases))
    return [phrases[i] for i in order]


def caption(aus: Mapping[int, tuple[float, float]], rng: np.random.Generator,
            emotion: str | None = None, intensity: int | None = None,
            person: Mapping[str, str] | None = None, view: float | None = None) -> str:
    """One sentence about a scan (module docstring).

    Args:
        aus: {au: (left, right)} strengths in [0, 1] (the generator's ground truth).
        rng: draws every choice; the same state gives the same sentence.
        emotion: a class of `facet.prompts.CLASS_WORDS` (e.g. "happiness"), or None (a random
            AU combination, or "neutral" for a face at rest).
        intensity: BU-3DFE level 1-4 of the emotion, or None.
        person: {"sex": "female"/"male", "age_group": "young"/"middle-aged"/"older"}, or None.
        view: the yaw of the view in degrees (< 0 left, 0 front, > 0 right), or None.
    Returns:
        A lower-case sentence without a final period.
    """
    person = person or {}
    who = _pick(PERSON_WORDS.get((person.get("sex", ""), person.get("age_group", "")), ANYONE)
                if rng.random() < 0.8 else ANYONE, rng)
    parts = describe_aus(aus, rng, detail=_pick((1.0, 0.7, 0.4), rng))
    emotional = emotion is not None and emotion != "neutral" and emotion in CLASS_WORDS
    if emotion == "neutral" or not parts:
        words = CLASS_WORDS["neutral"]
        text = _pick((f"{who} with {_pick(words.nouns, rng)}",
                      f"a 3D scan of {who} at rest, {_pick(words.adjectives, rng)}",
                      f"the {_pick(words.adjectives, rng)} face of {who}"), rng)
    elif emotional and rng.random() < 0.75:
        words = CLASS_WORDS[emotion]
        adjective, noun = _pick(words.adjectives, rng), _pick(words.nouns, rng)
        strength = _pick(INTENSITY_WORDS[intensity], rng) + " " if intensity else "a "
        text = _pick(CAPTION_TEMPLATES, rng).format(
            who=who, feeling=f"looking {adjective}" if rng.random() < 0.5 else
            f"with {strength}{adjective} expression", feeling_noun=f"{strength}look of {noun}"
            if rng.random() < 0.5 else noun, parts=", ".join(parts))
    else:
        text = _pick(PARTS_ONLY, rng).format(who=who, parts=", ".join(parts))
    if view is not None and rng.random() < 0.5:
        text += ", " + VIEW_WORDS[int(np.sign(round(view)))]
    return with_articles(text)
