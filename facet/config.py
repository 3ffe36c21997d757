"""The run configuration: one dataclass, named presets, a small `--key=value` parser, checks.

Where every training run starts (`train.py`, `evaluate.py` rebuild the same run from the
config a checkpoint stores). Every `TrainConfig` field can be set on the command line:

    python train.py                                  # preset "cpu": synthetic BU-3DFE, tiny model
    python train.py --preset=vit-b-16 --data=/data/BU3DFE --fold=all
    python train.py --epochs=3 --views="-30,0;0,0;30,0" --lambda_cons=0 --no-augment

Arguments are `--key=value`, `--key value`, and for booleans a bare `--flag` / `--no-flag`.
Values are parsed as the field's declared type (bool, int, float, str, a `Literal` choice, an
optional tuple of ints, or `int | str` for `--fold=all`); `validate` then checks what types
alone cannot, listing every problem at once. No globals, no `exec` (unlike nanoGPT's
configurator); the comment beside each field is its `--help` line.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional

from facet.augment import mirror_slots
from facet.baseline import CNN_MODEL, CNN_WIDTHS
from facet.camera import format_views, parse_views
from facet.clip import PRESETS as CLIP_PRESETS
from facet.faces.synth import SEQUENCE_KINDS, WRITERS
from facet.model import FacetConfig
from facet.render import MODES, TRAINING_RENDER

SYNTH_KINDS = tuple(WRITERS)  # what facet.faces.synth generates when data = ""


@dataclass
class TrainConfig:
    preset: str = "cpu"  # the named preset this config started from (see PRESETS)
    task: Literal["classify", "pretrain"] = "classify"  # FACET-VLM, or pretraining its CLIP
    # --- data ---
    data: str = ""  # dataset root; "" = the built-in synthetic set (generated on first use)
    dataset: str = "auto"  # layout: auto, bu3dfe, bu4dfe, bosphorus, bp4d, 4dme, folder
    synth_kind: str = "bu3dfe"  # set made when data="": bu3dfe, bu4dfe, 4dme, bp4d, bosphorus
    synth_subjects: int = 60  # subjects in the synthetic set (BU-3DFE protocol uses 60)
    # (the frames of a real 4D scan share no vertex: they are then aligned by ICP, not Kabsch)
    synth_crop_per_frame: bool = False  # sequences: each frame its own crop, holes and noise
    intensities: Optional[tuple[int, ...]] = None  # levels kept; none = the dataset's protocol
    subjects: Optional[int] = None  # first n subjects kept; none = the dataset's protocol
    split: Literal["kfold", "loso"] = "kfold"  # subject k-fold or leave-one-subject-out
    folds: int = 10  # k of the subject-independent k-fold (the literature's 10)
    fold: int | str = 0  # the test fold: an index, or "all" to run every fold
    val_subjects: int = 0  # training subjects held out to tune on; the test fold read once, last
    micro_only: bool = True  # 4DME: micro-expression clips only (False: macro clips as well)
    train_macro: bool = False  # 4DME: train on the macro clips too; test on micro clips only
    cache: str = ""  # view cache folder; "" = $FACET_CACHE or <repo>/cache/views
    render_workers: int = 2  # processes rendering the view cache
    pretrain_scans: int = 4000  # captioned scans of new people in the CLIP pretraining set
    pretrain_val_people: int = 60  # other people of its stream, scored zero-shot every epoch
    # --- rendering (part of the view-cache key) ---
    views: str = format_views(TRAINING_RENDER.views)  # "yaw,pitch;..." in degrees
    image_size: int = TRAINING_RENDER.image_size  # H = W pixels fed to the ViT (224 for ViT-B)
    mode: str = TRAINING_RENDER.mode  # shaded, texture, depth or normals (facet.render)
    apex_motion: float = 0.0  # 4D: > 0 = motion scaled until the apex moves this % of the face
    align_frames: bool = True  # 4D / --onset: frames aligned to the first (false: the ablation)
    frames: int = 1  # T frames per sample (1 = static 3D; 8 for 4D)
    frame_sampling: Literal["uniform", "apex", "expressive"] = "uniform"  # T frames picked how
    onset: Literal["none", "difference", "magnified"] = "none"  # vs the first frame / neutral scan
    magnify: float = 1.0  # alpha of the onset change: x_0 + alpha (x_t - x_0), 0.5 + alpha (...)
    change_rms: float = 0.0  # > 0: alpha per sample instead, so its largest change has this RMS
    onset_common: bool = False  # onset: a change only where both frames show the face
    # --- model ---
    model: str = "tiny-stem"  # CLIP architecture (facet.clip.PRESETS); "cnn": the baseline
    pretrained: str = "facet-clip"  # CLIP weights (OpenAI's layout) to fine-tune; "" = scratch
    init: str = ""  # a train.py ckpt.pt to start from (3D -> 4D), all but the new parts; or
    # facet's own: "facet-3d" (the stem tower), "facet-3d-tiny" (the patch tower)
    vocab: str = ""  # the BPE vocabulary of --pretrained (OpenAI: bpe_simple_vocab_16e6.txt.gz)
    fusion_depth: int = FacetConfig.fusion_depth  # CVSA transformer blocks
    temporal_depth: int = FacetConfig.temporal_depth  # temporal-fusion blocks (4D)
    fusion_heads: int = FacetConfig.fusion_heads  # heads in CVSA / MTGF / temporal attention
    tau: float = FacetConfig.tau  # MTGF view-weight softmax temperature
    cvsa: bool = True  # ablation: False = mean over views instead of CVSA
    mtgf: bool = True  # ablation: False = no text-guided fusion (CVSA's aggregate only)
    mtgf_queries: Literal["views", "prompts"] = "views"  # views ask prompts / prompts ask patches
    fusion_gate: Literal["scalar", "matrix"] = "scalar"  # fused direction's gate, 0 at init
    text_head: bool = True  # ablation: False = learned cosine head instead of prompts
    freeze_text: bool = False  # keep the text tower fixed (class embeddings computed once)
    freeze_image: bool = False  # keep the image tower fixed (a linear probe of the fusion)
    center_images: Optional[bool] = None  # BatchNorm-centre image embeddings; none = from scratch
    center_inputs: bool = True  # standardise pixels by the training set's mean face per view
    metadata_prompts: bool = False  # AffectVLM prompts with sex / age / ethnicity per sample
    train_prompts: Literal["ensemble", "sample"] = "ensemble"  # all prompts per step, or 1 drawn
    # --- optimisation ---
    seed: int = 0  # seeds data order, init, augmentation, prompt sampling
    epochs: int = 30  # passes over the training split
    batch_size: int = 32  # global batch (split over DDP ranks, times grad_accum per step)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4  # peak AdamW learning rate
    tower_lr_scale: float = 1.0  # the CLIP towers' peak rate / --lr (the fusion trains at --lr)
    weight_decay: float = 0.05  # AdamW decay on weight matrices only
    adam_beta2: float = 0.98  # AdamW beta2 (CLIP's)
    warmup: float = 1.0  # linear warm-up length in epochs (may be fractional)
    min_lr_ratio: float = 0.01  # final LR of the cosine schedule / peak LR
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    lambda_cons: float = 0.1  # multiview consistency loss weight (0 = the ablation)
    consistency: Literal["encoder", "fusion", "both"] = "encoder"  # on z before CVSA, or u after
    lambda_aff: float = 0.0  # AffectVLM contrastive + triplet loss weight
    lambda_au: float = 0.0  # auxiliary loss: the annotated action units read off the face (4DME)
    margin_lr: float = 0.05  # peak learning rate of AffectVLM's learned margin (its own group)
    ema_decay: float = 0.0  # also evaluate an exponential moving average of the weights; 0 = off
    augment: bool = True  # mixed view augmentation (independent warp per view)
    mix_prob: float = 0.0  # chance a view slot comes from another face of the same class
    mirror: bool = True  # train on each face or its left-right mirror image, 1/2 each
    mirror_test: bool = True  # score a face by the mean of its and its mirror's probabilities
    # --- machinery ---
    device: str = "auto"  # auto (GPU if present), cpu or cuda
    amp: bool = False  # bf16 autocast (default on GPUs; on CPU only if it measures faster)
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch CPU threads per process; 0 = cores / local processes
    workers: int = 0  # DataLoader worker processes (0: views are cached, loading is cheap)
    eval_batch_size: int = 64  # batch size for evaluation
    out: str = "out"  # output root: a run writes into out/<name>
    name: str = ""  # run folder name, one path component; "" = the preset name
    resume: bool = False  # continue from out/<name>/ckpt.pt when it exists
    log_every: int = 10  # optimizer steps between log.jsonl lines
    eval_every: int = 1  # epochs between held-out evaluations (the last epoch always)
    checkpoint_every_s: float = 60.0  # least seconds between checkpoints (0: every epoch)


PRESETS: dict[str, TrainConfig] = {
    # CPU default: synthetic BU-3DFE (60 subjects, intensities 3-4), 3 views at 64 px, facet's
    # own pretrained tiny CLIP fine-tuned, its towers at 0.3x the fusion's rate, the weights'
    # moving average the result (chosen on validation people with the mirror images)
    "cpu": TrainConfig(tower_lr_scale=0.3, ema_decay=0.99),
    # GPU: ViT-B/16 at 224 px, bf16 autocast, smaller LR for the wide model
    "vit-b-16": TrainConfig(preset="vit-b-16", model="vit-b-16", pretrained="", image_size=224,
                            batch_size=64, lr=1e-4, weight_decay=0.1, epochs=30, amp=True,
                            workers=4, warmup=2.0),
    # Bosphorus: synthetic .bnt range scans of 60 other people, the six emotions, 10-fold;
    # otherwise the cpu preset
    "bosphorus": TrainConfig(preset="bosphorus", synth_kind="bosphorus", tower_lr_scale=0.3,
                             ema_decay=0.99),
    # 4D: synthetic BU-4DFE sequences; 8 frames of the expressive part, each the aligned first
    # frame plus three times its change; started from facet's 3D model (other people; the
    # stem tower, chosen over the patch tower's start on validation people); the mirror
    # images as in 3D, but no moving average (72 steps are shorter than its 100-step memory)
    "4d": TrainConfig(preset="4d", synth_kind="bu4dfe", synth_subjects=20, frames=8,
                      frame_sampling="expressive", onset="magnified", magnify=3.0,
                      init="facet-3d", batch_size=16, epochs=12),
    # micro-expressions: synthetic 4DME-like clips, leave-one-subject-out (macro clips train
    # too, micro clips are scored); 2 frames of the apex window, each its change from the
    # onset alone (grey + the change: no identity), scaled to one RMS (faint and broad clips
    # alike); started from facet's 3D model (the stem tower, chosen on validation people as
    # for 4d); an auxiliary head reads the annotated action units; no mirror images (chosen
    # before they existed, not measured with them)
    "micro": TrainConfig(preset="micro", synth_kind="4dme", synth_subjects=12, split="loso",
                         train_macro=True, frames=2, frame_sampling="apex", onset="difference",
                         change_rms=0.3, init="facet-3d", lambda_au=1.0,
                         batch_size=8, epochs=30, mirror=False, mirror_test=False),
    # the reference row: a plain CNN from scratch on the same views (facet.baseline), trained
    # by the same loop and augmentation but at a 4x larger rate and without the mirror images
    # (both chosen on validation people: a from-scratch CNN with BatchNorm takes larger steps
    # than a fine-tuned transformer, and did worse with mirrors); no CLIP, prompts, fusion or
    # consistency loss
    "cnn-baseline": TrainConfig(preset="cnn-baseline", model=CNN_MODEL, pretrained="",
                                text_head=False, lambda_cons=0.0, center_images=False, lr=2e-3,
                                mirror=False, mirror_test=False),
    # facet's own CLIP: contrastive pretraining on captioned scans of 3,000 new people (12,000
    # scans: chosen over 4,000 on its validation people, 89.7 % zero-shot against 66-82 %),
    # scored zero-shot on validation people of its stream each epoch and on the built-in
    # BU-3DFE-like set (all of whose people it never sees) once, at the end
    "pretrain": TrainConfig(preset="pretrain", task="pretrain", pretrained="", batch_size=128,
                            epochs=40, lr=1e-3, weight_decay=0.1, warmup=1.0, fold="all",
                            pretrain_scans=12000, mirror=False, mirror_test=False),
}

# options whose default changed when they were added: a stored config without them is a run made
# before they existed, which ran with this value (not today's default)
BEFORE_THEY_EXISTED = {"mirror": False, "mirror_test": False}

# fields that may differ between a run and its --resume: they do not change the computation,
# except --threads, which changes the order of float sums on CPU: a run resumed with another
# thread count matches the uninterrupted one to rounding (~1e-6), with the same one bit for bit
RESUMABLE = {"resume", "name", "out", "workers", "render_workers", "threads", "log_every",
             "eval_every", "checkpoint_every_s", "eval_batch_size", "device", "cache"}


def validate(config: TrainConfig) -> TrainConfig:
    """Check values that types alone cannot; returns the config unchanged.

    Raises:
        ValueError: listing every problem found, so one run fixes them all.
    """
    c, problems = config, []
    problems += [f"--{f.name}={getattr(c, f.name)} must be a finite number"
                 for f in dataclasses.fields(c) if isinstance(getattr(c, f.name), float)
                 and not math.isfinite(getattr(c, f.name))]
    positive = ("epochs", "batch_size", "grad_accum", "image_size", "frames", "eval_batch_size",
                "log_every", "eval_every", "fusion_heads", "synth_subjects", "pretrain_scans",
                "pretrain_val_people", "render_workers")
    problems += [f"--{k} must be >= 1 (got {getattr(c, k)})" for k in positive
                 if getattr(c, k) < 1]
    nonneg = ("weight_decay", "warmup", "min_lr_ratio", "grad_clip", "lambda_cons", "lambda_aff",
              "workers", "threads", "fusion_depth", "temporal_depth", "margin_lr", "val_subjects",
              "lambda_au", "checkpoint_every_s")
    problems += [f"--{k} must be >= 0 (got {getattr(c, k)})" for k in nonneg if getattr(c, k) < 0]
    ranges = {"lr": (0, math.inf, "> 0"), "tau": (0, math.inf, "> 0"),
              "tower_lr_scale": (0, math.inf, "> 0"),
              "adam_beta2": (0, 1, "in (0, 1)"), "label_smoothing": (-1e-30, 1, "in [0, 1)")}
    problems += [f"--{k} must be {words} (got {getattr(c, k)})"
                 for k, (low, high, words) in ranges.items() if not low < getattr(c, k) < high]
    if c.subjects is not None and c.subjects < 1:  # a negative count would slice from the end
        problems.append(f"--subjects must be >= 1 (got {c.subjects}); leave it out for all")
    if not 0 <= c.seed < 2**32:  # numpy's seeds; a negative one failed with numpy's message
        problems.append(f"--seed must be in 0..2**32-1 (got {c.seed})")
    if c.magnify <= 0:
        problems.append(f"--magnify must be > 0 (got {c.magnify})")
    if c.apex_motion < 0:
        problems.append(f"--apex_motion must be >= 0 (got {c.apex_motion})")
    if c.apex_motion and not c.align_frames:
        problems.append("--apex_motion magnifies the motion of aligned frames: it needs "
                        "--align_frames")
    if c.change_rms < 0:
        problems.append(f"--change_rms must be >= 0 (got {c.change_rms})")
    if c.onset_common and (c.onset == "none" or c.mode not in ("normals", "shaded")):
        problems.append("--onset_common keeps the change from the first frame where both frames "
                        "show the face: it needs --onset=difference or --onset=magnified, and "
                        "--mode=normals or shaded (no face pixel of those is the white background)")
    if c.change_rms > 0 and c.onset == "none":
        problems.append("--change_rms normalises the change from the first frame: it needs "
                        "--onset=difference or --onset=magnified")
    if c.mtgf_queries != "views" and not c.mtgf:
        problems.append(f"--mtgf_queries={c.mtgf_queries} chooses how MTGF attends, and --no-mtgf "
                        "switches MTGF off: drop one")
    if not 0 <= c.mix_prob <= 1:
        problems.append(f"--mix_prob must be in [0, 1] (got {c.mix_prob})")
    if not 0 <= c.ema_decay < 1:
        problems.append(f"--ema_decay must be in [0, 1) (got {c.ema_decay})")
    if c.split == "kfold" and c.folds < 2:
        problems.append(f"--folds must be >= 2 for k-fold (got {c.folds})")
    if isinstance(c.fold, str) and c.fold != "all":
        problems.append(f"--fold must be an index or 'all' (got {c.fold!r})")
    elif isinstance(c.fold, int) and c.split == "kfold" and not 0 <= c.fold < c.folds:
        problems.append(f"--fold={c.fold} is outside 0..{c.folds - 1}")
    if c.model == CNN_MODEL:
        problems += _baseline_problems(c)
    elif c.model not in CLIP_PRESETS:
        problems.append(f"--model={c.model!r}: choose one of {', '.join(CLIP_PRESETS)}, or "
                        f"{CNN_MODEL} (the baseline)")
    elif c.image_size % CLIP_PRESETS[c.model].patch_size:
        problems.append(f"--image_size={c.image_size} is not a multiple of the {c.model} patch "
                        f"size {CLIP_PRESETS[c.model].patch_size}")
    if c.mode not in MODES:
        problems.append(f"--mode={c.mode!r}: choose one of {', '.join(MODES)}")
    if c.synth_kind not in SYNTH_KINDS:
        problems.append(f"--synth_kind={c.synth_kind!r}: choose one of {', '.join(SYNTH_KINDS)}")
    elif c.synth_crop_per_frame and c.synth_kind not in SEQUENCE_KINDS:
        problems.append(f"--synth_crop_per_frame: --synth_kind={c.synth_kind} makes static "
                        f"scans, not sequences ({', '.join(SEQUENCE_KINDS)} do)")
    if c.device not in ("auto", "cpu", "cuda"):
        problems.append(f"--device={c.device!r}: choose auto, cpu or cuda")
    if c.name in (".", "..") or re.search(r"[/\\]", c.name):
        problems.append(f"--name={c.name!r} must be one folder name (no '/', not '..')")
    try:
        views = parse_views(c.views)
    except ValueError as err:
        problems.append(f"--{err}")
    else:  # a yaw past 180 repeats a view; a pitch past 90 turns the camera over the head
        problems += [f"--views={c.views!r}: view {yaw:g},{pitch:g} is outside yaw -180..180, "
                     f"pitch -90..90 (degrees)" for yaw, pitch in views
                     if not (-180 <= yaw <= 180 and -90 <= pitch <= 90)]
        if c.mirror or c.mirror_test:
            try:
                mirror_slots(views)
            except ValueError as err:
                problems.append(f"--mirror / --mirror_test (on by default): {err}; or "
                                "--no-mirror --no-mirror_test")
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def _baseline_problems(c: TrainConfig) -> list[str]:
    """What the CNN baseline has no part for: it reads views and nothing else."""
    problems = [f"--model={CNN_MODEL} is the CNN baseline: it has no {part} ({fix})"
                for part, fix, present in (
                    ("pretrained CLIP", "--pretrained=", c.pretrained),
                    ("train.py start", "--init=", c.init),
                    ("prompts", "--no-text_head", c.text_head),
                    ("view embeddings to keep consistent", "--lambda_cons=0", c.lambda_cons),
                    ("view embeddings for AffectVLM's loss", "--lambda_aff=0", c.lambda_aff),
                    ("action-unit head", "--lambda_au=0", c.lambda_au)) if present]
    if problems:
        problems.append("--preset=cnn-baseline sets all of these")
    if c.image_size % 2 ** len(CNN_WIDTHS):
        problems.append(f"--image_size={c.image_size}: the CNN baseline halves it "
                        f"{len(CNN_WIDTHS)} times; use a multiple of {2 ** len(CNN_WIDTHS)}")
    return problems


def for_fold(config: TrainConfig, fold: int) -> TrainConfig:
    """The config of one fold of a `--fold=all` run."""
    return replace(config, fold=fold)


# --- the command line -------------------------------------------------------------------------

def parse_args(argv: list[str]) -> TrainConfig:
    """A validated TrainConfig from `--preset=NAME` (default "cpu") and `--key=value` overrides.

    Raises:
        ValueError: an unknown preset or option (with close matches), or a value that does not
            parse as the option's type, or one that `validate` refuses.
    """
    types_ = typing.get_type_hints(TrainConfig)
    flags = {k for k, t in types_.items() if t in (bool, Optional[bool])}
    changes = dict(_split(argv, flags))
    name = changes.pop("preset", "cpu")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}{_close(name, PRESETS)} "
                         f"(presets: {', '.join(PRESETS)})")
    for key, text in changes.items():
        if key not in types_:
            raise ValueError(f"unknown option --{key}{_close(key, types_)} (see --help)")
        changes[key] = _parse(text, types_[key], key)
    config = replace(PRESETS[name], preset=name, **changes)
    if config.center_images is None:  # a from-scratch aid; pretrained features stay as they are
        config = replace(config, center_images=not config.pretrained)
    return validate(config)


def _split(argv: list[str], flags: set[str]) -> list[tuple[str, str]]:
    """Raw arguments -> (key, text) pairs; dashes in keys become underscores."""
    pairs, i = [], 0
    while i < len(argv):
        if not argv[i].startswith("--") or argv[i] == "--":
            raise ValueError(f"unexpected argument {argv[i]!r}: options are written --key=value")
        key, eq, text = argv[i][2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if key in flags:
                text = "true"
            elif key.startswith("no_") and key[3:] in flags:
                key, text = key[3:], "false"
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i, text = i + 1, argv[i + 1]
            else:
                raise ValueError(f"option --{key} needs a value (--{key}=VALUE)")
        pairs.append((key, text))
        i += 1
    return pairs


def _parse(text: str, annotation: Any, name: str) -> Any:
    """`text` as a value of the type `annotation` (the types TrainConfig uses)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[X], or int | str (tried in order)
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _parse(text, option, name)
            except ValueError:
                continue
        raise ValueError(f"--{name}={text!r}: expected {_type_name(annotation)}")
    if origin is Literal:
        if text in map(str, args):
            return text
        raise ValueError(f"--{name}={text!r}: expected one of {', '.join(map(str, args))}")
    if origin is tuple:  # tuple[int, ...], comma-separated
        return tuple(_parse(t.strip(), args[0], name) for t in text.split(",") if t.strip())
    if annotation is bool:
        if text.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text.strip().lower() in ("1", "true", "yes", "on")
        raise ValueError(f"--{name}={text!r}: expected a boolean (true/false, 1/0, yes/no)")
    try:
        return annotation(text)  # int, float, str
    except ValueError:
        raise ValueError(f"--{name}={text!r}: expected {annotation.__name__}") from None


