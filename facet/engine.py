"""The training and evaluation loops, DDP-aware, shared by train.py and evaluate.py.

One optimizer step = `grad_accum` micro-batches; under DDP the gradient all-reduce runs only on
the last micro-batch of a step (`no_sync` on the others), so accumulation costs no extra
communication. Evaluation shards the samples by hand (rank r takes indices r, r+W, ...), so no
sample is padded or counted twice when N is not a multiple of the world size, and reduces *counts*
(confusion matrix, per-intensity hits, view-weight sums) across ranks (see facet/metrics.py).

A batch is a dict: "views" (B, T, V, 3, H, W) uint8 or float in [0, 1], "label" (B,) int64,
"intensity" (B,) int64 (-1 = unknown), and anything else the loss needs (e.g. "meta").
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from facet.distributed import all_reduce_sum
from facet.metrics import confusion_matrix, intensity_counts

LOGIT_SCALE_MAX = math.log(100.0)  # CLIP sec. 2.5: the temperature is clipped at 100


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices only; no decay on norms, biases, embeddings, logit_scale.

    Decaying a gain, a bias or a learned temperature pulls it toward 0, which is not a
    regulariser but a bias (norm gains should sit near 1, logit_scale near log 1/0.07);
    embeddings are lookup tables whose rows should not shrink just for being rarely used.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "embedding" in name or name.endswith("logit_scale"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                    total_steps: int, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base LR, then cosine decay to `min_ratio` x base LR.

    Args:
        optimizer: its param groups' "lr" is the peak LR.
        warmup_steps: optimizer steps of linear warm-up (0 = none).
        total_steps: optimizer steps of the whole run.
        min_ratio: final LR as a fraction of the peak.
    """
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clamp_logit_scales(model: torch.nn.Module) -> None:
    """Keep every `logit_scale` in [0, log 100] after a step (CLIP's clip at 100)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("logit_scale"):
                param.clamp_(0.0, LOGIT_SCALE_MAX)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype` on `device`, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a batch's tensors to `device`; uint8 views become float in [0, 1] there (uint8
    travels 4x lighter), float views are taken as already in [0, 1]."""
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
           for k, v in batch.items()}
    if out["views"].dtype == torch.uint8:
        out["views"] = out["views"].float().div_(255.0)  # (B, T, V, 3, H, W) in [0, 1]
    return out


LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, torch.Tensor, dict]]


def train_epoch(model: torch.nn.Module, loader: Iterable[dict], optimizer: torch.optim.Optimizer,
                scheduler, compute_loss: LossFn, *, device: torch.device, grad_accum: int = 1,
                grad_clip: float = 1.0, amp_dtype: torch.dtype | None = None,
                show_progress: bool = False, on_step: Callable[[dict], None] | None = None,
                ) -> dict:
    """One pass over `loader` with gradient accumulation, clipping and the logit-scale clamp.

    Args:
        model: the (possibly DDP-wrapped) model, in train mode.
        loader: batches (see module docstring); its length must be known.
        optimizer, scheduler: stepped once per `grad_accum` micro-batches.
        compute_loss: (model, batch on device) -> (loss scalar, logits (B, K), parts dict of
            scalar tensors for logging).
        device: where batches go.
        grad_accum: micro-batches per optimizer step; a shorter last group is averaged over its
            own length so every step is a mean over the samples it saw.
        grad_clip: max global grad norm (<= 0 disables).
        amp_dtype: torch.bfloat16 for autocast, or None.
        show_progress: tqdm bar (rank 0 on a TTY).
        on_step: called after each optimizer step with {"loss", "lr", parts...} (floats, means
            over all ranks).

    Returns:
        {"loss": mean loss, "acc": training accuracy} over the epoch and all ranks.
    """
    n_batches = len(loader)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples (this rank)
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=n_batches, disable=not show_progress, leave=False, desc="train")
    group_loss = torch.zeros((), dtype=torch.float64)
    group_parts: dict[str, float] = {}
    for i, batch in enumerate(loader):
        group_start = i - i % grad_accum
        group_len = min(grad_accum, n_batches - group_start)
        last_in_group = i == group_start + group_len - 1
        batch = to_device(batch, device)
        # DDP all-reduces gradients inside backward(); skip it until the group's last micro-batch
        sync = contextlib.nullcontext() if last_in_group or not hasattr(model, "no_sync") \
            else model.no_sync()
        with sync:
            with autocast(device, amp_dtype):
                loss, logits, parts = compute_loss(model, batch)
            (loss / group_len).backward()
        labels = batch["label"]
        totals += torch.tensor([loss.item() * len(labels),
                                (logits.argmax(-1) == labels).sum().item(), len(labels)],
                               dtype=torch.float64)
        group_loss += loss.detach().double().cpu() / group_len
        for k, v in parts.items():
            group_parts[k] = group_parts.get(k, 0.0) + float(v) / group_len
        if last_in_group:
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            clamp_logit_scales(model)
            if on_step is not None:
                logged = _mean_over_ranks({"loss": float(group_loss), **group_parts})
                on_step({**logged, "lr": optimizer.param_groups[0]["lr"]})
            group_loss.zero_()
            group_parts = {}
        bar.update(1)
    bar.close()
    loss_sum, correct, seen = all_reduce_sum(totals).tolist()
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1)}


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks (each rank's value is already a mean over equal batches)."""
    keys = sorted(values)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    summed = all_reduce_sum(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / world for k, v in zip(keys, summed)}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], predict: Callable, *,
             num_classes: int, num_views: int, device: torch.device,
             amp_dtype: torch.dtype | None = None, num_levels: int = 5,
             show_progress: bool = False) -> dict[str, torch.Tensor]:
    """Counts over this rank's share of the data, summed over all ranks.

    Args:
        model: the model (unwrapped is fine: no gradients, no DDP sync needed).
        loader: this rank's shard (see `shard_indices`).
        predict: (model, batch on device) -> (logits (B, K), view_weights (B, V) or None).
        num_classes: K.
        num_views: V (sizes the view-weight sums, so every rank reduces the same shape).
        device: where batches go.
        amp_dtype: autocast dtype or None.
        num_levels: intensity slots for per-intensity accuracy.
        show_progress: tqdm bar.

    Returns:
        {"confusion": (K, K) int64, "intensity": (num_levels, 2) int64,
         "view_weight_sum": (K, V) float64 (zeros when the model gives no weights),
         "count": (K,) int64 samples per true class}, all summed over ranks.
    """
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    levels = torch.zeros(num_levels, 2, dtype=torch.long)
    weight_sum = torch.zeros(num_classes, num_views, dtype=torch.float64)
    for batch in tqdm(loader, disable=not show_progress, leave=False, desc="eval"):
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            logits, view_weights = predict(model, batch)
        labels, preds = batch["label"].cpu(), logits.float().argmax(-1).cpu()
        confusion += confusion_matrix(labels, preds, num_classes)
        levels += intensity_counts(labels, preds, batch["intensity"].cpu(), num_levels)
        if view_weights is not None:
            weight_sum.index_add_(0, labels, view_weights.double().cpu())  # (K, V)
    return {"confusion": all_reduce_sum(confusion), "intensity": all_reduce_sum(levels),
            "view_weight_sum": all_reduce_sum(weight_sum),
            "count": all_reduce_sum(confusion.sum(dim=1))}


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Rank r's evaluation share: r, r + W, r + 2W, ... (uneven counts allowed, no padding)."""
    return list(range(rank, n, world_size))
