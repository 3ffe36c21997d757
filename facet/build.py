"""Everything a run builds from its `TrainConfig`: data, view cache, tokenizer, model, objective.

The assembly stage between the configuration and the loops, shared by train.py (which trains)
and evaluate.py (which rebuilds the same pipeline from the config stored in a checkpoint), so
both see the same classes, views and model. Data path:

    dataset root -> `index_dataset` -> protocol filter (e.g. BU-3DFE: 60 subjects, intensities
    3-4) -> subject-independent folds -> `ViewCache.fill` (render once, uint8 on disk)
    -> `FaceViewsDataset` items (T, V, 3, H, W)

Every check that can fail (empty dataset, a class missing from a split, unrenderable scans, a
vocabulary that does not fit the weights) runs here, before any training step.
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facet import prompts as prompt_lib
from facet.camera import parse_views
from facet.checkpoint import load_openai, openai_merges
from facet.clip import CLIP
from facet.clip import PRESETS as CLIP_PRESETS
from facet.config import TrainConfig
from facet.layouts import EMOTIONS, Index, Sample, index_dataset
from facet.loop import Objective
from facet.losses import LossConfig
from facet.model import FacetConfig, FacetVLM, ZeroShotCLIP
from facet.datasets import (PROTOCOLS, CaptionedViews, FaceViewsDataset, filter_samples,
                            leave_one_subject_out, subject_kfold, view_statistics)
from facet.meshio import atomic_file, write_atomic
from facet.render import RenderSettings, render_views
from facet.runtime import DistInfo, barrier
from facet.tokenizer import Tokenizer, train_bpe
from facet.view_cache import ViewCache, init_render_worker


# facet's own CLIP, pretrained on captioned built-in faces (train.py --preset=pretrain)
FACET_CLIP = Path(__file__).resolve().parent / "assets" / "facet_clip_tiny.pt"


def pretrained_path(config: TrainConfig) -> Path:
    """The file of `--pretrained`: "facet-clip" names facet's own pretrained CLIP.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    path = FACET_CLIP if config.pretrained == "facet-clip" else Path(config.pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained={config.pretrained}: no such file {path}"
                                + (" (make it with python train.py --preset=pretrain)"
                                   if config.pretrained == "facet-clip" else ""))
    return path


