"""Everything a run builds from its `TrainConfig`, and a trained model back from its file.

The assembly stage between the configuration and the loop, shared by train.py (which trains)
and evaluate.py / the app (which rebuild the same pipeline from the config a checkpoint
stores), so both see the same classes, views, prompts and model. Data path:

    dataset root -> `index_dataset` -> protocol filter (e.g. BU-3DFE: 60 subjects, intensities
    3-4) -> subject-independent folds -> `ViewCache.fill` (render once, uint8 on disk)
    -> `FaceViewsDataset` items (T, V, 3, H, W)

Model path: tokenizer (a checkpoint's merges, the pretrained weights' vocabulary, or learned on
the prompts) -> `FacetVLM` on pretrained or fresh CLIP towers -> `class_prompts` (what it reads
per class) -> `Objective` (the training step). `load_predictor` reverses it for a saved run or
for CLIP weights alone (`zero_shot_model`).

Every check that can fail (empty dataset, a class missing from a split, unrenderable scans, a
vocabulary that does not fit the weights) runs here, before any training step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from facet import prompts as prompt_lib
from facet.augment import mirror_slots
from facet.baseline import CNN_MODEL, BaselineObjective, ViewsCNN
from facet.camera import parse_views
from facet.checkpoint import (load_checkpoint, load_openai, load_weights, openai_merges,
                              read_torch_file)
from facet.clip import CLIP, build_from_state_dict
from facet.clip import PRESETS as CLIP_PRESETS
from facet.config import TrainConfig, from_dict
from facet.data.datasets import (PROTOCOLS, FaceViewsDataset, filter_samples,
                                 leave_one_subject_out, subject_kfold, view_statistics,
                                 with_neutral_references)
from facet.data.layouts import EMOTIONS, Index, Sample, action_units, index_dataset
from facet.data.view_cache import ViewCache
from facet.faces import synth
from facet.faces.pretraining import CaptionedViews
from facet.losses import LossConfig
from facet.model import FacetConfig, FacetVLM, zero_shot_model
from facet.objective import Objective
from facet.prompts import ClassPrompts
from facet.render import RenderSettings
from facet.runtime import DistInfo, barrier
from facet.tokenizer import Tokenizer, train_bpe


# facet's own CLIP, pretrained on captioned built-in faces (train.py --preset=pretrain)
FACET_CLIP = Path(__file__).resolve().parent / "assets" / "facet_clip_stem.pt"
# facet's own 3D FACET-VLMs (fine-tuned on BU-3DFE-like people), where a 4D run starts, by the
# name --init knows them by: on the stem tower (the 4d preset's), and on the patch tower `tiny`
SHIPPED_3D = {"facet-3d": Path(__file__).resolve().parent / "assets" / "facet_3d_stem.pt",
              "facet-3d-tiny": Path(__file__).resolve().parent / "assets" / "facet_3d_tiny.pt"}


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


def dataset_root(config: TrainConfig, dist: DistInfo = DistInfo(),
                 say: Callable[[str], None] | None = None) -> Path:
    """The dataset root: `config.data`, or the built-in synthetic set (generated once, by rank
    0, in the folder `python -m facet.faces.synth --kind KIND --subjects N` writes by default).
    `say` is told about a one-off generation before it starts (the scripts print it; library
    code stays silent).

    Raises:
        FileNotFoundError: `config.data` is given but is not a folder.
    """
    if config.data:
        root = Path(config.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data={config.data}: no such folder")
        return root
    root = synth.default_root(config.synth_kind, config.synth_subjects,
                              config.synth_crop_per_frame)
    if dist.is_main and say is not None and not root.is_dir():  # a one-off: what and where
        say(f"generating the built-in {config.synth_kind} set ({config.synth_subjects} "
            f"subjects{', every frame scanned apart' if config.synth_crop_per_frame else ''}) "
            f"into {root}, once: later runs reuse it" +
            (" (the 60-subject BU-3DFE-like set: 1.2 GB, under 2 minutes on 2 cores)"
             if config.synth_kind == "bu3dfe" else ""))
    if dist.is_main:
        synth.ensure_dataset(config.synth_kind, root, subjects=config.synth_subjects, seed=0,
                             progress=True, crop_per_frame=config.synth_crop_per_frame)
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
    if index.kind == "4dme" and config.micro_only and not config.train_macro:
        # MER protocols score micro clips only (with --train_macro, `make_splits` keeps the
        # macro clips on the training side)
        samples = [s for s in samples if s.clip_kind in ("micro", "")]  # "": not annotated
    samples = filter_samples(samples, protocol.expressions, intensities, subjects)
    if not samples:
        raise ValueError(f"{root}: no usable sample ({index.summary()}; kept expressions "
                         f"{protocol.expressions}, intensities {intensities})")
    if config.onset != "none":  # static scans are compared with their person's neutral one
        samples = with_neutral_references(samples, index.samples)
    return samples, index


def make_splits(samples: list[Sample], config: TrainConfig
                ) -> list[tuple[list[Sample], list[Sample]]]:
    """All (train, test) folds of the configured protocol: subject k-fold or leave-one-out.

    The folds depend on the samples and `--folds` only, never on `--seed`: a seed study
    compares seeds on the same test people."""
    splits = (leave_one_subject_out(samples) if config.split == "loso"
              else subject_kfold(samples, config.folds, seed=0))
    return [(train, scored(test, config)) for train, test in splits]


def scored(samples: list[Sample], config: TrainConfig) -> list[Sample]:
    """The held-out samples a protocol scores: with --train_macro (4DME's protocol: learn from
    macro and micro clips) the micro clips only; otherwise all of them."""
    return [s for s in samples if s.clip_kind != "macro"] if config.train_macro else samples


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
                          mode=config.mode, apex_motion=config.apex_motion,
                          align_frames=config.align_frames)


def cache_folder(config: TrainConfig) -> Path:
    """The run's view-cache folder (`--cache`, or the default) for its render settings."""
    return ViewCache(config.cache or None, render_settings(config)).folder


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
    """The torch Dataset of one split (random frame choice only for training; with --lambda_au
    the training items carry their action units, out of every AU the split annotates)."""
    aus = annotated_aus(samples) if train and config.lambda_au > 0 else ()
    return FaceViewsDataset(samples, cache, frames=config.frames, sampling=config.frame_sampling,
                            train=train, seed=config.seed, classes=classes, onset=config.onset,
                            magnify=config.magnify, change_rms=config.change_rms,
                            common=config.onset_common, aus=aus)


