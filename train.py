"""Train FACET-VLM: one CPU, one GPU, or many with `torchrun` (plain torch DDP).

    python train.py                                   # synthetic BU-3DFE, CPU preset, one fold
    python train.py --epochs=3 --fold=all --folds=10  # every fold + a mean +- std table
    torchrun --standalone --nproc_per_node=2 train.py --batch_size=32
    python train.py --resume                          # continue out/<name>/ckpt.pt exactly

Options: every `TrainConfig` field (facet/config.py) is a `--key=value`; `--help` lists them.
A run writes out/<name>/ (out/<name>/fold<i>/ with --fold=all): ckpt.pt (every epoch,
atomically), log.jsonl, metrics.json, predictions.csv, confusion.png, curves.png,
view_weights.png.

The script reads top to bottom: config -> data -> model -> optimizer -> epochs (train,
evaluate, checkpoint) -> reports. The DDP story is in `train_fold`: every rank builds the same
model from the same seed, DDP averages gradients, a DistributedSampler gives each rank its share
of every epoch (`set_epoch` reshuffles), evaluation counts are summed over ranks, and rank 0
alone prints and writes files.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import facet  # first: sets OpenMP's passive wait before torch loads (facet/__init__.py)

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from facet import build, loop, reports, runtime
from facet.camera import parse_views
from facet.checkpoint import (capture_rng, load_checkpoint, load_openai, load_weights,
                              restore_rng, save_checkpoint, save_openai)
from facet.config import RESUMABLE, TrainConfig, for_fold, help_text, parse_args, to_dict
from facet.datasets import CaptionedViews, class_names, collate, collate_captions
from facet.meshio import write_atomic
from facet.model import CentredCLIP


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\n" + help_text())
        return []
    config = parse_args(argv)
    runtime.keep_freed_memory()  # no page faults for the rasterizer's re-allocated temporaries
    threads = torch.get_num_threads()
    try:
        with runtime.distributed(config.device) as dist:
            torch.set_num_threads(config.threads or runtime.default_threads(dist.device))
            return pretrain(config, dist, argv) if config.task == "pretrain" else run(config, dist)
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process (tests, notebooks)


def run(config: TrainConfig, dist: runtime.DistInfo) -> list[dict]:
    """Prepare the data once, then train the chosen fold (or every fold)."""
    # --- data: every check before the slow work (generation, rendering, training) ---
    if config.batch_size % dist.world_size:
        raise ValueError(f"--batch_size={config.batch_size} must be a multiple of the "
                         f"{dist.world_size} processes")
    name = config.name or config.preset
    out = runtime.check_writable(Path(config.out) / name, "--out")  # creates nothing yet
    root = build.dataset_root(config, dist)
    samples, index = build.select_samples(root, config)
    classes = class_names(samples)
    splits = build.make_splits(samples, config)
    if config.split == "loso" and config.fold != "all" and not 0 <= config.fold < len(splits):
        raise ValueError(f"--fold={config.fold}: leave-one-subject-out has {len(splits)} folds")
    folds = range(len(splits)) if config.fold == "all" else [config.fold]
    run_dirs = {i: out / (f"fold{i}" if config.fold == "all" else "") for i in folds}
    for i in folds:
        build.check_split(*splits[i], classes, f"fold {i} of {root}")
        refuse_overwrite(run_dirs[i], config)
    tokenizer = build.build_tokenizer(config)  # e.g. --pretrained without --vocab: now
    cache, kept, failed = build.fill_cache(samples, config, dist)
    if failed and not kept:
        raise ValueError(f"{root}: no sample could be rendered ({len(failed)} failures; first: "
                         f"{failed[0][0]}: {failed[0][1]})")
    if dist.is_main:
        print(f"{index.kind} at {root}: {len(kept)} samples, {len({s.subject for s in kept})} "
              f"subjects, classes {list(classes)}")
        print(reports.dropped_summary(index.skipped, failed, run_dirs[folds[0]] / "skipped.csv"
                                      if len(folds) == 1 else out / "fold*" / "skipped.csv"))
    keep = {s.path for s in kept}

    results = []
    for i in folds:
        train_samples, test_samples = ([s for s in part if s.path in keep] for part in splits[i])
        build.check_split(train_samples, test_samples, classes, f"fold {i} after rendering")
        fold_config = for_fold(config, i)
        train_set = build.make_dataset(train_samples, cache, fold_config, classes, train=True)
        test_set = build.make_dataset(test_samples, cache, fold_config, classes, train=False)
        if dist.is_main:
            print(f"fold {i}: {len(train_set)} train / {len(test_set)} test samples -> "
                  f"{run_dirs[i]}")
        with runtime.run_lock(run_dirs[i]) if dist.is_main else contextlib.nullcontext():
            # again, under the lock: a run of this --name may have finished while this one
            # was rendering, after the check above
            refuse_overwrite(run_dirs[i], config)
            if dist.is_main:
                reports.write_skipped(run_dirs[i] / "skipped.csv", index.skipped, failed)
            results.append(train_fold(fold_config, dist, tokenizer, train_set, test_set,
                                      classes, run_dirs[i]))
        if dist.is_main:
            m = results[-1]
            print(f"fold {i}: test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
                  f"per intensity {m.get('per_intensity')}")
    if config.fold == "all" and dist.is_main:
        write_fold_table(out, results)
    return results


def refuse_overwrite(run_dir: Path, config: TrainConfig) -> None:
    """Runs are never overwritten: a folder with a checkpoint continues only with --resume.

    Raises:
        ValueError: naming the checkpoint and the two ways on.
    """
    if (run_dir / "ckpt.pt").is_file() and not config.resume:
        raise ValueError(f"{run_dir / 'ckpt.pt'} exists: pass --resume to continue that run, or "
                         "--name=NEW for a new one (runs are never overwritten)")


def train_fold(config: TrainConfig, dist: runtime.DistInfo, tokenizer, train_set, test_set,
               classes: tuple[str, ...], run_dir: Path) -> dict:
    """Train one fold (resuming if asked), evaluate it, write its files; returns test metrics."""
    # --- model: the same seed on every rank gives every rank the same initial weights ---
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # augmentation + prompt draws
    model = build.build_model(config, tokenizer, len(classes), train_set)
    objective = build.build_objective(config, model, tokenizer, classes, generator)
    objective.to(dist.device)

    # --- data and optimizer: each rank reads its share of every epoch ---
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size // dist.world_size,
                        sampler=sampler, collate_fn=collate, num_workers=config.workers,
                        pin_memory=dist.device.type == "cuda")
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    optimizer = torch.optim.AdamW(loop.parameter_groups(objective, config.weight_decay,
                                                        config.margin_lr),
                                  lr=config.lr, betas=(0.9, config.adam_beta2),
                                  eps=1e-6)  # CLIP's eps
    ema = loop.EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    scheduler = loop.cosine_schedule(optimizer, round(config.warmup * steps_per_epoch),
                                     steps_per_epoch * config.epochs, config.min_lr_ratio)
    ckpt_path, log_path = run_dir / "ckpt.pt", run_dir / "log.jsonl"
    start_epoch, step = 0, 0
    if config.resume and ckpt_path.is_file():
        start_epoch, step = resume(ckpt_path, config, objective, optimizer, scheduler, generator,
                                   ema)
        if dist.is_main:
            print(f"resumed {ckpt_path} at epoch {start_epoch} (step {step})")
    elif config.resume and dist.is_main:
        print(f"--resume: {ckpt_path} does not exist yet; starting that run from epoch 0")
    if dist.is_main:  # the log keeps exactly the steps of the checkpoint it continues
        trim_log(log_path, step)

    # --- DDP: wrap the objective (model + learned loss parameters) ---
    step_fn = torch.compile(objective) if config.compile else objective
    if dist.enabled and dist.device.type == "cuda":
        # batch statistics over the global batch, not each GPU's share (GPU-only in torch)
        step_fn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(step_fn)
    if dist.enabled:
        step_fn = DistributedDataParallel(step_fn, device_ids=[dist.device.index]
                                          if dist.device.type == "cuda" else None)
    amp_dtype = runtime.amp_dtype(config.amp, dist.device)
    progress = dist.is_main and sys.stderr.isatty()

    # --- epochs: train, evaluate, checkpoint ---
    metrics = None
    for epoch in range(start_epoch, config.epochs):
        tic = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        step_fn.train()
        train, steps = loop.train_epoch(step_fn, loader, optimizer, scheduler, device=dist.device,
                                        first_step=step, grad_accum=config.grad_accum,
                                        grad_clip=config.grad_clip, amp_dtype=amp_dtype,
                                        ema=ema, log_every=config.log_every,
                                        show_progress=progress)
        step += steps_per_epoch
        record = {"epoch": epoch, "step": step, "train_loss": train["loss"],
                  "train_acc": train["acc"], "epoch_s": time.perf_counter() - tic,
                  "train_samples": len(train_set)}
        if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
            metrics = evaluate(objective, test_set, config, dist, amp_dtype, ema, record)
        if dist.is_main:
            append_log(log_path, steps + [record])
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "margin": None if objective.margin is None else objective.margin.state_dict(),
                "ema": None if ema is None else ema.state_dict(),
                "scheduler": scheduler.state_dict(), "config": to_dict(config),
                "merges": [list(m) for m in tokenizer.merges], "classes": list(classes),
                "quick_gelu": model.clip.config.quick_gelu,  # the towers' activation
                "epoch": epoch, "step": step, "rng": capture_rng(generator),
                "world_size": dist.world_size})  # read back by resume() and evaluate.py
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in record.items()}), flush=True)
    if metrics is None:  # resumed a finished run: evaluate its final weights
        metrics = evaluate(objective, test_set, config, dist, amp_dtype, ema, {})

    # --- reports ---
    if dist.is_main:
        reports.write_report(run_dir, metrics, classes, parse_views(config.views),
                             config=to_dict(config), log=read_log(log_path))
    return metrics


def evaluate(objective, test_set, config: TrainConfig, dist: runtime.DistInfo, amp_dtype,
             ema: loop.EMA | None, record: dict) -> dict:
    """Held-out metrics of the run's model, adding test_acc (and test_acc_ema) to `record`.
    With an EMA, the averaged weights are the run's result, reported and kept."""
    metrics = loop.evaluate_split(objective, test_set, config, dist, amp_dtype)
    record["test_acc"] = metrics["accuracy"]
    if ema is not None:
        metrics = loop.evaluate_split(objective, test_set, config, dist, amp_dtype, ema.model)
        record["test_acc_ema"] = metrics["accuracy"]
    return metrics


