"""Train FACET-VLM: one CPU, one GPU, or many with `torchrun` (plain torch DDP).

    python train.py                                   # synthetic BU-3DFE, CPU preset, one fold
    python train.py --epochs=3 --fold=all --folds=10  # every fold + a mean +- std table
    torchrun --standalone --nproc_per_node=2 train.py --batch_size=32
    python train.py --resume                          # continue out/<name>/ckpt.pt exactly

Options: facet/train_config.py (every `TrainConfig` field is a `--key=value`). A run writes
out/<name>/ (or out/<name>/fold<i>/ with --fold=all): ckpt.pt (every epoch, atomically),
log.jsonl, metrics.json, confusion.png, curves.png, view_weights.png.

The DDP story: `facet.distributed.distributed()` joins the process group (gloo on CPU, NCCL on
GPU) and leaves it in `finally`; each rank reads its share of every epoch through a
DistributedSampler (`set_epoch` reshuffles), DDP averages gradients (skipped with `no_sync` on
the micro-batches of an accumulated step), evaluation counts are summed over ranks, and only
rank 0 prints, shows progress bars and writes files.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from facet import engine, experiment, viz
from facet.augment import mix_view_augment
from facet.checkpoint import (capture_rng, load_checkpoint, load_weights, restore_rng,
                              save_checkpoint)
from facet.config import config_from_args, help_text, to_dict
from facet.cpu_memory import keep_freed_memory
from facet.distributed import DistInfo, distributed
from facet.metrics import fold_table, fold_table_markdown, summarize
from facet.protocols import class_names
from facet.datasets import view_statistics
from facet.train_config import PRESETS, TrainConfig, for_fold, parse_views, validate

# fields that may differ between a run and its --resume (they do not change the computation)
RESUMABLE_CHANGES = {"resume", "name", "out", "workers", "render_workers", "threads",
                     "log_every", "eval_every", "eval_batch_size", "device"}


def collate(items: list) -> dict:
    """FaceViewsDataset items -> a batch dict (see facet/engine.py)."""
    views, labels, metas = zip(*items)
    return {"views": torch.stack(views),  # (B, T, V, 3, H, W)
            "label": torch.tensor(labels, dtype=torch.long),
            "intensity": torch.tensor([m["intensity"] for m in metas], dtype=torch.long),
            "meta": list(metas)}


def make_predict(config: TrainConfig, classes: tuple[str, ...]):
    """(model, batch) -> (logits (B, K), mean view weights (B, V)), with the prompt ensemble.

    The class embeddings of the ensemble are computed once per evaluation (they do not depend
    on the batch) unless prompts carry per-sample metadata.
    """
    cached: dict = {}

    def predict(model, batch):
        kwargs = {}
        if config.text_head and config.metadata_prompts:
            kwargs["class_tokens"] = model.prompt_tokens(list(classes), batch["meta"])
        elif config.text_head:
            if "p" not in cached:
                cached["p"] = model.encode_classes(model.prompt_tokens(list(classes)))
            kwargs["class_embeddings"] = cached["p"]
        out = model(batch["views"], **kwargs)
        return out.logits, out.view_weights.float().mean(dim=1)  # (B, V) over frames

    return predict


def evaluate_split(model, dataset, config: TrainConfig, dist: DistInfo, classes,
                   amp_dtype: torch.dtype | None) -> dict:
    """Metrics dict of the FacetVLM `model` on `dataset` (this rank's shard, counts summed over
    ranks), with the mean view weights per true class."""
    shard = Subset(dataset, engine.shard_indices(len(dataset), dist.rank, dist.world_size))
    loader = DataLoader(shard, batch_size=config.eval_batch_size, collate_fn=collate,
                        num_workers=config.workers)
    counts = engine.evaluate(model, loader, make_predict(config, classes),
                             num_classes=len(classes), num_views=len(parse_views(config.views)),
                             device=dist.device, amp_dtype=amp_dtype,
                             show_progress=dist.is_main and sys.stderr.isatty())
    metrics = summarize(counts["confusion"], list(classes), counts["intensity"])
    per_class = counts["view_weight_sum"] / counts["count"].clamp_min(1).unsqueeze(1).double()
    metrics["view_weights"] = {c: w.tolist() for c, w in zip(classes, per_class)}
    return metrics


def amp_dtype_for(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast when asked for and supported (GPUs with bf16, or CPU when forced)."""
    if not config.amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None  # fp16 would need a GradScaler; plain fp32 is the honest fallback
    return torch.bfloat16


