"""The run configuration of `train.py`: one dataclass, named presets, checks before any work.

    python train.py                                  # preset "cpu": synthetic BU-3DFE, tiny model
    python train.py --preset=vit-b-16 --data=/data/BU3DFE --fold=all
    python train.py --epochs=3 --views="-30,0;0,0;30,0" --lambda_cons=0

Every field can be overridden with `--key=value` (facet.config checks the type). A checkpoint
stores `to_dict(config)`, so evaluate.py rebuilds the same data pipeline and model from it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional

from facet.camera import format_views, parse_views
from facet.clip import PRESETS as CLIP_PRESETS
from facet.render import MODES, TRAINING_RENDER


@dataclass
class TrainConfig:
    preset: str = "cpu"  # the named preset this config started from (see PRESETS)
    # --- data ---
    data: str = ""  # dataset root; "" = the built-in synthetic set (generated on first use)
    dataset: str = "auto"  # layout: auto, bu3dfe, bu4dfe, bosphorus, bp4d, 4dme, folder
    synth_kind: str = "bu3dfe"  # synthetic set made when data="": bu3dfe, bu4dfe or 4dme
    synth_subjects: int = 60  # subjects in the synthetic set (BU-3DFE protocol uses 60)
    intensities: Optional[tuple[int, ...]] = None  # levels kept; None = the dataset's protocol
    subjects: Optional[int] = None  # first n subjects kept; None = the dataset's protocol
    split: Literal["kfold", "loso"] = "kfold"  # subject k-fold, or leave-one-subject-out
    folds: int = 10  # k of the subject-independent k-fold (the literature's 10)
    fold: int | str = 0  # which fold is the test set: an index, or "all" to run every fold
    cache: str = ""  # view cache folder; "" = $FACET_CACHE or <repo>/cache/views
    render_workers: int = 2  # processes rendering the view cache
    # --- rendering (part of the view-cache key) ---
    views: str = format_views(TRAINING_RENDER.views)  # "yaw,pitch;..." degrees: left/front/right
    image_size: int = TRAINING_RENDER.image_size  # H = W pixels fed to the ViT (224 for ViT-B)
    mode: str = TRAINING_RENDER.mode  # shaded, texture, depth or normals (facet.render)
    frames: int = 1  # T frames per sample (1 = static 3D; 8 for 4D)
    frame_sampling: Literal["uniform", "apex"] = "uniform"  # how 4D frames are picked
    # --- model ---
    model: str = "tiny"  # CLIP architecture preset (facet.clip.PRESETS)
    pretrained: str = ""  # OpenAI CLIP checkpoint to start from; "" = train from scratch
    vocab: str = ""  # CLIP's bpe_simple_vocab_16e6.txt.gz (with --pretrained); "" = ../shared/data
    fusion_depth: int = 1  # CVSA transformer blocks
    fusion_heads: int = 4  # heads in CVSA / MTGF attention
    tau: float = 0.2  # MTGF view-weight softmax temperature
    cvsa: bool = True  # ablation switch: False = mean over views instead of CVSA
    mtgf: bool = True  # ablation switch: False = no text-guided fusion (g only)
    text_head: bool = True  # False = linear classifier instead of prompt similarity
    freeze_text: bool = False  # keep the text tower fixed (useful with pretrained weights)
    center_images: bool = True  # BatchNorm-centre image embeddings (facet/model.py; per rank
    #                             under CPU DDP, synchronised across GPUs by SyncBatchNorm)
    center_inputs: bool = True  # standardise pixels by the training set's mean face per view
    #                             (FacetVLM.set_input_statistics); ignored with --pretrained
    metadata_prompts: bool = False  # AffectVLM prompts with sex / age / ethnicity per sample
    # "ensemble": every prompt of every class each step, as at inference; "sample": one random
    # prompt per class and step (cheaper; from scratch it collapsed all classes to one text
    # embedding in our runs, since the random template varies more than the class word)
    train_prompts: Literal["ensemble", "sample"] = "ensemble"
    # --- optimisation ---
    seed: int = 0  # seeds data order, init, augmentation, prompt sampling
    epochs: int = 30  # passes over the training split
    batch_size: int = 32  # global batch (split over DDP ranks, times grad_accum per step)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4  # peak AdamW learning rate (1e-3 stalls the tiny ViT from scratch)
    weight_decay: float = 0.05  # AdamW decay on weight matrices only
    adam_beta2: float = 0.98  # AdamW beta2, CLIP's (0.999 measured no better on fold 0)
    warmup: float = 1.0  # linear warm-up length in epochs (may be fractional)
    min_lr_ratio: float = 0.01  # final LR of the cosine schedule / peak LR
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    lambda_cons: float = 0.1  # multiview consistency loss weight (0 = the ablation)
    lambda_aff: float = 0.0  # AffectVLM contrastive + triplet loss weight
    augment: bool = True  # mixed view augmentation (independent warp per view)
    mix_prob: float = 0.0  # chance a view slot comes from another face of the same class
    # --- machinery ---
    device: str = "auto"  # auto (GPU if present), cpu or cuda
    amp: bool = False  # bf16 autocast (default on GPUs; on CPU only if it measures faster)
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch CPU threads per process; 0 = cores / local processes
    workers: int = 0  # DataLoader worker processes (0: views are cached, loading is cheap)
    eval_batch_size: int = 64  # batch size for evaluation
    out: str = "out"  # output root; the run writes to out/<name>/
    name: str = ""  # run folder name; "" = the preset name (not --run: torchrun claims it)
    resume: bool = False  # continue from out/<name>/ckpt.pt when it exists
    log_every: int = 10  # optimizer steps between log.jsonl lines
    eval_every: int = 1  # epochs between held-out evaluations (the last epoch always)


PRESETS: dict[str, TrainConfig] = {
    # CPU default: synthetic BU-3DFE (60 subjects, intensities 3-4), 3 views at 64 px, tiny CLIP
    "cpu": TrainConfig(),
    # GPU: ViT-B/16 at 224 px, bf16 autocast, smaller LR for the wide model
    "vit-b-16": TrainConfig(preset="vit-b-16", model="vit-b-16", image_size=224, batch_size=64,
                            lr=1e-4, weight_decay=0.1, epochs=30, amp=True, workers=4,
                            warmup=2.0),
    # 4D: synthetic BU-4DFE sequences, 8 frames spread over each sequence
    "4d": TrainConfig(preset="4d", synth_kind="bu4dfe", frames=8, frame_sampling="uniform",
                      batch_size=16, epochs=12),
    # micro-expressions: synthetic 4DME-like clips, leave-one-subject-out, apex window
    "micro": TrainConfig(preset="micro", synth_kind="4dme", split="loso", frames=4,
                         frame_sampling="apex", batch_size=16, epochs=10),
}


def validate(config: TrainConfig) -> TrainConfig:
    """Check values that types alone cannot; returns the config unchanged.

    Raises:
        ValueError: listing every problem found, so one run fixes them all.
    """
    c, problems = config, []
    positive = ("epochs", "batch_size", "grad_accum", "image_size", "frames", "eval_batch_size",
                "log_every", "eval_every", "fusion_heads", "synth_subjects")
    problems += [f"--{k} must be >= 1 (got {getattr(c, k)})" for k in positive
                 if getattr(c, k) < 1]
    nonneg = ("weight_decay", "warmup", "min_lr_ratio", "grad_clip", "lambda_cons", "lambda_aff",
              "workers", "threads", "fusion_depth")
    problems += [f"--{k} must be >= 0 (got {getattr(c, k)})" for k in nonneg if getattr(c, k) < 0]
    if not c.lr > 0:
        problems.append(f"--lr must be > 0 (got {c.lr})")
    if not 0 <= c.label_smoothing < 1:
        problems.append(f"--label_smoothing must be in [0, 1) (got {c.label_smoothing})")
    if not 0 < c.adam_beta2 < 1:
        problems.append(f"--adam_beta2 must be in (0, 1) (got {c.adam_beta2})")
    if not 0 <= c.mix_prob <= 1:
        problems.append(f"--mix_prob must be in [0, 1] (got {c.mix_prob})")
    if c.tau <= 0:
        problems.append(f"--tau must be > 0 (got {c.tau})")
    if c.split == "kfold" and c.folds < 2:
        problems.append(f"--folds must be >= 2 for k-fold (got {c.folds})")
    if isinstance(c.fold, str) and c.fold != "all":
        problems.append(f"--fold must be an index or 'all' (got {c.fold!r})")
    elif isinstance(c.fold, int) and c.split == "kfold" and not 0 <= c.fold < c.folds:
        problems.append(f"--fold={c.fold} is outside 0..{c.folds - 1}")
    if c.model not in CLIP_PRESETS:
        problems.append(f"--model={c.model!r}: choose one of {', '.join(CLIP_PRESETS)}")
    elif c.image_size % CLIP_PRESETS[c.model].patch_size:
        problems.append(f"--image_size={c.image_size} is not a multiple of the {c.model} patch "
                        f"size {CLIP_PRESETS[c.model].patch_size}")
    if c.mode not in MODES:
        problems.append(f"--mode={c.mode!r}: choose one of {', '.join(MODES)}")
    if c.synth_kind not in ("bu3dfe", "bu4dfe", "4dme"):
        problems.append(f"--synth_kind={c.synth_kind!r}: choose bu3dfe, bu4dfe or 4dme")
    if c.device not in ("auto", "cpu", "cuda"):
        problems.append(f"--device={c.device!r}: choose auto, cpu or cuda")
    try:
        parse_views(c.views)
    except ValueError as err:
        problems.append(f"--{err}")
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def for_fold(config: TrainConfig, fold: int) -> TrainConfig:
    """The config of one fold of a `--fold=all` run."""
    return replace(config, fold=fold)