def pretrain(config: TrainConfig, dist: runtime.DistInfo, argv: list[str]) -> list[dict]:
    """Pretrain facet's CLIP the way OpenAI trained theirs, on captioned built-in faces: images
    of scans of new people paired with sentences written from their ground truth, the towers
    trained from scratch with the symmetric InfoNCE loss. Each epoch ends with zero-shot
    accuracy on the built-in BU-3DFE-like set, none of whose people pretraining sees. Writes
    out/<name>/clip.pt in OpenAI's layout (+ the BPE merges): `--pretrained=<that file>`."""
    # --- data: the pretraining set, and the built-in faces to test zero-shot on ---
    run_dir = runtime.check_writable(Path(config.out) / (config.name or config.preset), "--out")
    if config.pretrained:  # the weights and their BPE (or --vocab) are read before the rendering
        tokenizer = build.build_tokenizer(config)
        pretrained = load_openai(build.pretrained_path(config))
    views, truths = build.pretraining_set(config, dist, progress=dist.is_main)
    yaws = [yaw for yaw, _ in parse_views(config.views)]
    train_set = CaptionedViews(views, truths, yaws, train=True, seed=config.seed)
    root = build.dataset_root(config, dist)
    samples, _ = build.select_samples(root, config)
    classes = class_names(samples)
    cache, kept, _ = build.fill_cache(samples, config, dist)
    test_set = build.make_dataset(kept, cache, config, classes, train=False)
    if dist.is_main:
        people = len(truths) // build.SCANS_PER_PERSON
        print(f"pretraining on {len(train_set)} captioned scans of {people} people; zero-shot "
              f"test: {len(test_set)} scans of {root.name}")

    # --- model: CLIP from scratch, its BPE learned on the captions and the class prompts; or
    # continued from CLIP weights in OpenAI's layout (--pretrained), read as train.py reads them
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if config.pretrained:
        clip = CentredCLIP.identity(pretrained.train())
    else:
        tokenizer = build.caption_tokenizer(config, train_set)
        clip = CentredCLIP(build.build_clip(config, tokenizer), *build.image_statistics(views))
    clip = clip.to(dist.device)

    def zero_shot() -> dict:
        """The CLIP as it would be saved now, classifying the built-in set by its prompts."""
        objective = build.zero_shot_objective(config, clip.folded(), tokenizer, classes,
                                              generator)
        return loop.evaluate_split(objective, test_set, config, dist)
    objective = loop.ContrastiveObjective(clip, tokenizer, config.augment, config.mode)

    # --- optimizer and schedule, as for FACET-VLM ---
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=config.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=config.batch_size // dist.world_size,
                        sampler=sampler, collate_fn=collate_captions, num_workers=config.workers,
                        drop_last=True)  # InfoNCE wants full batches of negatives
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    optimizer = torch.optim.AdamW(loop.parameter_groups(objective, config.weight_decay),
                                  lr=config.lr, betas=(0.9, config.adam_beta2), eps=1e-6)
    scheduler = loop.cosine_schedule(optimizer, round(config.warmup * steps_per_epoch),
                                     steps_per_epoch * config.epochs, config.min_lr_ratio)
    ckpt_path, log_path = run_dir / "ckpt.pt", run_dir / "log.jsonl"
    with runtime.run_lock(run_dir) if dist.is_main else contextlib.nullcontext():
        start_epoch, step = 0, 0
        if (ckpt_path.is_file() and not config.resume):
            raise ValueError(f"{ckpt_path} exists: pass --resume to continue that run, or "
                             "--name=NEW for a new one (runs are never overwritten)")
        if config.resume and ckpt_path.is_file():
            start_epoch, step = resume(ckpt_path, config, objective, optimizer, scheduler,
                                       generator, None)
        elif config.resume and dist.is_main:
            print(f"--resume: {ckpt_path} does not exist yet; starting that run from epoch 0")
        if dist.is_main:
            trim_log(log_path, step)
        step_fn = DistributedDataParallel(objective) if dist.enabled else objective

        # --- epochs: train, zero-shot test, checkpoint ---
        metrics = None
        for epoch in range(start_epoch, config.epochs):
            tic = time.perf_counter()
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            step_fn.train()
            train, steps = loop.train_epoch(step_fn, loader, optimizer, scheduler,
                                            device=dist.device, first_step=step,
                                            grad_accum=config.grad_accum,
                                            grad_clip=config.grad_clip, log_every=config.log_every,
                                            show_progress=dist.is_main and sys.stderr.isatty())
            step += steps_per_epoch
            metrics = zero_shot()
            record = {"epoch": epoch, "step": step, "train_loss": train["loss"],
                      "train_acc": train["acc"], "test_acc": metrics["accuracy"],
                      "epoch_s": time.perf_counter() - tic}
            if dist.is_main:
                append_log(log_path, steps + [record])
                save_checkpoint(ckpt_path, {
                    "model": clip.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "config": to_dict(config),
                    "merges": [list(m) for m in tokenizer.merges], "classes": list(classes),
                    "epoch": epoch, "step": step, "rng": capture_rng(generator)})
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in record.items()}), flush=True)
        if metrics is None:  # resumed after the last epoch
            metrics = zero_shot()

        # --- the result, in OpenAI's layout; reports ---
        if dist.is_main:
            save_openai(run_dir / "clip.pt", clip.folded(), tokenizer.merges,
                        made_by=made_by(config, argv),
                        render={"views": config.views, "image_size": config.image_size,
                                "mode": config.mode})  # how its images were drawn
            reports.write_report(run_dir, metrics, classes, parse_views(config.views),
                                 config=to_dict(config), log=read_log(log_path))
            print(f"zero-shot on {len(test_set)} unseen scans: accuracy "
                  f"{metrics['accuracy']:.4f}; wrote {run_dir / 'clip.pt'} "
                  f"(--pretrained={run_dir / 'clip.pt'})")
    return [metrics]