def annotated_aus(samples: Sequence[Sample]) -> tuple[int, ...]:
    """Every action unit the samples' AU annotations name, sorted (the AU head's outputs).

    Raises:
        ValueError: no sample has an AU annotation (then --lambda_au has nothing to learn).
    """
    aus = sorted({au for s in samples for au in action_units(s.aus)})
    if not aus:
        raise ValueError("--lambda_au needs action-unit annotations, and none of the training "
                         "samples has one (4DME's labels.csv and Bosphorus' AU scans have them); "
                         "pass --lambda_au=0 to train without the AU head")
    return tuple(aus)


def build_tokenizer(config: TrainConfig, merges: list | None = None) -> Tokenizer | None:
    """The run's BPE tokenizer: from a checkpoint's merges, the pretrained weights' vocabulary
    (`--vocab`), or learned on the prompts when training from scratch; None for the CNN
    baseline, which reads no text.

    From scratch we learn merges on every prompt of every known class (plain and with metadata),
    sized to the CLIP preset's vocabulary; unseen words still encode, byte by byte.

    Raises:
        ValueError: --pretrained corrupted or unreadable, or without --vocab when it carries no
            merges (naming where OpenAI's vocabulary comes from); --vocab not a CLIP vocabulary.
    """
    if config.model == CNN_MODEL:
        return None
    if merges is not None:
        return Tokenizer.from_merges(merges)
    if config.init:  # the text tower of --init reads its own vocabulary
        return Tokenizer.from_merges(init_checkpoint(config)["merges"])
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