def dataset_root(config: TrainConfig, dist: DistInfo = DistInfo()) -> Path:
    """The dataset root: `config.data`, or the built-in synthetic set (generated once, by rank
    0, in the folder `python -m facet.synth --kind KIND --subjects N` writes by default).

    Raises:
        FileNotFoundError: `config.data` is given but is not a folder.
    """
    if config.data:
        root = Path(config.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data={config.data}: no such folder")
        return root
    from facet import synth  # only runs without --data need the generator

    root = synth.default_root(config.synth_kind, config.synth_subjects)
    if dist.is_main and not root.is_dir():  # a one-off that takes a while: say what and where
        print(f"generating the built-in {config.synth_kind} set ({config.synth_subjects} "
              f"subjects) into {root}, once: later runs reuse it (the 60-subject BU-3DFE-like "
              "set: 1.2 GB, under 2 minutes on 2 cores)", file=sys.stderr)
    if dist.is_main:
        synth.ensure_dataset(config.synth_kind, root, subjects=config.synth_subjects, seed=0,
                             progress=True)
    barrier()  # the other ranks wait until rank 0 has published the set
    return root


def select_samples(root: Path, config: TrainConfig) -> tuple[list[Sample], Index]:
    """Index the root and keep the samples of the protocol (with the config's overrides).

    Returns:
        (samples, the index: its kind, and the files it skipped with the reason).
    Raises:
        ValueError: no usable sample (naming the root and what was filtered).
    """
    index = index_dataset(root, config.dataset)
    protocol = PROTOCOLS[index.kind]
    intensities = config.intensities if config.intensities is not None else protocol.intensities
    subjects = config.subjects if config.subjects is not None else protocol.subjects
    if subjects is not None and subjects > len({s.subject for s in index.samples}):
        subjects = None  # a smaller set (synthetic, partial download) keeps all its subjects
    samples = index.samples
    if index.kind == "4dme" and config.micro_only:  # MER protocols score micro clips only
        samples = [s for s in samples if s.clip_kind in ("micro", "")]  # "": not annotated
    samples = filter_samples(samples, protocol.expressions, intensities, subjects)
    if not samples:
        raise ValueError(f"{root}: no usable sample ({index.summary()}; kept expressions "
                         f"{protocol.expressions}, intensities {intensities})")
    return samples, index


def make_splits(samples: list[Sample], config: TrainConfig
                ) -> list[tuple[list[Sample], list[Sample]]]:
    """All (train, test) folds of the configured protocol: subject k-fold or leave-one-out."""
    if config.split == "loso":
        return leave_one_subject_out(samples)
    return subject_kfold(samples, config.folds, seed=config.seed)


def check_split(train: list[Sample], test: list[Sample], classes: tuple[str, ...],
                where: str) -> None:
    """Both sides non-empty and every class present in training (else the model cannot learn it).

    Raises:
        ValueError: naming the fold and the missing classes.
    """
    if not train or not test:
        raise ValueError(f"{where}: empty {'training' if not train else 'test'} split")
    missing = [c for c in classes if c not in {s.label for s in train}]
    if missing:
        raise ValueError(f"{where}: classes {missing} have no training sample; use more "
                         "subjects or fewer folds")


def render_settings(config: TrainConfig) -> RenderSettings:
    """The views, image size and render mode of the run (the view cache's key)."""
    return RenderSettings(views=parse_views(config.views), image_size=config.image_size,
                          mode=config.mode)


def fill_cache(samples: list[Sample], config: TrainConfig, dist: DistInfo = DistInfo(),
               ) -> tuple[ViewCache, list[Sample], list[tuple[str, str]]]:
    """Render every sample's views once (rank 0; the others wait), drop the ones that failed.

    Returns:
        (cache, samples with a valid entry, failures as (file, reason)).
    """
    cache = ViewCache(config.cache or None, render_settings(config))
    failed: list[tuple[str, str]] = []
    if dist.is_main:
        failed = cache.fill(samples, workers=config.render_workers, progress=True).failed
    barrier()
    bad = {path for path, _ in failed}
    return cache, [s for s in samples if s.path not in bad], failed


def make_dataset(samples: list[Sample], cache: ViewCache, config: TrainConfig,
                 classes: tuple[str, ...], train: bool) -> FaceViewsDataset:
    """The torch Dataset of one split (random frame choice only for training)."""
    return FaceViewsDataset(samples, cache, frames=config.frames, sampling=config.frame_sampling,
                            train=train, seed=config.seed, classes=classes)


def build_tokenizer(config: TrainConfig, merges: list | None = None) -> Tokenizer:
    """The run's BPE tokenizer: from a checkpoint's merges, the pretrained weights' vocabulary
    (`--vocab`), or learned on the prompts when training from scratch.

    From scratch we learn merges on every prompt of every known class (plain and with metadata),
    sized to the CLIP preset's vocabulary; unseen words still encode, byte by byte.

    Raises:
        ValueError: --pretrained corrupted or unreadable, or without --vocab when it carries no
            merges (naming where OpenAI's vocabulary comes from); --vocab not a CLIP vocabulary.
    """
    if merges is not None:
        return Tokenizer.from_merges(merges)
    if config.pretrained:
        stored = openai_merges(pretrained_path(config))  # checks the file's records too: now
        if config.vocab:
            return Tokenizer.from_clip_vocab(config.vocab)
        if stored is None:
            raise ValueError(f"--pretrained={config.pretrained} carries no BPE vocabulary: pass "
                             "--vocab, the one its text tower was trained with (OpenAI's "
                             "bpe_simple_vocab_16e6.txt.gz comes with OpenAI's CLIP code: "
                             "github.com/openai/CLIP, folder clip/)")
        return Tokenizer.from_merges(stored)
    return train_bpe(_class_prompts(), CLIP_PRESETS[config.model].vocab_size)


def _class_prompts() -> list[str]:
    """Every prompt of every known class, plain and with metadata: a BPE's corpus."""
    names = list(prompt_lib.CLASS_WORDS)
    metadata = {"sex": "female", "age_group": "young", "ethnicity": "WH"}
    return [p for grid in (prompt_lib.build_prompts(names),
                           prompt_lib.build_prompts(names, metadata)) for row in grid for p in row]


def caption_tokenizer(config: TrainConfig, captions: CaptionedViews) -> Tokenizer:
    """A BPE learned on what the pretrained text tower will read: two captions of every scan
    (drawn as the first epochs draw them) and every class prompt, plain and with metadata."""
    corpus = _class_prompts()
    for epoch in (0, 1):
        captions.set_epoch(epoch)
        corpus += [captions.caption(i) for i in range(len(captions))]
    captions.set_epoch(0)
    return train_bpe(corpus, CLIP_PRESETS[config.model].vocab_size)


def build_clip(config: TrainConfig, tokenizer: Tokenizer) -> CLIP:
    """A fresh CLIP of the config's preset, its vocabulary the tokenizer's."""
    return CLIP(replace(CLIP_PRESETS[config.model], image_size=config.image_size,
                        vocab_size=tokenizer.vocab_size))


def zero_shot_objective(config: TrainConfig, clip: CLIP, tokenizer: Tokenizer,
                        classes: tuple[str, ...], generator: torch.Generator,
                        class_prompts: list[str] | None = None) -> Objective:
    """CLIP alone as a classifier of `classes` by the prompt ensemble (`ZeroShotCLIP`), wrapped
    like a FACET-VLM objective so that the same evaluation runs on it."""
    return Objective(ZeroShotCLIP(clip), tokenizer, classes, LossConfig(), generator,
                     augment=False, mode=config.mode, class_prompts=class_prompts)


def build_model(config: TrainConfig, tokenizer: Tokenizer, num_classes: int,
                train_set: FaceViewsDataset | None = None, clip: CLIP | None = None) -> FacetVLM:
    """FacetVLM for the config: on `clip` when given (a checkpoint's own towers), else on the
    pretrained CLIP when `config.pretrained` is set, else on fresh towers; with the training
    set's pixel statistics (from scratch, `center_inputs`) when `train_set` is given.

    Raises:
        ValueError: pretrained weights whose width or vocabulary do not fit (naming the file).
    """
    if clip is None and config.pretrained:
        path = pretrained_path(config)
        clip = load_openai(path)
        if clip.config.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"{path}: a vocabulary of {clip.config.vocab_size} ids but the "
                             f"tokenizer has {tokenizer.vocab_size}: use the weights' own "
                             "BPE vocabulary")
    facet_config = FacetConfig(
        clip=config.model, image_size=config.image_size, vocab_size=tokenizer.vocab_size,
        fusion_depth=config.fusion_depth, temporal_depth=config.temporal_depth,
        fusion_heads=config.fusion_heads, cvsa=config.cvsa, mtgf=config.mtgf,
        text_head=config.text_head, num_classes=num_classes, tau=config.tau,
        max_views=max(9, len(parse_views(config.views))), max_frames=config.frames,
        center_images=config.center_images, freeze_image=config.freeze_image,
        freeze_text=config.freeze_text)
    model = FacetVLM(facet_config, clip)
    if train_set is not None and config.center_inputs and not config.pretrained:
        # every rank averages the whole training split, so all ranks hold the same statistics
        model.set_input_statistics(*view_statistics(train_set))
    return model


