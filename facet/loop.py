"""The training loop: `fit` an objective's model, epoch by epoch, resumable, on 1..N processes.

One loop for FACET-VLM and for CLIP pretraining; what differs is the objective (the step,
`facet.objective`), the data and the evaluation, which the caller hands in. Read in this order:
- `fit`: the run -- optimizer, schedule, resume, DDP, then per epoch: train, evaluate,
  log, checkpoint (atomically, every epoch, rank 0). A checkpoint holds the model, the
  objective's own parameters (AffectVLM's margin), the optimizer, schedule, EMA, every random
  stream and the config, so `--resume` continues the uninterrupted run exactly.
- `train_epoch` runs `grad_accum` micro-batches per optimizer step; under DDP the gradient
  all-reduce runs only on the last micro-batch of a step (`no_sync` on the others). A loss that
  stops being finite stops the run at that step (the last good checkpoint stays).
- `evaluate` scores a model by its class prompts (or learned head) -- no loss, no objective --
  through `class_probabilities`, which explain.py and the app share (with `--mirror_test`, the
  mean with each face's mirror image).
  Each rank takes its own shard (r, r + W, ...: no sample padded or counted twice); *counts*
  (confusion matrix, per-intensity hits, view-weight sums) are summed across ranks and the
  per-sample predictions gathered for predictions.csv.

A batch is a dict (`facet.data.datasets.collate`): "views" (B, T, V, 3, H, W) float in [0, 1],
"label" (B,) int64, "intensity" (B,) int64 (-1 = unknown), "meta" (B dicts).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from facet.atomic import write_atomic
from facet.augment import mirror_faces, mirror_slots
from facet.camera import parse_views
from facet.checkpoint import capture_rng, load_checkpoint, load_weights, restore_rng, \
    save_checkpoint
from facet.config import BEFORE_THEY_EXISTED, RESUMABLE, TrainConfig, to_dict
from facet.data.datasets import collate
from facet.model import FacetVLM
from facet.prompts import ClassPrompts
from facet.reports import confusion_matrix, intensity_counts, summarize
from facet.runtime import DistInfo, all_gather_objects, all_reduce_sum, amp_dtype


def fit(objective: nn.Module, train_set: Dataset, collate_fn: Callable, config: TrainConfig,
        dist: DistInfo, run_dir: Path, test: Callable[[nn.Module], dict],
        generator: torch.Generator, saved: dict, drop_last: bool = False,
        say: Callable[[str], None] = lambda line: None, held_out: str = "test",
        final: Callable[[nn.Module], dict] | None = None) -> dict:
    """Train `objective.model` for `config.epochs` epochs (from its checkpoint with --resume).

    ckpt.pt is rewritten after an epoch once `config.checkpoint_every_s` seconds have passed
    since the last write, and after the last epoch: short epochs (a few seconds on the small
    presets) would otherwise spend about 2 % of the run writing 50 MB files, and a crash
    loses at most that long plus an epoch. log.jsonl gains a line every epoch; --resume trims it back to the
    checkpoint's step, so the continued run rewrites the lost epochs' lines as it repeats them.

    Args:
        objective: one step's module (`facet.objective`): batch -> (loss, logits, parts).
        train_set: the training Dataset (with `set_epoch`); collate_fn: its batches.
        config: the run's options; dist: this process's place in the run.
        run_dir: where ckpt.pt and log.jsonl go.
        test: model -> its metrics (with "accuracy") on the held-out data, every `eval_every`
            epochs and after the last (on the EMA weights too, with `--ema_decay`: they are
            then the run's result).
        generator: the run's CPU generator (prompt draws), checkpointed with the rest.
        saved: what the checkpoint carries besides the training state (merges, classes, ...).
        drop_last: full batches only (InfoNCE wants full batches of negatives).
        say: where rank 0 reports the resume and each epoch's record as a JSON line (the
            scripts print; library code stays silent).
        held_out: what `test` scores, naming the log's column: "test" or "val" (`<that>_acc`).
        final: model -> metrics on the test fold, read once after the last epoch (on the
            run's result weights) when `test` scores a validation split; its metrics are then
            the result, with the last validation scores under "validation".
    Returns:
        The last evaluation's metrics (`final`'s, if given).
    """
    model = objective.model
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=config.seed, drop_last=drop_last)
    loader = DataLoader(train_set, batch_size=config.batch_size // dist.world_size,
                        sampler=sampler, collate_fn=collate_fn, num_workers=config.workers,
                        pin_memory=dist.device.type == "cuda", drop_last=drop_last)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    optimizer = torch.optim.AdamW(parameter_groups(objective, config.weight_decay,
                                                   config.margin_lr,
                                                   config.lr * config.tower_lr_scale
                                                   if config.tower_lr_scale != 1 else None),
                                  lr=config.lr, betas=(0.9, config.adam_beta2),
                                  eps=1e-6)  # CLIP's eps
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    scheduler = cosine_schedule(optimizer, round(config.warmup * steps_per_epoch),
                                steps_per_epoch * config.epochs, config.min_lr_ratio)
    ckpt_path, log_path = run_dir / "ckpt.pt", run_dir / "log.jsonl"
    start_epoch, step = 0, 0
    if config.resume and ckpt_path.is_file():
        start_epoch, step = resume(ckpt_path, config, objective, optimizer, scheduler, generator,
                                   ema)
        if dist.is_main:
            say(f"resumed {ckpt_path} at epoch {start_epoch} (step {step})")
    elif config.resume and dist.is_main:
        say(f"--resume: {ckpt_path} does not exist yet; starting that run from epoch 0")
    if dist.is_main:  # the log keeps exactly the steps of the checkpoint it continues
        trim_log(log_path, step)

    # --- DDP wraps the whole step (model + the loss's own parameters) ---
    wrapped = torch.compile(objective) if config.compile else objective
    if dist.enabled and dist.device.type == "cuda":
        # batch statistics over the global batch, not each GPU's share (GPU-only in torch)
        wrapped = torch.nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
    if dist.enabled:
        wrapped = DistributedDataParallel(wrapped, device_ids=[dist.device.index]
                                          if dist.device.type == "cuda" else None)

    def tested(record: dict) -> dict:
        """The run's metrics now (the EMA's, if kept), adding test_acc (+ _ema) to `record`,
        or val_acc when `test` scores the validation split."""
        metrics = test(model)
        record[f"{held_out}_acc"] = metrics["accuracy"]
        if ema is not None:
            metrics = test(ema.model)
            record[f"{held_out}_acc_ema"] = metrics["accuracy"]
        return metrics

    # --- epochs: train, evaluate, log, checkpoint ---
    metrics = None
    last_saved = time.monotonic()
    for epoch in range(start_epoch, config.epochs):
        tic = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        wrapped.train()
        train, steps = train_epoch(wrapped, loader, optimizer, scheduler, device=dist.device,
                                   first_step=step, grad_accum=config.grad_accum,
                                   grad_clip=config.grad_clip,
                                   amp_dtype=amp_dtype(config.amp, dist.device), ema=ema,
                                   log_every=config.log_every,
                                   show_progress=dist.is_main and sys.stderr.isatty())
        step += steps_per_epoch
        record = {"epoch": epoch, "step": step, "train_loss": train["loss"],
                  "train_acc": train["acc"], "train_samples": len(train_set)}
        if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
            metrics = tested(record)
        record["epoch_s"] = time.perf_counter() - tic
        if dist.is_main:
            append_log(log_path, steps + [record])
            if (epoch == config.epochs - 1
                    or time.monotonic() - last_saved >= config.checkpoint_every_s):
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "objective": objective_state(objective),
                    "ema": None if ema is None else ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "config": to_dict(config), "epoch": epoch, "step": step,
                    "rng": capture_rng(generator), "world_size": dist.world_size, **saved})
                last_saved = time.monotonic()
            say(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                            for k, v in record.items()}))
    if metrics is None:  # resumed a finished run: evaluate its final weights
        metrics = tested({})
    if final is not None:  # the test fold, once, on the weights that are the run's result
        validation = {k: metrics[k] for k in ("accuracy", "macro_f1")}
        metrics = final(model if ema is None else ema.model)
        metrics["validation"] = validation
        if dist.is_main:
            say(json.dumps({"test_acc": round(metrics["accuracy"], 4),
                            "val_acc": round(validation["accuracy"], 4)}))
    return metrics


def objective_state(objective: nn.Module) -> dict:
    """The objective's own parameters and buffers, beside its model's (AffectVLM's margin)."""
    return {k: v for k, v in objective.state_dict().items() if not k.startswith("model.")}


def resume(path: Path, config: TrainConfig, objective: nn.Module, optimizer, scheduler,
           generator: torch.Generator, ema: EMA | None) -> tuple[int, int]:
    """Load a checkpoint into the training state; returns (first epoch to run, optimizer step).

    Checkpoints are written at the end of an epoch, so the next epoch starts from a clean
    boundary: the sampler's order is a function of (seed, epoch) and every random stream the
    run draws from is restored, so the continued run repeats the uninterrupted one exactly.

    Raises:
        ValueError: the config differs from the checkpoint's in an option that changes the run.
    """
    ckpt = load_checkpoint(path, required=("model", "config", "optimizer", "scheduler", "rng"))
    # an option added since the run was made ran at its default then (that is what it did)
    defaults = {**to_dict(TrainConfig()), **BEFORE_THEY_EXISTED}
    used = {k: ckpt["config"].get(k, defaults.get(k)) for k in to_dict(config)}
    changed = sorted(k for k, v in to_dict(config).items() if used[k] != v and k not in RESUMABLE)
    if changed:
        was = ", ".join(f"--{k}={used[k]!r}" for k in changed)
        raise ValueError(f"{path}: cannot resume with changed options {changed} (the run used "
                         f"{was}); start a new --name instead")
    load_weights(objective.model, ckpt["model"], path)
    own = objective_state(objective)
    stored = ckpt.get("objective") or {}
    if set(stored) != set(own):
        raise ValueError(f"{path}: its objective holds {sorted(stored)}, this run's "
                         f"{sorted(own)}")
    objective.load_state_dict({**objective.state_dict(), **stored})
    if ema is not None:
        ema.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng(ckpt["rng"], generator)
    return ckpt["epoch"] + 1, ckpt["step"]


# --- log.jsonl: one JSON record per line, appended as the run goes ---------------------------

def append_log(path: Path, records: list[dict]) -> None:
    """Append records to log.jsonl (an append, not atomic: a resumed run rewrites the log up to
    its checkpoint's step, so a torn last line is never read)."""
    try:
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    except OSError as err:  # a full disk: name the file (write() errors carry no path)
        raise OSError(err.errno, f"{path}: cannot append to it ({err.strerror})") from None


def read_log(path: Path) -> list[dict]:
    """The records of log.jsonl; a torn last line (a run killed while appending) is dropped.

    Raises:
        ValueError: a line before the last that is not JSON (naming the file and the line).
    """
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not a JSON record") from None
    return records


def trim_log(path: Path, step: int) -> None:
    """Keep the records up to `step` (the checkpoint a run continues from), atomically."""
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in read_log(path)
                               if r.get("step", 0) <= step))