def view_slots(config: TrainConfig) -> int:
    """The model's view slots: FacetConfig's, or more when the run renders more views."""
    return max(FacetConfig.max_views, len(parse_views(config.views)))


def init_checkpoint(config: TrainConfig) -> dict:
    """The train.py checkpoint of `--init` (a file, or a name of SHIPPED_3D: facet's own 3D
    models, shipped with their weights in float16 and widened here to the float32 the model
    trains in), every record checked (`load_checkpoint`)."""
    path = SHIPPED_3D.get(config.init, config.init)
    ckpt = load_checkpoint(path, required=("model", "config", "merges"))
    for entry in ("model", "ema"):
        if isinstance(ckpt.get(entry), dict):
            ckpt[entry] = {k: v.float() if v.is_floating_point() else v
                           for k, v in ckpt[entry].items()}
    return ckpt


def checkpoint_towers(ckpt: dict, source: str | Path) -> CLIP:
    """The CLIP towers of a train.py checkpoint, rebuilt from their own weights (their shapes
    give the architecture, as for OpenAI's files), not from the config: a run that fine-tuned
    pretrained towers has their input side and width, whatever --image_size it rendered at."""
    towers = {k[len("clip."):]: v for k, v in ckpt["model"].items() if k.startswith("clip.")}
    model_name = ckpt["config"].get("model", TrainConfig.model)
    quick_gelu = ckpt.get("quick_gelu", CLIP_PRESETS.get(model_name, CLIP_PRESETS["tiny"])
                          .quick_gelu)  # older checkpoints: the preset's
    try:
        return build_from_state_dict(towers, quick_gelu)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ValueError(f"{source}: its CLIP weights do not form a CLIP ({err})") from None


def start_from(model: FacetVLM, weights: dict[str, torch.Tensor], source: str | Path
               ) -> list[str]:
    """Load a checkpoint's weights into a model that may have parts it lacks (a 4D model from a
    3D one: the temporal fusion); returns the names that start fresh.

    Raises:
        ValueError: naming the file: weights the model has no place for, or of another shape
            (another fusion, view or class configuration).
    """
    own = model.state_dict()
    unknown = [k for k in weights if k not in own]
    mismatched = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in weights
                  if k in own and weights[k].shape != own[k].shape]
    if unknown or mismatched:
        raise ValueError(f"{source}: --init weights do not fit this model (another fusion, view "
                         f"or class configuration?): not in it {unknown[:4]}, another shape "
                         f"{mismatched[:4]}")
    model.load_state_dict({**own, **weights})
    return [k for k in own if k not in weights]


def build_model(config: TrainConfig, tokenizer: Tokenizer | None, num_classes: int,
                train_set: FaceViewsDataset | None = None, clip: CLIP | None = None
                ) -> FacetVLM | ViewsCNN:
    """FacetVLM for the config (the CNN baseline for `--model=cnn`): on `clip` when given (a
    checkpoint's own towers), else started from the train.py checkpoint `config.init` (its
    towers, fusion and input statistics; the parts it lacks, such as a 3D model's temporal
    fusion, start fresh), else on the pretrained CLIP when `config.pretrained` is set, else on
    fresh towers; with the training set's pixel statistics (from scratch, `center_inputs`; and
    from --init for a difference input, which no face-trained start describes) when
    `train_set` is given.

    Raises:
        ValueError: pretrained or --init weights that do not fit (naming the file).
    """
    if config.model == CNN_MODEL:
        return build_baseline(config, num_classes, train_set)
    init = init_checkpoint(config) if clip is None and config.init else None
    if init is not None:
        clip = checkpoint_towers(init, config.init)
    elif clip is None and config.pretrained:
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
        mtgf_queries=config.mtgf_queries, fusion_gate=config.fusion_gate,
        text_head=config.text_head, num_classes=num_classes, tau=config.tau,
        max_views=view_slots(config), max_frames=config.frames,
        center_images=config.center_images, freeze_image=config.freeze_image,
        freeze_text=config.freeze_text)
    model = FacetVLM(facet_config, clip)
    if init is not None:  # the averaged weights where that run kept an EMA: its result
        start_from(model, init.get("ema") or init["model"], config.init)
    if init is not None and config.onset == "difference" and train_set is not None:
        # a difference image 0.5 + (x_t - x_0) is no face: the start's mean face would leave
        # the change a small ripple on a face-shaped offset; the training set's own mean
        # (about grey) and its far smaller std give the change the range a face had
        model.set_input_statistics(*view_statistics(train_set))
    elif (init is None and train_set is not None and config.center_inputs
          and not config.pretrained):
        # every rank averages the whole training split, so all ranks hold the same statistics
        model.set_input_statistics(*view_statistics(train_set))
    return model