def _type_name(annotation: Any) -> str:
    """A readable name for a field's type: "int or str", "comma-separated ints or none"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"comma-separated {args[0].__name__}s"
    if origin is Literal:
        return " | ".join(map(str, args))
    return "none" if annotation is type(None) else annotation.__name__


def _close(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=3, cutoff=0.6)
    return f". Did you mean: {', '.join('--' + c for c in close)}?" if close else ""


def help_text() -> str:
    """`--help`: every option with its type, default and the comment beside its field."""
    comments = dict(re.findall(r"^    (\w+): .+?  # (.+)$", inspect.getsource(TrainConfig), re.M))
    types_ = typing.get_type_hints(TrainConfig)
    lines = ["options (--key=value; booleans also --key / --no-key):"]
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"  --{f.name}={f.default!r} [{_type_name(types_[f.name])}]  "
                     f"{comments[f.name]}")
    return "\n".join(lines + [f"presets (--preset=NAME): {', '.join(PRESETS)}"])


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as a dict of primitives (tuples become lists): JSON- and weights_only-safe."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from `to_dict` output; keys of other versions are ignored.

    Raises:
        ValueError: a value of another type than its option's default (a checkpoint is data
            from disk: "views" a number would fail far from here), or one `validate` refuses.
    """
    defaults = TrainConfig()
    # options of one type (not "int | str", "Optional[...]"): their default's type is theirs
    single = {f.name for f in dataclasses.fields(TrainConfig)
              if "|" not in str(f.type) and "Optional" not in str(f.type)}
    kept, wrong = {k: v for k, v in BEFORE_THEY_EXISTED.items() if k not in values}, []
    for key, value in values.items():
        if not hasattr(defaults, key):
            continue
        value = tuple(value) if isinstance(value, list) else value
        default = getattr(defaults, key)
        kinds = (int, float) if isinstance(default, float) else (type(default),)
        if key in single and (not isinstance(value, kinds) or
                              isinstance(value, bool) != isinstance(default, bool)):
            wrong.append(f"{key} is a {type(value).__name__}, not a {type(default).__name__}")
        kept[key] = value
    if wrong:
        raise ValueError("invalid configuration: " + "; ".join(wrong))
    return validate(TrainConfig(**kept))
