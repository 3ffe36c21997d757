"""Training and evaluation: one step's objective, the epochs, predictions, the LR schedule.

The optimisation stage of facet's pipeline, shared by train.py and evaluate.py:
- `Objective` is one training step's computation -- mixed view augmentation, the class prompts,
  FACET-VLM, the loss -- as one module, which is what DDP wraps (AffectVLM's learned margin is
  a parameter of the loss, so it must live inside the wrapped module to get averaged).
- `train_epoch` runs `grad_accum` micro-batches per optimizer step; under DDP the gradient
  all-reduce runs only on the last micro-batch of a step (`no_sync` on the others). A loss that
  stops being finite stops the run at that step (the last good checkpoint stays).
- `evaluate` shards the samples by hand (rank r takes r, r + W, ...), so no sample is padded or
  counted twice, and reduces *counts* (confusion matrix, per-intensity hits, view-weight sums)
  across ranks; the per-sample predictions are gathered for predictions.csv.

A batch is a dict (`facet.datasets.collate`): "views" (B, T, V, 3, H, W) float in [0, 1],
"label" (B,) int64, "intensity" (B,) int64 (-1 = unknown), "meta" (B dicts).
"""
from __future__ import annotations

import contextlib
import copy
import math
import sys
from typing import Iterable, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from facet.augment import mix_view_augment
from facet.camera import parse_views
from facet.datasets import collate
from facet.losses import LearnedMargin, LossConfig, clip_loss, total_loss
from facet.model import CentredCLIP, FacetVLM
from facet.prompts import prompt_tokens
from facet.reports import confusion_matrix, intensity_counts, summarize
from facet.runtime import DistInfo, all_gather_objects, all_reduce_sum