def made_by(config: TrainConfig, argv: list[str]) -> dict:
    """How a result was made: the command (`argv`, its options), the seed, the git commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except OSError:
        commit = ""
    return {"command": shlex.join(["python", "train.py", *argv]), "seed": config.seed,
            "commit": commit or "unknown"}


def resume(path: Path, config: TrainConfig, objective, optimizer, scheduler,
           generator: torch.Generator, ema: loop.EMA | None) -> tuple[int, int]:
    """Load a checkpoint into the training state; returns (first epoch to run, optimizer step).

    Checkpoints are written at the end of an epoch, so the next epoch starts from a clean
    boundary: the sampler's order is a function of (seed, epoch) and every random stream the
    run draws from is restored, so the continued run repeats the uninterrupted one exactly.

    Raises:
        ValueError: the config differs from the checkpoint's in an option that changes the run.
    """
    ckpt = load_checkpoint(path, required=("model", "config", "optimizer", "scheduler", "rng"))
    changed = sorted(k for k, v in to_dict(config).items()
                     if ckpt["config"].get(k) != v and k not in RESUMABLE)
    if changed:
        was = ", ".join(f"--{k}={ckpt['config'].get(k)!r}" for k in changed)
        raise ValueError(f"{path}: cannot resume with changed options {changed} (the run used "
                         f"{was}); start a new --name instead")
    load_weights(objective.model, ckpt["model"], path)
    if objective.margin is not None:
        objective.margin.load_state_dict(ckpt["margin"])
    if ema is not None:
        ema.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng(ckpt["rng"], generator)
    return ckpt["epoch"] + 1, ckpt["step"]


def write_fold_table(folder: Path, results: list[dict]) -> None:
    """folds.json / folds.md: every fold's scores, their mean +- std, and the pooled scores."""
    table = reports.fold_table(results, ("accuracy", "macro_f1", "uar", "uf1"))
    pooled = reports.pooled_metrics(results)
    write_atomic(folder / "folds.json", json.dumps(
        {"folds": table, "pooled": {k: pooled[k] for k in ("accuracy", "macro_f1", "uar",
                                                           "uf1", "n")}}, indent=1))
    text = reports.fold_table_markdown(table, pooled)
    write_atomic(folder / "folds.md", text)
    print(text)


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


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as err:  # configuration, data, disk: no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
