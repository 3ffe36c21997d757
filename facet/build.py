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

from pathlib import Path

import torch

from facet import prompts as prompt_lib
from facet.camera import parse_views
from facet.checkpoint import load_openai
from facet.clip import PRESETS as CLIP_PRESETS
from facet.config import TrainConfig
from facet.datasets import FaceViewsDataset, view_statistics
from facet.layouts import Sample, index_dataset
from facet.loop import Objective
from facet.losses import LossConfig
from facet.model import FacetConfig, FacetVLM
from facet.protocols import PROTOCOLS, filter_samples, leave_one_subject_out, subject_kfold
from facet.render import RenderSettings
from facet.runtime import DistInfo, barrier
from facet.tokenizer import Tokenizer, train_bpe
from facet.view_cache import ViewCache


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
    if dist.is_main:
        synth.ensure_dataset(config.synth_kind, root, subjects=config.synth_subjects, seed=0,
                             progress=True)
    barrier()  # the other ranks wait until rank 0 has published the set
    return root


def select_samples(root: Path, config: TrainConfig) -> tuple[list[Sample], str]:
    """Index the root and keep the samples of the protocol (with the config's overrides).

    Returns:
        (samples, dataset kind).
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
    return samples, index.kind


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
        ValueError: --pretrained without --vocab (naming where OpenAI's vocabulary comes from).
    """
    if merges is not None:
        return Tokenizer.from_merges(merges)
    if config.pretrained:
        if not config.vocab:
            raise ValueError("--pretrained needs --vocab, the BPE vocabulary its text tower was "
                             "trained with (OpenAI's bpe_simple_vocab_16e6.txt.gz comes with "
                             "OpenAI's CLIP code: github.com/openai/CLIP, folder clip/)")
        return Tokenizer.from_clip_vocab(config.vocab)
    names = list(prompt_lib.CLASS_WORDS)
    corpus = [p for grid in (prompt_lib.build_prompts(names),
                             prompt_lib.build_prompts(names, {"sex": "female", "age_group": "young",
                                                              "ethnicity": "WH"}))
              for row in grid for p in row]
    return train_bpe(corpus, CLIP_PRESETS[config.model].vocab_size)


def build_model(config: TrainConfig, tokenizer: Tokenizer, num_classes: int,
                train_set: FaceViewsDataset | None = None) -> FacetVLM:
    """FacetVLM for the config: pretrained CLIP towers when `config.pretrained` is set, and the
    training set's pixel statistics (from scratch, `center_inputs`) when `train_set` is given.

    Raises:
        ValueError: pretrained weights whose width or vocabulary do not fit (naming the file).
    """
    clip = None
    if config.pretrained:
        clip = load_openai(config.pretrained)
        if clip.config.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"{config.pretrained}: a vocabulary of {clip.config.vocab_size} ids "
                             f"but --vocab has {tokenizer.vocab_size}: use the weights' own "
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
                    classes: tuple[str, ...], generator: torch.Generator) -> Objective:
    """The training step of the config around `model` (augmentation, prompts, loss weights)."""
    loss = LossConfig(config.label_smoothing, config.lambda_cons, config.lambda_aff,
                      config.consistency)
    return Objective(model, tokenizer if config.text_head else None, classes, loss, generator,
                     augment=config.augment, mix_prob=config.mix_prob, mode=config.mode,
                     prompts=config.train_prompts, metadata_prompts=config.metadata_prompts)