class Objective(nn.Module):
    """augment -> prompts -> FacetVLM -> L = CE + lambda_cons L_cons (+ lambda_aff L_aff).

    Args:
        model: the FacetVLM being trained.
        tokenizer: its tokenizer (None with the learned head, `text_head=False`).
        classes: the K class names, in label order.
        loss: the loss weights; a LearnedMargin is built when lambda_aff > 0.
        generator: the run's CPU generator for the prompt draws (checkpointed).
        augment: mixed view augmentation on; mix_prob: cross-sample view mixing.
        mode: the render mode of the views (how they may be augmented).
        prompts: "ensemble" (every prompt each step, as at inference) or "sample" (one drawn).
        metadata_prompts: AffectVLM's per-sample prompts from each sample's metadata.
        class_prompts: what to prompt with per class, in label order (zero-shot by description:
            label "happiness", prompt "a face with the lip corners pulled up"); default: the
            class names.
    """

    def __init__(self, model: FacetVLM, tokenizer, classes: Sequence[str], loss: LossConfig,
                 generator: torch.Generator, augment: bool = True, mix_prob: float = 0.0,
                 mode: str = "normals", prompts: str = "ensemble",
                 metadata_prompts: bool = False, class_prompts: Sequence[str] | None = None):
        super().__init__()
        self.model, self.tokenizer, self.classes = model, tokenizer, list(classes)
        self.class_prompts = list(class_prompts or classes)
        if len(self.class_prompts) != len(self.classes):
            raise ValueError(f"{len(self.class_prompts)} class prompts for {len(self.classes)} "
                             "classes")
        self.loss_config, self.generator = loss, generator
        self.margin = LearnedMargin() if loss.lambda_aff > 0 else None
        self.augment, self.mix_prob, self.mode = augment, mix_prob, mode
        self.sample_prompts, self.metadata_prompts = prompts == "sample", metadata_prompts
        constant = model.class_head is None and not metadata_prompts and prompts == "ensemble"
        # the prompt ensemble does not change from step to step: tokenise it once; with a frozen
        # text tower its embeddings do not change either (`frozen_class_embeddings`)
        self.register_buffer("ensemble_tokens", self.class_tokens() if constant else None,
                             persistent=False)
        self.text_frozen = constant and isinstance(model, FacetVLM) and model.config.freeze_text
        self._frozen_embeddings = None

    def class_tokens(self, batch: dict | None = None) -> torch.Tensor | None:
        """This step's prompt tokens: (K, P, L), (B, K, P, L) with metadata, None for the head."""
        if self.model.class_head is not None:
            return None
        if getattr(self, "ensemble_tokens", None) is not None:
            return self.ensemble_tokens
        meta = batch["meta"] if self.metadata_prompts and batch is not None else None
        draw = self.generator if self.sample_prompts else None  # None: all prompts
        tokens = prompt_tokens(self.tokenizer, self.class_prompts,
                               self.model.clip.config.context_length, meta, draw)
        return tokens.to(self.model.pixel_mean.device)

    def mean_face(self, views: torch.Tensor) -> torch.Tensor:
        """The model's mean image per view slot at the views' size, (V, 3, H, W)."""
        v, (h, w) = views.shape[2], views.shape[-2:]
        mean = self.model.pixel_mean[:v]  # (V, 3, S, S)
        if mean.shape[-2:] == (h, w):
            return mean
        return torch.nn.functional.interpolate(mean, size=(h, w), mode="bilinear",
                                               align_corners=False, antialias=True)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Returns (loss, logits (B, K), the loss's parts as floats for logging)."""
        views = batch["views"]  # (B, T, V, 3, H, W)
        if self.augment:
            views = mix_view_augment(views, batch["seed"], self.mode, self.mean_face(views),
                                     labels=batch["label"], mix_prob=self.mix_prob)
        output = (self.model(views, class_embeddings=self.frozen_class_embeddings())
                  if self.text_frozen else self.model(views, class_tokens=self.class_tokens(batch)))
        loss, parts = total_loss(output, batch["label"], self.loss_config, self.margin)
        return loss, output.logits, parts

    @torch.no_grad()
    def frozen_class_embeddings(self) -> torch.Tensor:
        """(K, E) class embeddings of a frozen text tower (no dropout, no batch statistics),
        encoded on the first step only."""
        if self._frozen_embeddings is None:
            self._frozen_embeddings = self.model.encode_classes(self.ensemble_tokens)
        return self._frozen_embeddings


class ContrastiveObjective(nn.Module):
    """One CLIP pretraining step: augment each image, CLIP's symmetric InfoNCE between the
    images and their captions (`facet.losses.clip_loss`). Under DDP each rank contrasts its own
    share of the batch (OpenAI gathers features over all ranks).

    Args: clip: the CLIP being trained, in its `facet.model.CentredCLIP` wrapper; tokenizer;
        augment: mixed view augmentation of every image; mode: the render mode of the images.
    """

    margin = None  # no learned loss parameters

    def __init__(self, clip: CentredCLIP, tokenizer, augment: bool = True, mode: str = "normals"):
        super().__init__()
        self.model, self.tokenizer, self.augment, self.mode = clip, tokenizer, augment, mode

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """batch from `facet.datasets.collate_captions` -> (loss, image-to-text logits (B, B),
        {"scale": the learned temperature's inverse})."""
        views = batch["views"]  # (B, 1, 1, 3, H, W)
        if self.augment:
            views = mix_view_augment(views, batch["seed"], self.mode)
        tokens = self.tokenizer.tokenize(batch["captions"], self.model.config.context_length)
        used = int((tokens != 0).any(dim=0).nonzero().max()) + 1  # drop padding-only columns
        images = views[:, 0, 0]  # (B, 3, H, W) in [0, 1]
        logits_per_image, _ = self.model(images, tokens[:, :used].to(images.device))
        return clip_loss(logits_per_image), logits_per_image, {"scale": self.model.scale().item()}


def parameter_groups(objective: nn.Module, weight_decay: float,
                     margin_lr: float | None = None) -> list[dict]:
    """AdamW groups: decay matrices only; no decay on norms, biases, embeddings, logit_scale;
    AffectVLM's learned margin in a group of its own, with its own learning rate.

    Decaying a gain, a bias or a learned temperature pulls it toward 0, which is not a
    regulariser but a bias (norm gains should sit near 1, logit_scale near log 1/0.07);
    embeddings are lookup tables whose rows should not shrink just for being rarely used. The
    margin is one scalar behind a sigmoid: Adam moves a parameter by about its learning rate
    per step, so at the network's rate (5e-4) it could not leave its start in a whole run.
    """
    decay, no_decay, margin = [], [], []
    for name, param in objective.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("margin."):
            margin.append(param)
        elif param.ndim < 2 or "embedding" in name or name.endswith("logit_scale"):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if margin:
        groups.append({"params": margin, "weight_decay": 0.0,
                       **({"lr": margin_lr} if margin_lr is not None else {})})
    return groups


class EMA:
    """An exponential moving average of a model's weights (and its buffers' latest values),
    evaluated beside the raw weights: w_ema <- decay * w_ema + (1 - decay) * w, every step.

    Args:
        model: the model being trained (its parameters are averaged).
        decay: e.g. 0.99: the average spans about 1 / (1 - decay) steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.source = decay, model
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average toward the source model's current weights."""
        averaged, current = list(self.model.parameters()), list(self.source.parameters())
        torch._foreach_lerp_(averaged, current, 1 - self.decay)
        for mine, theirs in zip(self.model.buffers(), self.source.buffers()):
            mine.copy_(theirs)  # statistics (BatchNorm, pixel statistics) are not averaged

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to each group's LR over `warmup_steps`, then cosine decay to `min_ratio`
    times it at `total_steps` (optimizer steps)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype` on `device`, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch's tensors on `device`; uint8 views become float in [0, 1] there (uint8 travels
    4x lighter), float views are taken as already in [0, 1]."""
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
           for k, v in batch.items()}
    if out["views"].dtype == torch.uint8:
        out["views"] = out["views"].float().div_(255.0)  # (B, T, V, 3, H, W) in [0, 1]
    return out


def train_epoch(objective: nn.Module, loader: Iterable[dict], optimizer: torch.optim.Optimizer,
                scheduler, *, device: torch.device, first_step: int = 0, grad_accum: int = 1,
                grad_clip: float = 1.0, amp_dtype: torch.dtype | None = None,
                ema: EMA | None = None, log_every: int = 10,
                show_progress: bool = False) -> tuple[dict, list[dict]]:
    """One pass over `loader` (see the module docstring).

    Args:
        objective: the (possibly DDP-wrapped) `Objective`, in train mode.
        loader: batches; its length must be known.
        optimizer, scheduler: stepped once per `grad_accum` micro-batches.
        device: where batches go. first_step: optimizer steps taken before this epoch.
        grad_accum: micro-batches per step; a shorter last group is averaged over its own
            length, so every step is a mean over the samples it saw.
        grad_clip: max global gradient norm (<= 0 disables). amp_dtype: bf16 or None.
        ema: an EMA of the objective's model, updated after every optimizer step.
        log_every: optimizer steps between logged records (and the first step).
        show_progress: a tqdm bar (rank 0 on a terminal).
    Returns:
        ({"loss", "acc"} over the epoch and all ranks, the logged step records: {"step",
        "loss", "ce", "cons", ..., "lr"}, means over all ranks).
    Raises:
        ValueError: the loss is not finite (naming the step).
    """
    n_batches = len(loader)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples (this rank)
    records, step = [], first_step
    group_loss, group_parts = 0.0, {}
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(tqdm(loader, total=n_batches, disable=not show_progress,
                                   leave=False, desc="train")):
        group_start = i - i % grad_accum
        group_len = min(grad_accum, n_batches - group_start)
        last_in_group = i == group_start + group_len - 1
        batch = to_device(batch, device)
        # DDP all-reduces gradients inside backward(); skip it until the group's last micro-batch
        sync = contextlib.nullcontext() if last_in_group or not hasattr(objective, "no_sync") \
            else objective.no_sync()
        with sync:
            with autocast(device, amp_dtype):
                loss, logits, parts = objective(batch)
            (loss / group_len).backward()
        labels = batch["label"]
        totals += torch.tensor([loss.item() * len(labels),
                                (logits.argmax(-1) == labels).sum().item(), len(labels)],
                               dtype=torch.float64)
        group_loss += loss.item() / group_len
        for k, v in parts.items():
            group_parts[k] = group_parts.get(k, 0.0) + v / group_len
        if not last_in_group:
            continue
        logged = _mean_over_ranks({"loss": group_loss, **group_parts})
        step += 1
        if not math.isfinite(logged["loss"]):
            raise ValueError(f"the training loss became {logged['loss']} at optimizer step "
                             f"{step}; stopped (the last checkpoint is unchanged). Lower --lr, "
                             "or check the data")
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(objective.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update()
        if step % log_every == 0 or step == 1:
            records.append({"step": step, **logged, "lr": optimizer.param_groups[0]["lr"]})
        group_loss, group_parts = 0.0, {}
    loss_sum, correct, seen = all_reduce_sum(totals).tolist()
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1)}, records


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks (each rank's value is already a mean over equal batches)."""
    keys = sorted(values)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    summed = all_reduce_sum(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / world for k, v in zip(keys, summed)}


@torch.no_grad()
def predict(model: FacetVLM, views: torch.Tensor, class_tokens: torch.Tensor | None = None,
            class_embeddings: torch.Tensor | None = None):
    """FacetVLM's output on views (B, T, V, 3, H, W) in [0, 1], in eval mode, with the prompt
    ensemble (tokens (K, P, L) or (B, K, P, L)) or precomputed class embeddings (K, E)."""
    model.eval()
    return model(views, class_tokens=class_tokens, class_embeddings=class_embeddings)


@torch.no_grad()
def evaluate(model: FacetVLM, loader: Iterable[dict], objective_like: Objective, *,
             num_views: int, device: torch.device, amp_dtype: torch.dtype | None = None,
             num_levels: int = 5, show_progress: bool = False) -> dict:
    """Counts and per-sample predictions over this rank's shard, combined over all ranks.

    Args:
        model: the FacetVLM (unwrapped is fine: no gradients, no DDP sync needed).
        loader: this rank's shard (`shard_indices`), batches as in the module docstring.
        objective_like: gives the class prompts (`class_tokens`), so evaluation uses the same
            classes and prompt ensemble as training.
        num_views: V (every rank reduces view-weight sums of the same shape, even an empty one).
        device, amp_dtype: where and how to run. num_levels: intensity slots. show_progress.
    Returns:
        {"confusion": (K, K) int64, "intensity": (num_levels, 2) int64 [correct, total],
         "view_weight_sum": (K, V) float64, "count": (K,) int64 samples per true class,
         "predictions": [{"path", "subject", "label", "predicted", "probabilities"}] of every
         rank}, counts summed over ranks.
    """
    classes = objective_like.classes
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    levels = torch.zeros(num_levels, 2, dtype=torch.long)
    weight_sum = torch.zeros(k, num_views, dtype=torch.float64)
    predictions, shared = [], None
    for batch in tqdm(loader, disable=not show_progress, leave=False, desc="eval"):
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            if objective_like.metadata_prompts or model.class_head is not None:
                output = predict(model, batch["views"], objective_like.class_tokens(batch))
            else:  # the ensemble's class embeddings do not depend on the batch: encode once
                if shared is None:
                    shared = model.encode_classes(objective_like.class_tokens())
                output = predict(model, batch["views"], class_embeddings=shared)
        labels, probs = batch["label"].cpu(), output.logits.float().softmax(-1).cpu()
        preds = probs.argmax(-1)
        confusion += confusion_matrix(labels, preds, k)
        levels += intensity_counts(labels, preds, batch["intensity"].cpu(), num_levels)
        weights = output.view_weights.float().mean(dim=1).double().cpu()  # (B, V) over frames
        weight_sum.index_add_(0, labels, weights)  # (K, V)
        predictions += [{"path": m["path"], "subject": m["subject"], "label": classes[y],
                         "predicted": classes[p], "probabilities": q.tolist()}
                        for m, y, p, q in zip(batch["meta"], labels.tolist(), preds.tolist(),
                                              probs)]
    return {"confusion": all_reduce_sum(confusion), "intensity": all_reduce_sum(levels),
            "view_weight_sum": all_reduce_sum(weight_sum), "count": all_reduce_sum(
                confusion.sum(dim=1)), "predictions": all_gather_objects(predictions)}


def evaluate_split(objective: Objective, dataset, config, dist: DistInfo,
                   amp_dtype: torch.dtype | None = None, model: FacetVLM | None = None) -> dict:
    """`facet.reports.summarize` metrics of the objective's model on `dataset` (each rank
    evaluates its shard), plus the mean view weights per true class and every prediction.

    Args: objective: gives the model and the class prompts; dataset: a FaceViewsDataset;
        config: the run's TrainConfig; dist: this process's place in the run; amp_dtype: bf16
        or None; model: evaluate this model instead of the objective's (e.g. the EMA weights).
    """
    shard = Subset(dataset, shard_indices(len(dataset), dist.rank, dist.world_size))
    loader = DataLoader(shard, batch_size=config.eval_batch_size, collate_fn=collate,
                        num_workers=config.workers)
    counts = evaluate(model or objective.model, loader, objective,
                      num_views=len(parse_views(config.views)),
                      device=dist.device, amp_dtype=amp_dtype,
                      show_progress=dist.is_main and sys.stderr.isatty())
    metrics = summarize(counts["confusion"], objective.classes, counts["intensity"])
    per_class = counts["view_weight_sum"] / counts["count"].clamp_min(1).unsqueeze(1).double()
    metrics["view_weights"] = {c: w.tolist() for c, w in zip(objective.classes, per_class)}
    metrics["predictions"] = counts["predictions"]
    return metrics


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Rank r's evaluation share: r, r + W, r + 2W, ... (uneven counts allowed, no padding)."""
    return list(range(rank, n, world_size))