def train_fold(config: TrainConfig, dist: DistInfo, train_set, test_set, classes,
               merges: list, run_dir: Path) -> dict:
    """Train one fold (resuming if asked), evaluate it, write its files; returns test metrics."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # augmentation + prompt draws
    tokenizer = experiment.build_tokenizer(config, merges)
    objective = experiment.Objective(
        experiment.build_model(config, tokenizer, len(classes)), config).to(dist.device)
    if config.center_inputs and not config.pretrained:
        # every rank averages the whole training split, so all ranks hold the same statistics
        objective.model.set_input_statistics(*view_statistics(train_set))
    world_batch = config.batch_size // dist.world_size
    sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=config.seed)
    loader = DataLoader(train_set, batch_size=world_batch, sampler=sampler, collate_fn=collate,
                        num_workers=config.workers, pin_memory=dist.device.type == "cuda")
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    optimizer = torch.optim.AdamW(engine.parameter_groups(objective, config.weight_decay),
                                  lr=config.lr, betas=(0.9, config.adam_beta2),
                                  eps=1e-6)  # CLIP's eps
    scheduler = engine.cosine_schedule(optimizer, round(config.warmup * steps_per_epoch),
                                       steps_per_epoch * config.epochs, config.min_lr_ratio)
    ckpt_path, log_path = run_dir / "ckpt.pt", run_dir / "log.jsonl"
    start_epoch, step = 0, 0
    if config.resume and ckpt_path.is_file():
        start_epoch, step = resume(ckpt_path, config, objective, optimizer, scheduler, generator)
        if dist.is_main:
            records = [r for r in _read_log(log_path) if r.get("step", 0) <= step]
            log_path.write_text("".join(json.dumps(r) + "\n" for r in records))
            print(f"resumed {ckpt_path} at epoch {start_epoch} (step {step})")
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    model = objective
    if config.compile:
        model = torch.compile(model)
    if dist.enabled and dist.device.type == "cuda":
        # batch statistics over the global batch, not each GPU's share (GPU-only in torch)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist.enabled:
        model = DistributedDataParallel(model, device_ids=[dist.device.index]
                                        if dist.device.type == "cuda" else None)
    amp_dtype = amp_dtype_for(config, dist.device)
    raw = objective.model

    def compute_loss(m, batch):
        views = batch["views"]
        if config.augment:
            views = mix_view_augment(views, generator, labels=batch["label"],
                                     mix_prob=config.mix_prob)
        tokens = None
        if config.text_head:
            meta = batch["meta"] if config.metadata_prompts else None
            draw = generator if config.train_prompts == "sample" else None  # None: all prompts
            tokens = raw.prompt_tokens(list(classes), meta, generator=draw)
        return m(views, batch["label"], tokens)

    def on_step(record):
        nonlocal step
        step += 1
        if dist.is_main and (step % config.log_every == 0 or step == 1):
            _append_log(log_path, {"step": step, **record})

    metrics = None
    for epoch in range(start_epoch, config.epochs):
        tic = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        model.train()
        train = engine.train_epoch(model, loader, optimizer, scheduler, compute_loss,
                                   device=dist.device, grad_accum=config.grad_accum,
                                   grad_clip=config.grad_clip, amp_dtype=amp_dtype,
                                   show_progress=dist.is_main and sys.stderr.isatty(),
                                   on_step=on_step)
        record = {"epoch": epoch, "step": step, "train_loss": train["loss"],
                  "train_acc": train["acc"], "epoch_s": time.perf_counter() - tic,
                  "train_samples": len(train_set)}
        if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
            metrics = evaluate_split(raw, test_set, config, dist, classes, amp_dtype)
            record["test_acc"] = metrics["accuracy"]
        if dist.is_main:
            _append_log(log_path, record)
            save_checkpoint(ckpt_path, {
                "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                "margin": None if objective.margin is None else objective.margin.state_dict(),
                "scheduler": scheduler.state_dict(), "config": to_dict(config),
                "merges": [list(m) for m in tokenizer.merges], "classes": list(classes),
                "epoch": epoch, "step": step, "rng": capture_rng(generator),
                "world_size": dist.world_size})  # read back by resume() and evaluate.py
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
            print(json.dumps(shown), flush=True)
    if metrics is None:  # resumed a finished run: evaluate its final weights
        metrics = evaluate_split(raw, test_set, config, dist, classes, amp_dtype)
    if dist.is_main:
        write_reports(run_dir, metrics, classes, config)
    return metrics


def resume(path: Path, config: TrainConfig, objective, optimizer, scheduler,
           generator: torch.Generator) -> tuple[int, int]:
    """Load a checkpoint into the training state; returns (first epoch to run, optimizer step).

    Checkpoints are written at the end of an epoch, so the next epoch starts from a clean
    boundary: the sampler's order is a function of (seed, epoch) and every random stream the
    run draws from is restored, so the continued run repeats the uninterrupted one exactly.

    Raises:
        ValueError: the config differs from the checkpoint's in an option that changes the run.
    """
    ckpt = load_checkpoint(path)
    changed = {k for k, v in to_dict(config).items() if ckpt["config"].get(k) != v}
    if changed - RESUMABLE_CHANGES:
        raise ValueError(f"{path}: cannot resume with changed options "
                         f"{sorted(changed - RESUMABLE_CHANGES)}; start a new --name instead")
    load_weights(objective.model, ckpt["model"], path)
    if objective.margin is not None:
        objective.margin.load_state_dict(ckpt["margin"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng(ckpt["rng"], generator)
    return ckpt["epoch"] + 1, ckpt["step"]


def write_reports(run_dir: Path, metrics: dict, classes, config: TrainConfig) -> None:
    """metrics.json, confusion.png, curves.png, view_weights.png of one run folder."""
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "config": to_dict(config)},
                                                     indent=1))
    viz.plot_confusion(metrics["confusion"], classes, run_dir / "confusion.png")
    viz.plot_curves(_read_log(run_dir / "log.jsonl"), run_dir / "curves.png")
    names = [f"yaw {y:+g} pitch {p:+g}" for y, p in parse_views(config.views)]
    viz.plot_view_weights([metrics["view_weights"][c] for c in classes], names,
                          run_dir / "view_weights.png", class_names=list(classes))


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(config: TrainConfig, dist: DistInfo) -> list[dict]:
    """Prepare data once, then train the chosen fold (or every fold). Returns test metrics."""
    if config.batch_size % dist.world_size:
        raise ValueError(f"--batch_size={config.batch_size} must be a multiple of the "
                         f"{dist.world_size} processes")
    root = experiment.dataset_root(config, dist)
    samples, kind = experiment.select_samples(root, config)
    classes = class_names(samples)
    splits = experiment.make_splits(samples, config)
    folds = range(len(splits)) if config.fold == "all" else [config.fold]
    if config.split == "loso" and config.fold != "all" and not 0 <= config.fold < len(splits):
        raise ValueError(f"--fold={config.fold}: leave-one-subject-out has {len(splits)} folds")
    name = config.name or config.preset
    run_dirs = {i: Path(config.out) / name / (f"fold{i}" if config.fold == "all" else "")
                for i in folds}
    for i in folds:  # every check before the (slow) rendering and training
        experiment.check_split(*splits[i], classes, f"fold {i} of {root}")
        if (run_dirs[i] / "ckpt.pt").is_file() and not config.resume:
            raise ValueError(f"{run_dirs[i] / 'ckpt.pt'} exists: pass --resume to continue "
                             "that run, or --name=NEW for a new one (runs are never overwritten)")
    cache, kept, failed = experiment.fill_cache(samples, config, dist)
    if failed and not kept:
        raise ValueError(f"{root}: no sample could be rendered ({len(failed)} failures; first: "
                         f"{failed[0][0]}: {failed[0][1]})")
    if dist.is_main:
        print(f"{kind} at {root}: {len(kept)} samples, {len({s.subject for s in kept})} "
              f"subjects, classes {list(classes)}; {len(failed)} failed to render")
        for path, reason in failed[:5]:
            print(f"  render failed {path}: {reason}")
    keep = set(s.path for s in kept)
    merges = [list(m) for m in experiment.build_tokenizer(config).merges]
    results = []
    for i in folds:
        train_s, test_s = ([s for s in part if s.path in keep] for part in splits[i])
        experiment.check_split(train_s, test_s, classes, f"fold {i} after rendering")
        fold_config = for_fold(config, i)
        run_dir = run_dirs[i]
        train_set = experiment.make_dataset(train_s, cache, fold_config, classes, train=True)
        test_set = experiment.make_dataset(test_s, cache, fold_config, classes, train=False)
        if dist.is_main:
            print(f"fold {i}: {len(train_set)} train / {len(test_set)} test samples -> {run_dir}")
        results.append(train_fold(fold_config, dist, train_set, test_set, classes, merges,
                                  run_dir))
        if dist.is_main:
            m = results[-1]
            print(f"fold {i}: test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
                  f"per intensity {m.get('per_intensity')}")
    if config.fold == "all" and dist.is_main:
        table = fold_table(results, ("accuracy", "macro_f1", "uar"))
        out = Path(config.out) / name
        (out / "folds.json").write_text(json.dumps(table, indent=1))
        (out / "folds.md").write_text(fold_table_markdown(table))
        print(fold_table_markdown(table))
    return results


def default_threads(device: torch.device) -> int:
    """CPU threads per process: the cores shared evenly among this node's processes."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local) if device.type == "cpu" else 4


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\n" + help_text(TrainConfig, PRESETS))
        return []
    config = validate(config_from_args(PRESETS, argv, default="cpu"))
    keep_freed_memory()  # facet.cpu_memory: no page faults for re-allocated temporaries
    with distributed(config.device) as dist:
        torch.set_num_threads(config.threads or default_threads(dist.device))
        return run(config, dist)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:  # configuration / data problems: no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