def build_objective(config: TrainConfig, model: FacetVLM, tokenizer: Tokenizer,
                    classes: tuple[str, ...], generator: torch.Generator,
                    class_prompts: list[str] | None = None) -> Objective:
    """The training step of the config around `model` (augmentation, prompts, loss weights);
    `class_prompts`: what each class is prompted with, if not its name (zero-shot)."""
    loss = LossConfig(config.label_smoothing, config.lambda_cons, config.lambda_aff,
                      config.consistency)
    return Objective(model, tokenizer if config.text_head else None, classes, loss, generator,
                     augment=config.augment, mix_prob=config.mix_prob, mode=config.mode,
                     prompts=config.train_prompts, metadata_prompts=config.metadata_prompts,
                     class_prompts=class_prompts)


# --- CLIP pretraining data ----------------------------------------------------------------

PRETRAIN_SEED = 1000  # the identity stream of the pretraining set: no built-in dataset uses it
SCANS_PER_PERSON = 4


def random_aus(rng: np.random.Generator) -> dict[int, tuple[float, float]]:
    """1-4 action units at random strengths, sometimes one-sided: faces no emotion prototype
    shows, so pretraining learns the parts, not six pictures."""
    from facet.expressions import ACTION_UNITS

    movable = [au for au in ACTION_UNITS if au < 45]  # not blinks and gaze: too small to see
    chosen = rng.choice(movable, size=int(rng.integers(1, 5)), replace=False)
    aus = {}
    for au in sorted(int(a) for a in chosen):
        strength = float(rng.uniform(0.25, 1.0))
        other = strength * (float(rng.uniform(0.2, 1.0)) if rng.random() < 0.2 else 1.0)
        aus[au] = (strength, other) if rng.random() < 0.5 else (other, strength)
    return aus