def build_baseline(config: TrainConfig, num_classes: int,
                   train_set: FaceViewsDataset | None = None) -> ViewsCNN:
    """The CNN baseline on the config's views, its inputs standardised by `train_set`'s."""
    model = ViewsCNN(len(parse_views(config.views)), num_classes, config.image_size)
    if train_set is not None:
        model.set_input_statistics(*view_statistics(train_set))
    return model


def class_prompts(config: TrainConfig, model: FacetVLM, tokenizer: Tokenizer,
                  classes: Sequence[str], train: bool = False,
                  generator: torch.Generator | None = None,
                  descriptions: Sequence[str] | None = None) -> ClassPrompts | None:
    """The class prompts of `model` (None for the learned head, `text_head=False`).

    Args:
        config: the run's (--text_head, --metadata_prompts, --train_prompts).
        train: the training step's prompts: one drawn per class with `generator` under
            `--train_prompts=sample`; evaluation always reads the whole ensemble.
        descriptions: what each class is prompted with, if not its name (zero-shot by
            description: label "happiness", prompt "a face with the lip corners pulled up").
    """
    if not config.text_head:  # the learned head (or the CNN baseline): no prompts
        return None
    prompts = list(descriptions or classes)
    if len(prompts) != len(classes):
        raise ValueError(f"{len(prompts)} class prompts for {len(classes)} classes")
    draw = generator if train and config.train_prompts == "sample" else None
    return ClassPrompts(tokenizer, prompts, model.clip.config.context_length,
                        metadata=config.metadata_prompts, generator=draw)


def build_objective(config: TrainConfig, model: FacetVLM | ViewsCNN, tokenizer: Tokenizer | None,
                    classes: Sequence[str], generator: torch.Generator, num_aus: int = 0
                    ) -> Objective | BaselineObjective:
    """The training step of the config around `model`: augmentation, prompts, loss weights
    (num_aus: the training set's action units, for --lambda_au)."""
    mirror = mirror_slots(parse_views(config.views)) if config.mirror else None
    if isinstance(model, ViewsCNN):
        return BaselineObjective(model, augment=config.augment, mix_prob=config.mix_prob,
                                 mode=config.mode, label_smoothing=config.label_smoothing,
                                 mirror=mirror)
    loss = LossConfig(config.label_smoothing, config.lambda_cons, config.lambda_aff,
                      config.consistency, config.lambda_au)
    prompts = class_prompts(config, model, tokenizer, classes, train=True, generator=generator)
    return Objective(model, prompts, loss, augment=config.augment, mix_prob=config.mix_prob,
                     mode=config.mode, mirror=mirror, num_aus=num_aus)


# --- a trained model back from its file ------------------------------------------------------

FACET_ENTRIES = ("model", "config", "classes", "merges")  # what train.py's ckpt.pt holds


