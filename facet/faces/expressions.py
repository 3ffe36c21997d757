"""Facial expressions in FACS terms: action units -> ICT blendshapes, emotion prototypes, timing.

An expression is a set of FACS action units (AUs) with a strength per side of the face,
`AUs = {au: (left, right)}`, strengths in [0, 1] (FACS intensity A..E ~ 0.2..1.0; left = the
subject's left). `ACTION_UNITS` maps each AU to the ICT-FaceKit blendshapes that show it (ICT's
own FACS table, AU by AU, plus four AUs it leaves out, marked "ours"), so any AU combination
becomes a face (`blend_weights`). On top of that:

- `PROTOTYPES`: the six emotions as EMFACS-style prototypes (Ekman & Friesen's EMFACS as listed
  in the FACS Investigator's Guide, 2002): each has variants (people smile with or without
  parted lips, show anger with pressed or bared lips) and optional AUs;
- `expression_aus` samples what one person shows in one scan: a per-person `Style` (which
  variant they prefer, which optional AUs they habitually add, how strongly each AU moves, which
  side is stronger), and per scan the strength of every AU, left/right asymmetry and a few weak
  idle AUs, at BU-3DFE's intensity levels 1-4. Classes overlap as they do in people;
- `MICRO_EXPRESSIONS` and `BP4D_TASK_AUS`: what the 4DME-like and BP4D-like writers show;
- `envelope`: the time course neutral -> onset -> apex -> offset of a dynamic expression.

Shapes: B blendshapes, T frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from facet.data.layouts import EMOTIONS, FOURDME_CLASSES, NEUTRAL
from facet.faces.face_model import FaceModel, load_face_model

AUs = dict[int, tuple[float, float]]  # action unit -> (left, right) strength in [0, 1]


class ActionUnit(NamedTuple):
    name: str  # the FACS name, for captions
    blendshapes: tuple[tuple[str, str, float], ...]  # (left-side shape, right-side shape, weight)


# ICT-FaceKit's FACS -> blendshape table (its README), AU by AU. A blendshape without a side
# (jawOpen, mouthPucker, ...) is listed for both sides and driven by the mean of the two.
# "ours": AUs ICT's table leaves out, approximated with its blendshapes.
ACTION_UNITS: dict[int, ActionUnit] = {
    1: ActionUnit("inner brow raiser", (("browInnerUp_L", "browInnerUp_R", 1.0),)),
    2: ActionUnit("outer brow raiser", (("browOuterUp_L", "browOuterUp_R", 1.0),)),
    4: ActionUnit("brow lowerer", (("browDown_L", "browDown_R", 1.0),)),
    5: ActionUnit("upper lid raiser", (("eyeWide_L", "eyeWide_R", 1.0),)),
    6: ActionUnit("cheek raiser", (("cheekSquint_L", "cheekSquint_R", 1.0),)),
    7: ActionUnit("lid tightener", (("eyeSquint_L", "eyeSquint_R", 1.0),)),
    9: ActionUnit("nose wrinkler", (("noseSneer_L", "noseSneer_R", 1.0),)),
    10: ActionUnit("upper lip raiser", (("mouthShrugUpper", "mouthShrugUpper", 1.0),)),
    11: ActionUnit("nasolabial deepener", (("mouthUpperUp_L", "mouthUpperUp_R", 1.0),)),
    12: ActionUnit("lip corner puller", (("mouthSmile_L", "mouthSmile_R", 1.0),)),
    14: ActionUnit("dimpler", (("mouthDimple_L", "mouthDimple_R", 1.0),)),
    15: ActionUnit("lip corner depressor", (("mouthFrown_L", "mouthFrown_R", 1.0),)),
    16: ActionUnit("lower lip depressor", (("mouthLowerDown_L", "mouthLowerDown_R", 1.0),)),
    17: ActionUnit("chin raiser", (("mouthShrugLower", "mouthShrugLower", 1.0),)),
    18: ActionUnit("lip pucker", (("mouthPucker", "mouthPucker", 1.0),)),
    20: ActionUnit("lip stretcher", (("mouthStretch_L", "mouthStretch_R", 1.0),)),
    22: ActionUnit("lip funneler", (("mouthFunnel", "mouthFunnel", 1.0),)),
    23: ActionUnit("lip tightener", (("mouthPress_L", "mouthPress_R", 0.6),  # ours: narrower,
                                     ("mouthPucker", "mouthPucker", 0.25))),  # tighter lips
    24: ActionUnit("lip pressor", (("mouthPress_L", "mouthPress_R", 1.0),)),
    25: ActionUnit("lips part", (("mouthLowerDown_L", "mouthLowerDown_R", 0.5),  # ours
                                 ("jawOpen", "jawOpen", 0.08))),
    26: ActionUnit("jaw drop", (("jawOpen", "jawOpen", 0.5),)),  # ours: half of AU27
    27: ActionUnit("mouth stretch", (("jawOpen", "jawOpen", 1.0),)),
    28: ActionUnit("lip suck", (("mouthRollLower", "mouthRollLower", 1.0),
                                ("mouthRollUpper", "mouthRollUpper", 1.0))),
    29: ActionUnit("jaw thrust", (("jawForward", "jawForward", 1.0),)),
    30: ActionUnit("jaw sideways", (("jawLeft", "jawRight", 1.0),)),  # the side it moves to
    33: ActionUnit("cheek blow", (("cheekPuff_L", "cheekPuff_R", 1.0),)),
    43: ActionUnit("eyes closed", (("eyeBlink_L", "eyeBlink_R", 1.0),)),  # ours: a held AU45
    45: ActionUnit("blink", (("eyeBlink_L", "eyeBlink_R", 1.0),)),
    61: ActionUnit("eyes turn left", (("eyeLookOut_L", "eyeLookIn_R", 1.0),)),
    62: ActionUnit("eyes turn right", (("eyeLookIn_L", "eyeLookOut_R", 1.0),)),
    63: ActionUnit("eyes up", (("eyeLookUp_L", "eyeLookUp_R", 1.0),)),
    64: ActionUnit("eyes down", (("eyeLookDown_L", "eyeLookDown_R", 1.0),)),
}
AU_NAMES = {au: unit.name for au, unit in ACTION_UNITS.items()}


def blend_weights(aus: AUs, model: FaceModel | None = None) -> np.ndarray:
    """Blendshape weights (B,) float32 in [0, 1] that show these action units.

    Raises:
        ValueError: an AU not in `ACTION_UNITS`.
    """
    model = model or load_face_model()
    weights = np.zeros(len(model.expr_names), dtype=np.float32)
    for au, (left, right) in aus.items():
        if au not in ACTION_UNITS:
            raise ValueError(f"unknown action unit {au}; known: {sorted(ACTION_UNITS)}")
        for left_shape, right_shape, weight in ACTION_UNITS[au].blendshapes:
            if left_shape == right_shape:
                weights[model.blendshape(left_shape)] += weight * (left + right) / 2
            else:
                weights[model.blendshape(left_shape)] += weight * left
                weights[model.blendshape(right_shape)] += weight * right
    return np.clip(weights, 0.0, 1.0)


class Prototype(NamedTuple):
    variants: tuple[dict[int, float], ...]  # core AUs -> strength at apex; a person prefers one
    optional: dict[int, tuple[float, float]]  # AU -> (strength, how often people add it)


PROTOTYPES: dict[str, Prototype] = {
    "happiness": Prototype(({6: 1.0, 12: 1.0}, {6: 0.9, 12: 1.0, 25: 0.8},
                            {6: 0.8, 12: 1.0, 25: 0.7, 26: 0.5}),
                           {7: (0.4, 0.3), 16: (0.3, 0.2)}),
    "sadness": Prototype(({1: 1.0, 4: 0.7, 15: 1.0}, {1: 0.9, 4: 0.6, 15: 0.9, 17: 0.8},
                          {1: 1.0, 4: 0.5, 15: 1.0, 11: 0.6}),
                         {17: (0.5, 0.3), 43: (0.3, 0.2), 64: (0.4, 0.2)}),
    "surprise": Prototype(({1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0}, {1: 1.0, 2: 1.0, 5: 0.9, 27: 0.8},
                           {1: 1.0, 2: 1.0, 5: 1.0, 25: 0.8, 26: 0.8}),
                          {25: (0.5, 0.4)}),
    "fear": Prototype(({1: 1.0, 2: 0.7, 4: 0.5, 5: 1.0, 20: 1.0, 25: 0.7},
                       {1: 1.0, 2: 0.7, 4: 0.4, 5: 1.0, 20: 1.0, 26: 0.6},
                       {1: 0.9, 4: 0.6, 5: 1.0, 20: 1.0, 25: 0.6}),
                      {7: (0.3, 0.2), 16: (0.4, 0.2)}),
    "anger": Prototype(({4: 1.0, 5: 0.4, 7: 1.0, 23: 1.0}, {4: 1.0, 7: 1.0, 24: 1.0, 17: 0.7},
                        {4: 1.0, 5: 0.5, 7: 0.8, 10: 0.6, 25: 0.6}),
                       {17: (0.5, 0.3), 9: (0.3, 0.15)}),
    "disgust": Prototype(({9: 1.0, 15: 0.6, 16: 0.6}, {9: 0.8, 10: 1.0, 17: 0.7},
                          {9: 1.0, 10: 0.8, 25: 0.6}),
                         {4: (0.4, 0.3), 7: (0.4, 0.3), 17: (0.5, 0.3), 11: (0.4, 0.2)}),
}
INTENSITY = {1: 0.3, 2: 0.55, 3: 0.8, 4: 1.0}  # BU-3DFE level -> apex strength factor
IDLE_AUS = (2, 7, 14, 17, 24, 43, 61, 62, 63, 64)  # what a still face still does, weakly


@dataclass(frozen=True)
class Style:
    """How one person expresses emotions (fixed across their scans)."""

    gain: dict[int, float]  # AU -> how strongly this person moves it (about 0.6..1.6)
    expressiveness: float  # overall factor on every AU
    asymmetry: float  # > 0: the left side moves more, < 0: the right side
    variant: dict[str, int]  # emotion -> index of the preferred prototype variant
    habit: dict[str, dict[int, float]]  # emotion -> optional AU -> how often this person adds it


NEUTRAL_STYLE = Style(gain={}, expressiveness=1.0, asymmetry=0.0,
                      variant={e: 0 for e in PROTOTYPES}, habit={})


def sample_style(rng: np.random.Generator) -> Style:
    """Draw a person's expression style: log-normal AU gains (sd 0.2) and expressiveness
    (sd 0.12), a side bias (sd 0.1), a preferred variant and habits per emotion."""
    gain = {au: float(np.exp(0.2 * rng.standard_normal())) for au in ACTION_UNITS}
    variant = {e: int(rng.integers(len(p.variants))) for e, p in PROTOTYPES.items()}
    habit = {e: {au: float(np.clip(often + 0.25 * rng.standard_normal(), 0.0, 1.0))
                 for au, (_, often) in p.optional.items()} for e, p in PROTOTYPES.items()}
    return Style(gain=gain, expressiveness=float(np.exp(0.12 * rng.standard_normal())),
                 asymmetry=float(np.clip(0.1 * rng.standard_normal(), -0.25, 0.25)),
                 variant=variant, habit=habit)


def symmetric(aus: dict[int, float]) -> AUs:
    """{au: strength} -> {au: (strength, strength)}."""
    return {au: (float(s), float(s)) for au, s in aus.items()}


def _sides(strength: float, asymmetry: float) -> tuple[float, float]:
    """(left, right) strengths, clipped to [0, 1], `asymmetry` > 0 favouring the left."""
    return (float(np.clip(strength * (1 + asymmetry), 0, 1)),
            float(np.clip(strength * (1 - asymmetry), 0, 1)))


def expression_aus(emotion: str, intensity: int, rng: np.random.Generator | None = None,
                   style: Style = NEUTRAL_STYLE) -> AUs:
    """The action units one person shows in one scan of an emotion.

    Without an rng: the exact prototype (first variant, core AUs, symmetric) at the level's
    strength. With an rng, per scan: the person's preferred variant (another one 20 % of the
    time), their habitual optional AUs, each AU's strength times their gain and a log-normal
    factor (sd 0.15), the whole expression times a log-normal factor (sd 0.12), left/right
    asymmetry around their side bias (sd 0.1), and 0-2 idle AUs below 0.2 -- also on neutral
    faces, which are never perfectly still.

    Args:
        emotion: one of `EMOTIONS` or "neutral".
        intensity: BU-3DFE level 1 (subtle) .. 4 (strongest); 0 for neutral.
        rng: per-scan variation; None gives the exact prototype.
        style: the person's `Style` (default: the average person).
    Returns:
        AUs {au: (left, right)}.
    Raises:
        ValueError: unknown emotion, or an intensity that does not fit it.
    """
    if emotion != NEUTRAL and emotion not in PROTOTYPES:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS} or 'neutral'")
    if (emotion == NEUTRAL) != (intensity == 0) or intensity not in (0, *INTENSITY):
        raise ValueError(f"intensity {intensity!r} does not fit {emotion!r} "
                         f"(neutral: 0, emotions: {sorted(INTENSITY)})")
    if emotion == NEUTRAL:
        core, optional = {}, {}
    else:
        prototype = PROTOTYPES[emotion]
        variant = 0 if rng is None else style.variant[emotion]
        if rng is not None and rng.random() < 0.2:
            variant = int(rng.integers(len(prototype.variants)))
        core = prototype.variants[variant]
        optional = {} if rng is None else {
            au: s for au, (s, often) in prototype.optional.items()
            if rng.random() < style.habit.get(emotion, {}).get(au, often)}
    if rng is None:
        return symmetric({au: s * INTENSITY.get(intensity, 0.0) for au, s in core.items()})
    level = (INTENSITY.get(intensity, 0.0) * style.expressiveness
             * float(np.exp(0.12 * rng.standard_normal())))
    aus: AUs = {}
    for au, strength in {**optional, **core}.items():  # the core wins where both name an AU
        s = strength * level * style.gain.get(au, 1.0) * float(np.exp(0.15 * rng.standard_normal()))
        aus[au] = _sides(s, style.asymmetry + 0.1 * float(rng.standard_normal()))
    for au in rng.choice(IDLE_AUS, size=int(rng.integers(0, 3)), replace=False):
        if int(au) not in aus:
            aus[int(au)] = _sides(float(rng.uniform(0.0, 0.2)), 0.2 * float(rng.standard_normal()))
    return aus


# --- 4D: micro-expressions, spontaneous tasks, time courses -----------------------------------

# 4DME-like classes (facet.data.layouts.FOURDME_CLASSES): AU combinations typical of each; one is
# drawn per clip. Ours, after the AU statistics micro-expression databases report (CASME II,
# SAMM, 4DME): AU4 and AU12 are the most frequent, repression is AU14/17/23/24.
MICRO_EXPRESSIONS: dict[str, tuple[dict[int, float], ...]] = {
    "positive": ({12: 1.0}, {6: 0.6, 12: 1.0}, {12: 0.8, 25: 0.4}),
    "negative": ({4: 1.0}, {4: 0.8, 7: 0.7}, {9: 0.8, 10: 0.5}, {1: 0.7, 4: 0.8, 15: 0.7},
                 {10: 0.8, 17: 0.5}),
    "surprise": ({1: 1.0, 2: 1.0}, {1: 0.8, 2: 0.8, 5: 0.8}, {1: 0.7, 2: 0.7, 25: 0.5}),
    "repression": ({17: 1.0, 24: 0.8}, {14: 0.8, 24: 0.6}, {23: 0.8, 17: 0.5}, {14: 1.0}),
    "others": ({7: 1.0}, {15: 0.7}, {4: 0.5, 7: 0.4}, {1: 0.6}, {2: 0.7}, {43: 0.6}),
}

# BP4D-Spontaneous-like tasks (facet.data.layouts.BP4D_TASKS): the AUs each task's elicited emotion
# shows, at spontaneous (weaker) strengths; ours, after the AUs the BP4D paper reports per task.
BP4D_TASK_AUS: dict[str, dict[int, float]] = {
    "T1": {6: 0.6, 12: 0.8, 25: 0.5},  # joke: amusement
    "T2": {1: 0.5, 4: 0.5, 15: 0.5, 17: 0.4},  # documentary: sadness
    "T3": {1: 0.7, 2: 0.7, 5: 0.6, 26: 0.5},  # sudden sound: surprise / startle
    "T4": {12: 0.5, 14: 0.4, 64: 0.6},  # silly song: embarrassed smile, eyes down
    "T5": {1: 0.5, 2: 0.3, 4: 0.5, 20: 0.5, 7: 0.3},  # threat: fear / nervousness
    "T6": {4: 0.6, 6: 0.5, 7: 0.6, 9: 0.3, 10: 0.4, 43: 0.4},  # ice water: pain
    "T7": {4: 0.7, 7: 0.5, 23: 0.5, 24: 0.4, 17: 0.3},  # rude experimenter: anger
    "T8": {9: 0.6, 10: 0.5, 17: 0.3, 4: 0.3},  # odour: disgust
}
TALKING_TASKS = ("T1", "T2", "T4", "T7")  # the subject talks during these


def micro_aus(label: str, micro: bool, rng: np.random.Generator) -> AUs:
    """AUs of one 4DME-like clip: a combination typical of `label`, weak for a micro-expression
    (strength 0.15-0.35, one-sided 60 % of the time), stronger for a macro one (0.5-0.9, 20 %).

    Raises:
        ValueError: unknown class.
    """
    if label not in MICRO_EXPRESSIONS:
        raise ValueError(f"unknown 4DME class {label!r}; expected one of {FOURDME_CLASSES}")
    options = MICRO_EXPRESSIONS[label]
    combination = options[int(rng.integers(len(options)))]
    level = rng.uniform(0.15, 0.35) if micro else rng.uniform(0.5, 0.9)
    one_sided = rng.random() < (0.6 if micro else 0.2)
    keep = rng.uniform(0.0, 0.3)  # what the quiet side still moves when one-sided
    left_only = rng.random() < 0.5
    aus = {}
    for au, strength in combination.items():
        s = float(np.clip(strength * level * np.exp(0.15 * rng.standard_normal()), 0, 1))
        sides = (s, s * keep) if left_only else (s * keep, s)
        aus[au] = sides if one_sided else (s, s)
    return aus


def spontaneous_aus(task: str, rng: np.random.Generator) -> AUs:
    """AUs at the peak of a BP4D-like task: its table entry at 0.5-1.0 of the listed strength,
    mixed with up to two weak AUs of another task (spontaneous feelings are rarely pure).

    Raises:
        ValueError: unknown task.
    """
    if task not in BP4D_TASK_AUS:
        raise ValueError(f"unknown BP4D task {task!r}; expected one of {sorted(BP4D_TASK_AUS)}")
    aus = {au: s * rng.uniform(0.5, 1.0) for au, s in BP4D_TASK_AUS[task].items()}
    other = BP4D_TASK_AUS[sorted(BP4D_TASK_AUS)[int(rng.integers(len(BP4D_TASK_AUS)))]]
    for au in rng.choice(sorted(other), size=min(2, len(other)), replace=False):
        aus.setdefault(int(au), other[int(au)] * rng.uniform(0.1, 0.3))
    return {au: _sides(s, 0.15 * float(rng.standard_normal())) for au, s in aus.items()}


def envelope(num_frames: int, rng: np.random.Generator, rise: tuple[float, float] = (0.1, 0.35),
             hold: tuple[float, float] = (0.1, 0.3)) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Activation (T,) in [0, 1] of one expression: neutral -> onset -> apex -> offset -> neutral.

    Smoothstep ramps; the onset starts 5-20 % into the clip, the rise and the apex hold last
    fractions of the clip drawn from `rise` and `hold`, the fall as long as the rise (+-30 %),
    and the peak is 0.85-1.0 (apexes differ from take to take).

    Returns:
        (curve (T,) float64, (onset, apex, offset) frame indices: the first frame that moves,
        the frame where the apex is reached, the first frame back at neutral (or the last)).
    """
    t = np.arange(num_frames) / max(num_frames - 1, 1)
    on = rng.uniform(0.05, 0.2)
    up = rng.uniform(*rise)
    top = on + up
    down = min(top + rng.uniform(*hold), 0.9)
    end = min(down + up * rng.uniform(0.7, 1.3), 1.0)
    ramp = lambda a, b: np.clip((t - a) / max(b - a, 1e-6), 0, 1)
    curve = ramp(on, top) - ramp(down, end)
    curve = rng.uniform(0.85, 1.0) * curve * curve * (3 - 2 * curve)  # smoothstep: no kinks
    last = num_frames - 1
    frames = (int(np.ceil(on * last)), int(round(top * last)), min(int(np.ceil(end * last)), last))
    return curve, frames


