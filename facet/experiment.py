"""Everything a run builds from a `TrainConfig`: data splits, view cache, tokenizer, model, loss.

Shared by train.py (which trains) and evaluate.py (which rebuilds the same pipeline from the
config stored in a checkpoint), so both see the same classes, views and model.

Data path: dataset root -> `index_dataset` -> protocol filter (e.g. BU-3DFE: 60 subjects,
intensities 3-4) -> subject-independent folds -> `ViewCache.fill` (renders once, uint8 on disk)
-> `FaceViewsDataset` items (T, V, 3, H, W). Every check that can fail (empty dataset, a class
missing from a split, unrenderable scans) runs here, before any training step.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from facet import prompts as prompt_lib
from facet.clip import PRESETS as CLIP_PRESETS
from facet.layouts import Sample, index_dataset
from facet.distributed import DistInfo, barrier
from facet.losses import LearnedMargin, LossConfig, total_loss
from facet.model import FacetConfig, FacetVLM
from facet.protocols import PROTOCOLS, filter_samples, leave_one_subject_out, subject_kfold
from facet.tokenizer import Tokenizer, train_bpe
from facet.datasets import FaceViewsDataset
from facet.train_config import TrainConfig, parse_views
from facet.render import RenderSettings
from facet.view_cache import ViewCache

# OpenAI's BPE vocabulary, beside the checkout in the dev setup (it is not redistributed here)
CLIP_VOCAB = Path(__file__).resolve().parents[2] / "shared/data/bpe_simple_vocab_16e6.txt.gz"


def dataset_root(config: TrainConfig, dist: DistInfo = DistInfo()) -> Path:
    """The dataset root: `config.data`, or the synthetic set (generated once, by rank 0).

    Raises:
        FileNotFoundError: `config.data` is given but is not a folder.
    """
    if config.data:
        root = Path(config.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data={config.data}: no such folder")
        return root
    from facet import synth  # imported lazily: only runs without --data need the generator

    # one folder per (kind, size): a run asking for another size never reuses a stale set
    root = synth.default_root() / f"{config.synth_kind}-{config.synth_subjects}subjects"
    if dist.is_main:
        synth.ensure_dataset(config.synth_kind, root, subjects=config.synth_subjects, seed=0)
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
    n_subjects = len({s.subject for s in index.samples})
    if subjects is not None and subjects > n_subjects:
        subjects = None  # a smaller set (synthetic, partial download) keeps all its subjects
    samples = filter_samples(index.samples, protocol.expressions, intensities, subjects)
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


def fill_cache(samples: list[Sample], config: TrainConfig, dist: DistInfo = DistInfo(),
               ) -> tuple[ViewCache, list[Sample], list[tuple[str, str]]]:
    """Render every sample's views once (rank 0; the others wait), drop the ones that failed.

    Returns:
        (cache, samples with a valid entry, failures as (file, reason)).
    """
    settings = RenderSettings(views=parse_views(config.views), image_size=config.image_size,
                              mode=config.mode)
    cache = ViewCache(config.cache or None, settings)
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
    """The run's BPE tokenizer: from checkpoint merges, CLIP's vocabulary, or learned on prompts.

    From scratch we learn merges on every prompt of every known class (plain and with metadata),
    sized to the CLIP preset's vocabulary; unseen words still encode, byte by byte.
    """
    if merges is not None:
        return Tokenizer.from_merges(merges)
    if config.pretrained:  # OpenAI weights need OpenAI's vocabulary
        return Tokenizer.from_clip_vocab(config.vocab or CLIP_VOCAB)
    names = list(prompt_lib.CLASS_WORDS)
    corpus = [p for grid in (prompt_lib.build_prompts(names),
                             prompt_lib.build_prompts(names, {"sex": "female", "age_group": "young",
                                                              "ethnicity": "WH"}))
              for row in grid for p in row]
    return train_bpe(corpus, CLIP_PRESETS[config.model].vocab_size)


def build_model(config: TrainConfig, tokenizer: Tokenizer, num_classes: int) -> FacetVLM:
    """FacetVLM for the config (pretrained CLIP towers loaded when `config.pretrained` is set)."""
    facet_config = FacetConfig(
        clip=config.model, image_size=config.image_size, fusion_depth=config.fusion_depth,
        fusion_heads=config.fusion_heads, cvsa=config.cvsa, mtgf=config.mtgf,
        text_head=config.text_head, num_classes=num_classes, tau=config.tau,
        max_views=max(9, len(parse_views(config.views))), max_frames=config.frames,
        freeze_text=config.freeze_text, center_images=config.center_images)
    model = FacetVLM(facet_config, tokenizer)
    if config.pretrained:
        model.load_pretrained(config.pretrained)
    return model


class Objective(nn.Module):
    """The model plus the trainable parts of its loss, as one module for DDP to wrap.

    DDP averages the gradients of the parameters of the module it wraps; AffectVLM's learned
    margin is such a parameter, so it lives here beside the model rather than outside DDP.
    `forward` returns the loss, so DDP's gradient hooks see the whole computation.
    """

    def __init__(self, model: FacetVLM, config: TrainConfig):
        super().__init__()
        self.model = model
        self.loss_config = LossConfig(config.label_smoothing, config.lambda_cons,
                                      config.lambda_aff)
        self.margin = LearnedMargin() if config.lambda_aff > 0 else None

    def forward(self, views: torch.Tensor, labels: torch.Tensor,
                class_tokens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Args: views (B, T, V, 3, H, W) in [0, 1], labels (B,), class_tokens (K, P, L),
        (B, K, P, L) or None (learned head). Returns: (loss, logits (B, K), parts dict)."""
        output = self.model(views, class_tokens=class_tokens)
        loss, parts = total_loss(output, labels, self.loss_config, self.margin)
        return loss, output.logits, parts