def _pretraining_scan(i: int, settings: RenderSettings) -> tuple[np.ndarray, dict]:
    """Scan i of the pretraining set, rendered: (V, C, H, W) uint8 views and its ground truth.

    Person i // SCANS_PER_PERSON of the pretraining stream shows, in each of their scans, an
    emotion prototype in their own style (one scan in two, neutral one in seven of those) or a
    random AU combination; every scan has its own crop, pose, noise and triangulation.
    """
    from facet import scanner, synth
    from facet.expressions import expression_aus

    subject, style = synth.person(PRETRAIN_SEED, i // SCANS_PER_PERSON)
    rng = np.random.default_rng([PRETRAIN_SEED, i, 7])
    emotion, intensity = None, None
    if rng.random() < 0.5:
        emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))] if rng.random() > 1 / 7 else "neutral"
        intensity = 0 if emotion == "neutral" else int(rng.integers(1, 5))
        aus = expression_aus(emotion, intensity, rng, style)
    else:
        aus = random_aus(rng)
    item = scanner.scan(subject, aus, rng, texture_size=0)
    views = render_views(item.mesh, settings.views, settings.image_size, settings.mode)
    pixels = (views.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # (V, 3, H, W)
    truth = {"aus": item.truth["aus"], "emotion": emotion, "intensity": intensity,
             "person": {"sex": subject.sex, "age_group": subject.age_group}}
    return pixels, truth


def pretraining_set(config: TrainConfig, dist: DistInfo = DistInfo(),
                    progress: bool = False) -> tuple[np.ndarray, list[dict]]:
    """The CLIP pretraining set: `config.pretrain_scans` scans of people no built-in dataset
    holds, rendered with the run's views, with their ground truth for the captions.

    Made once (rank 0, `config.render_workers` processes) and kept in the view cache's folder.

    Returns:
        (views (N, V, 3, H, W) uint8, N ground-truth dicts).
    """
    settings = render_settings(config)
    cache = ViewCache(config.cache or None, settings)
    folder = cache.folder / f"pretrain-{config.pretrain_scans}scans-seed{PRETRAIN_SEED}"
    if dist.is_main and not (folder / "truths.json").is_file():
        views = np.empty((config.pretrain_scans, len(settings.views), 3, settings.image_size,
                          settings.image_size), np.uint8)
        truths = [None] * config.pretrain_scans
        with ProcessPoolExecutor(max(1, config.render_workers),
                                 initializer=init_render_worker) as pool, \
                tqdm(total=config.pretrain_scans, desc="pretraining scans", unit="scan",
                     disable=not progress) as bar:
            futures = {pool.submit(_pretraining_scan, i, settings): i
                       for i in range(config.pretrain_scans)}
            for future in as_completed(futures):
                views[futures[future]], truths[futures[future]] = future.result()
                bar.update()
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(folder / "views.npy") as f:
            np.save(f, views)
        write_atomic(folder / "truths.json", json.dumps(truths))  # last: marks it complete
    barrier()
    return np.load(folder / "views.npy", mmap_mode="r"), json.loads(
        (folder / "truths.json").read_text())


def image_statistics(views: np.ndarray, most: int = 1000) -> tuple[torch.Tensor, float]:
    """The mean image (3, H, W) and the pixel std of up to `most` evenly spaced scans of
    (N, V, 3, H, W) uint8 views, all views pooled (a pretraining image may be any view)."""
    step = max(1, len(views) // most)
    pixels = torch.from_numpy(np.asarray(views[::step], np.float32) / 255)  # (n, V, 3, H, W)
    return pixels.mean(dim=(0, 1)), pixels.std().item()