def scale_aus(aus: AUs, factor: float) -> AUs:
    """Every strength times `factor` (a frame of a dynamic expression); zeros are dropped."""
    return {au: (l * factor, r * factor) for au, (l, r) in aus.items() if factor > 0}


def blink_track(num_frames: int, rng: np.random.Generator, per_second: float = 0.3,
                fps: int = 25) -> np.ndarray:
    """(T,) AU45 strength of spontaneous blinks: Poisson blinks, each closing and opening the
    lids over ~0.25 s (people blink about 15-20 times a minute)."""
    track = np.zeros(num_frames)
    t = np.arange(num_frames)
    for start in rng.uniform(0, num_frames, rng.poisson(per_second * num_frames / fps)):
        track = np.maximum(track, np.clip(1 - np.abs(t - start) / (0.12 * fps), 0, 1))
    return track


def talking_track(num_frames: int, rng: np.random.Generator, fps: int = 25) -> np.ndarray:
    """(T,) jaw opening of speech (drives AU25/26): syllables at 3-5 per second, each opening
    0.2-0.6, in phrases separated by pauses."""
    t = np.arange(num_frames) / fps
    syllables = np.abs(np.sin(np.pi * rng.uniform(3, 5) * t + rng.uniform(0, np.pi)))
    phrases = (np.sin(2 * np.pi * rng.uniform(0.3, 0.6) * t + rng.uniform(0, 2 * np.pi)) > -0.3)
    return syllables * phrases * rng.uniform(0.2, 0.6)


def with_au(aus: AUs, au: int, strength: float) -> AUs:
    """A copy of `aus` in which `au` moves at least `strength` on both sides (blinks, speech)."""
    left, right = aus.get(au, (0.0, 0.0))
    out = dict(aus)
    if strength > 0:
        out[au] = (max(left, float(strength)), max(right, float(strength)))
    return out