@dataclass
class Predictor:
    """A checkpoint ready to classify faces."""

    model: FacetVLM  # eval mode
    tokenizer: Tokenizer
    classes: tuple[str, ...]  # what it was trained on (a CLIP: the six emotions)
    config: TrainConfig  # the run's config: render settings, frames, frame sampling, amp
    source: str  # the checkpoint file
    kind: str = "facet"  # "facet": a train.py checkpoint; "clip": CLIP weights (clip.pt)

    @property
    def settings(self) -> RenderSettings:
        return render_settings(self.config)

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device


def rebuild(ckpt: dict, source: str, device: torch.device | str = "cpu"
            ) -> tuple[TrainConfig, tuple[str, ...], Tokenizer, FacetVLM]:
    """(config, classes, tokenizer, model in eval mode) from a train.py checkpoint dict; the
    averaged weights where the run kept an EMA (`--ema_decay`: they are its reported result);
    the towers from their own weights (`checkpoint_towers`).
    """
    try:  # every weight is the checkpoint's
        config = dataclasses.replace(from_dict(ckpt["config"]), pretrained="", init="")
    except ValueError as err:
        raise ValueError(f"{source}: its config is not valid ({err})") from None
    if config.model == CNN_MODEL:
        raise ValueError(f"{source}: a CNN baseline checkpoint (--preset=cnn-baseline); "
                         "evaluate.py and the app read FACET-VLM checkpoints. Its scores are "
                         "in its run folder (metrics.json, predictions.csv)")
    classes = tuple(ckpt["classes"])
    tokenizer = build_tokenizer(config, ckpt["merges"])
    model = build_model(config, tokenizer, len(classes), clip=checkpoint_towers(ckpt, source))
    load_weights(model, ckpt.get("ema") or ckpt["model"], source)
    return config, classes, tokenizer, model.to(device).eval()


def load_predictor(path: str | Path, device: torch.device | str = "cpu") -> Predictor:
    """Load a checkpoint for prediction; the kind is told by its entries: a train.py checkpoint
    (FACET-VLM), or CLIP weights in OpenAI's layout with their BPE merges (kind "clip": the
    pretrained CLIP alone, zero-shot by its prompt ensembles, `zero_shot_model`; the six emotions
    unless other classes are asked for; rendered as it was pretrained when the file says how).

    Raises:
        FileNotFoundError / ValueError naming the file: unreadable, corrupted, a checkpoint of
        another kind, or CLIP weights without the vocabulary they were trained with.
    """
    stored = read_torch_file(path, "checkpoint", mmap=True)  # mmap: tensors read when used
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: not a checkpoint (a {type(stored).__name__}, not a dict)")
    entries = set(stored)
    if {"state_dict", "merges"} <= entries:  # the merges and render settings
        clip = load_openai(path)
        render = stored.get("render", {})
        # scored as pretraining scored it each epoch: the faces as read, no mirror images
        config = TrainConfig(image_size=render.get("image_size", clip.config.image_size),
                             views=render.get("views", TrainConfig.views),
                             mode=render.get("mode", TrainConfig.mode), model="tiny",
                             mirror=False, mirror_test=False)
        tokenizer = Tokenizer.from_merges(stored["merges"])
        model = zero_shot_model(clip, view_slots(config))
        return Predictor(model.to(device).eval(), tokenizer, EMOTIONS, config,
                         str(path), kind="clip")
    if not set(FACET_ENTRIES) <= entries:
        missing = [e for e in FACET_ENTRIES if e not in entries]
        raise ValueError(f"{path}: not a facet checkpoint of this version: no {missing} entry "
                         f"(a checkpoint of another kind, with {sorted(entries)[:8]}); it takes "
                         "a checkpoint written by train.py (ckpt.pt) or CLIP weights with their "
                         "merges (clip.pt)")
    ckpt = load_checkpoint(path, map_location=device, required=FACET_ENTRIES)
    config, classes, tokenizer, model = rebuild(ckpt, str(path), device)
    return Predictor(model, tokenizer, classes, config, str(path))