# --- the pieces of an epoch ------------------------------------------------------------------

def parameter_groups(objective: nn.Module, weight_decay: float,
                     margin_lr: float | None = None, tower_lr: float | None = None
                     ) -> list[dict]:
    """AdamW groups: decay matrices only; no decay on norms, biases, embeddings, logit_scale;
    AffectVLM's learned margin in a group of its own, with its own learning rate; with
    `tower_lr`, the CLIP towers (`clip.*` but its logit_scale) in groups of their own at that
    rate (pretrained towers fine-tuned gently while the new fusion learns at the full rate).

    Decaying a gain, a bias or a learned temperature pulls it toward 0, which is not a
    regulariser but a bias (norm gains should sit near 1, logit_scale near log 1/0.07);
    embeddings are lookup tables whose rows should not shrink just for being rarely used. The
    margin is one scalar behind a sigmoid: Adam moves a parameter by about its learning rate
    per step, so at the network's rate (5e-4) it could not leave its start in a whole run.
    """
    decay, no_decay, margin, tower_decay, tower_no_decay = [], [], [], [], []
    for name, param in objective.named_parameters():
        if not param.requires_grad:
            continue
        tower = tower_lr is not None and ".clip." in f".{name}" \
            and not name.endswith("logit_scale")
        if name.startswith("margin."):
            margin.append(param)
        elif param.ndim < 2 or "embedding" in name or name.endswith("logit_scale"):
            (tower_no_decay if tower else no_decay).append(param)
        else:
            (tower_decay if tower else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if tower_lr is not None:
        groups += [{"params": tower_decay, "weight_decay": weight_decay, "lr": tower_lr},
                   {"params": tower_no_decay, "weight_decay": 0.0, "lr": tower_lr}]
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
def evaluate(model: FacetVLM, dataset: Dataset, classes: tuple[str, ...],
             prompts: ClassPrompts | None, config: TrainConfig, dist: DistInfo,
             amp_dtype: torch.dtype | None = None, num_levels: int = 5) -> dict:
    """`facet.reports.summarize` metrics of `model` on `dataset`, scored by its class prompts,
    plus the mean view weights per true class and every prediction (module docstring).

    Args:
        model: the FacetVLM (unwrapped is fine: no gradients, no DDP sync needed), or the
            CNN baseline (`facet.baseline`), which has no view weights (metrics: None).
        dataset: a FaceViewsDataset; each rank scores its shard (`shard_indices`).
        classes: the K class names, in label order.
        prompts: the classes' prompts (the ensemble; per sample with metadata prompts), None
            for a model with the learned head.
        config: the run's TrainConfig (views, eval batch size, workers); dist: this process's
            place in the run; amp_dtype: bf16 or None; num_levels: intensity slots.
    """
    model.eval()
    shard = Subset(dataset, shard_indices(len(dataset), dist.rank, dist.world_size))
    loader = DataLoader(shard, batch_size=config.eval_batch_size, collate_fn=collate,
                        num_workers=config.workers)
    k, v = len(classes), len(parse_views(config.views))
    confusion = torch.zeros(k, k, dtype=torch.long)
    levels = torch.zeros(num_levels, 2, dtype=torch.long)
    weight_sum = torch.zeros(k, v, dtype=torch.float64)  # every rank the same shape, even empty
    shared = None  # the ensemble's class embeddings do not depend on the batch: encode once
    predictions = []
    for batch in tqdm(loader, disable=not (dist.is_main and sys.stderr.isatty()), leave=False,
                      desc="eval"):
        batch = to_device(batch, dist.device)
        with autocast(dist.device, amp_dtype):
            if prompts is None:  # the learned head
                conditioning = {}
            elif prompts.metadata:  # every sample its own prompts (B, K, P, L)
                conditioning = {"class_tokens": prompts.tokens(batch["meta"]).to(dist.device)}
            else:
                if shared is None:
                    shared = model.encode_classes(prompts.tokens().to(dist.device))  # (K, E)
                conditioning = {"class_embeddings": shared}
            probs, weights = class_probabilities(model, batch["views"], config, **conditioning)
        labels, preds = batch["label"].cpu(), probs.argmax(-1)
        confusion += confusion_matrix(labels, preds, k)
        levels += intensity_counts(labels, preds, batch["intensity"].cpu(), num_levels)
        if weights is not None:
            weight_sum.index_add_(0, labels, weights)  # (K, V)
        predictions += [{"path": m["path"], "subject": m["subject"], "label": classes[y],
                         "predicted": classes[p], "probabilities": q.tolist()}
                        for m, y, p, q in zip(batch["meta"], labels.tolist(), preds.tolist(),
                                              probs)]
    # counts are summed over ranks, the predictions gathered
    confusion = all_reduce_sum(confusion)
    metrics = summarize(confusion, classes, all_reduce_sum(levels))
    per_class = all_reduce_sum(weight_sum) / confusion.sum(dim=1).clamp_min(1)[:, None].double()
    metrics["view_weights"] = {c: w.tolist() for c, w in zip(classes, per_class)
                               } if isinstance(model, FacetVLM) else None  # (K, V)
    metrics["predictions"] = all_gather_objects(predictions)
    return metrics


def class_probabilities(model: nn.Module, views: torch.Tensor, config: TrainConfig,
                        **conditioning) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What evaluation scores a batch by: class probabilities and view weights, with
    `--mirror_test` the means of the faces' and their mirror images' (`facet.augment`).

    Args:
        model: a FacetVLM or the CNN baseline, in eval mode.
        views: (B, T, V, 3, H, W) in [0, 1]. config: the run's (views, mode, mirror_test).
        conditioning: the model's class input (class_embeddings= or class_tokens=; none for
            a learned head).
    Returns:
        (probabilities (B, K) float32 on the CPU, view weights (B, V) float64 averaged over
        frames, or None for a model that does not weigh views).
    """
    def scored(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        output = model(faces, **conditioning)
        weights = output.view_weights.float().mean(dim=1).double().cpu() \
            if isinstance(model, FacetVLM) else None  # (B, V); the CNN reads views as one image
        return output.logits.float().softmax(-1).cpu(), weights

    probs, weights = scored(views)
    if config.mirror_test:  # slot j of the mirrored face shows slot mirror[j] of the face
        mirror = mirror_slots(parse_views(config.views))
        mirrored, mirrored_weights = scored(mirror_faces(views, mirror, config.mode))
        probs = (probs + mirrored) / 2
        if weights is not None:
            weights = (weights + mirrored_weights[:, list(mirror)]) / 2
    return probs, weights


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Rank r's evaluation share: r, r + W, r + 2W, ... (uneven counts allowed, no padding)."""
    return list(range(rank, n, world_size))
