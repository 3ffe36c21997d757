"""Train FACET-VLM: one CPU, one GPU, or many with `torchrun` (plain torch DDP).

    python train.py                                   # synthetic BU-3DFE, CPU preset, one fold
    python train.py --epochs=3 --fold=all --folds=10  # every fold + a mean +- std table
    python train.py --preset=bosphorus                # the Bosphorus-like .bnt range scans
    torchrun --standalone --nproc_per_node=2 train.py --batch_size=32
    python train.py --resume                          # continue out/<name>/ckpt.pt exactly

Options: every `TrainConfig` field (facet/config.py) is a `--key=value`; `--help` lists them.
A run writes out/<name>/ (out/<name>/fold<i>/ with --fold=all): ckpt.pt (every epoch,
atomically), log.jsonl, metrics.json (with the command, machine and wall time:
`evaluate.py --table` reads them), predictions.csv, confusion.png, curves.png,
view_weights.png.

The script reads top to bottom: config -> data -> model and objective -> `facet.loop.fit`
(optimizer, schedule, epochs of train / test / checkpoint) -> reports; `pretrain` is the same
story for facet's CLIP with another objective, data and test. The DDP story: every rank builds
the same model from the same seed (`train_fold`), DDP averages gradients, a DistributedSampler
gives each rank its share of every epoch (`set_epoch` reshuffles), evaluation counts are summed
over ranks (`facet.loop`), and rank 0 alone prints and writes files.
"""
from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Callable

import facet  # noqa: F401 -- first: sets OpenMP's passive wait before torch loads

import numpy as np
import torch

from facet import build, loop, reports, runtime
from facet.atomic import write_atomic
from facet.camera import parse_views
from facet.checkpoint import load_openai, save_openai
from facet.config import TrainConfig, for_fold, help_text, parse_args, to_dict
from facet.data.datasets import class_names, collate, validation_split
from facet.faces import pretraining
from facet.model import CentredCLIP, zero_shot_model
from facet.objective import ContrastiveObjective


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\n" + help_text())
        return []
    started = time.perf_counter()  # a run's report gives its wall time from here
    config = parse_args(argv)
    runtime.keep_freed_memory()  # no page faults for the rasterizer's re-allocated temporaries
    threads = torch.get_num_threads()
    try:
        with runtime.distributed(config.device) as dist:
            torch.set_num_threads(config.threads or runtime.default_threads(dist.device))
            if config.task == "pretrain":
                return pretrain(config, dist, argv)
            return run(config, dist, argv, started)
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process (tests, notebooks)


def run(config: TrainConfig, dist: runtime.DistInfo, argv: list[str], started: float
        ) -> list[dict]:
    """Prepare the data once, then train the chosen fold (or every fold). `argv` and `started`
    (a `time.perf_counter()`) go into the reports: the command and its wall time."""
    # --- data: every check before the slow work (generation, rendering, training) ---
    if config.batch_size % dist.world_size:
        raise ValueError(f"--batch_size={config.batch_size} must be a multiple of the "
                         f"{dist.world_size} processes")
    name = config.name or config.preset
    out = runtime.check_writable(Path(config.out) / name, "--out")  # creates nothing yet
    root = build.dataset_root(config, dist, say=to_stderr)
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
    # how the result was made, in every report: what `facet.results` tabulates
    provenance = {"made_by": runtime.made_by("train.py", argv, config.seed),
                  "dataset_kind": index.kind, "machine": runtime.machine(dist.device),
                  "threads": torch.get_num_threads(), "processes": dist.world_size}

    results = []
    for i in folds:
        train_samples, test_samples = ([s for s in part if s.path in keep] for part in splits[i])
        build.check_split(train_samples, test_samples, classes, f"fold {i} after rendering")
        val_set = None
        fold_config = for_fold(config, i)
        if config.val_subjects:  # tune on people of the training fold; the test fold read once
            train_samples, val_samples = validation_split(train_samples, config.val_subjects,
                                                          seed=i)
            val_samples = build.scored(val_samples, config)
            build.check_split(train_samples, val_samples, classes, f"fold {i} validation")
            val_set = build.make_dataset(val_samples, cache, fold_config, classes, train=False)
        train_set = build.make_dataset(train_samples, cache, fold_config, classes, train=True)
        test_set = build.make_dataset(test_samples, cache, fold_config, classes, train=False)
        if dist.is_main:
            validation = f"{len(val_set)} validation / " if val_set else ""
            print(f"fold {i}: {len(train_set)} train / {validation}{len(test_set)} test "
                  f"samples -> {run_dirs[i]}")
        with runtime.run_lock(run_dirs[i]) if dist.is_main else contextlib.nullcontext():
            # again, under the lock: a run of this --name may have finished while this one
            # was rendering, after the check above
            refuse_overwrite(run_dirs[i], config)
            if dist.is_main:
                reports.write_skipped(run_dirs[i] / "skipped.csv", index.skipped, failed)
            results.append(train_fold(fold_config, dist, tokenizer, train_set, test_set,
                                      classes, run_dirs[i], provenance, started, val_set))
        if dist.is_main:
            m = results[-1]
            print(f"fold {i}: test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
                  f"per intensity {m.get('per_intensity')}")
    if config.fold == "all" and dist.is_main:
        write_fold_table(out, results, {**provenance, "seconds": seconds_since(started),
                                        "resumed": config.resume})
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
               classes: tuple[str, ...], run_dir: Path, provenance: dict, started: float,
               val_set=None) -> dict:
    """Train one fold (resuming if asked), evaluate it, write its files; returns test metrics.
    With a validation set, the epochs are scored on it and the test fold once, at the end.
    metrics.json also gets `provenance` and the seconds this fold and the command have taken
    (the whole command's wall time when it ran one fold)."""
    fold_started = time.perf_counter()
    resumed = config.resume and (run_dir / "ckpt.pt").is_file()  # the times are this part's
    # --- model: the same seed on every rank gives every rank the same initial weights ---
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # augmentation + prompt draws
    model = build.build_model(config, tokenizer, len(classes), train_set)
    objective = build.build_objective(config, model, tokenizer, classes, generator,
                                      num_aus=len(train_set.aus))
    objective.to(dist.device)

    # --- the epochs, scored on the held-out people by the class-prompt ensemble ---
    prompts = build.class_prompts(config, model, tokenizer, classes)
    amp = runtime.amp_dtype(config.amp, dist.device)

    def scored_on(dataset):
        return lambda m: loop.evaluate(m, dataset, classes, prompts, config, dist, amp)

    metrics = loop.fit(
        objective, train_set, collate, config, dist, run_dir,
        test=scored_on(val_set if val_set is not None else test_set),
        held_out="test" if val_set is None else "val",
        final=None if val_set is None else scored_on(test_set),
        generator=generator, say=say,
        saved=checkpoint_extras(model, tokenizer, classes))

    # --- reports ---
    if dist.is_main:
        seconds = {"fold": seconds_since(fold_started), "since_start": seconds_since(started)}
        reports.write_report(run_dir, metrics, classes, parse_views(config.views),
                             config=to_dict(config), **provenance, seconds=seconds,
                             resumed=resumed, log=loop.read_log(run_dir / "log.jsonl"))
        if config.frames > 1 and (config.onset != "none" or config.apex_motion > 0):
            # what the model compared, for a sequence of each class
            write_onset_picture(test_set, classes, config, run_dir / "onset.png")
    return metrics


def checkpoint_extras(model, tokenizer, classes: tuple[str, ...]) -> dict:
    """What a checkpoint carries beside the training state, read back by evaluate.py: the
    classes, the BPE merges and the towers' activation (nothing to read for the CNN baseline)."""
    if tokenizer is None:  # the CNN baseline reads no text
        return {"merges": [], "classes": list(classes)}
    return {"merges": [list(m) for m in tokenizer.merges], "classes": list(classes),
            "quick_gelu": model.clip.config.quick_gelu}


def write_onset_picture(test_set, classes: tuple[str, ...], config: TrainConfig,
                        path: Path) -> None:
    """onset.png: the first held-out sequence of each class, onset vs apex, frontal view."""
    first_of = {}
    for i, sample in enumerate(test_set.samples):
        first_of.setdefault(sample.label, i)
    shown = [c for c in classes if c in first_of]
    yaws = [abs(yaw) for yaw, _ in parse_views(config.views)]
    alpha = (f"change scaled to RMS {config.change_rms:g}" if config.change_rms
             else f"{config.magnify:g} x change")
    input_title = {"none": "the apex frame", "difference": f"0.5 + {alpha}",
                   "magnified": f"onset + {alpha}"}[config.onset]
    apex_title = (f"apex, motion scaled\nto {config.apex_motion:g} % of the face"
                  if config.apex_motion else "apex\n(aligned to the onset)")
    indices = [first_of[c] for c in shown]
    reports.plot_onset_change([test_set.onset_and_apex(i) for i in indices],
                              [test_set.apex_input(i) for i in indices], shown, path,
                              input_title, apex_title, view=yaws.index(min(yaws)))


def pretrain(config: TrainConfig, dist: runtime.DistInfo, argv: list[str]) -> list[dict]:
    """Pretrain facet's CLIP the way OpenAI trained theirs, on captioned built-in faces: images
    of scans of new people paired with sentences written from their ground truth, the towers
    trained from scratch with the symmetric InfoNCE loss. Each epoch ends with zero-shot
    accuracy on validation people of the pretraining stream (`--pretrain_val_people`, whom
    pretraining never sees), what a recipe is chosen by; the built-in BU-3DFE-like set, none
    of whose people pretraining sees either, is the test, read once after the last epoch.
    Writes out/<name>/clip.pt in OpenAI's layout (+ the BPE merges): `--pretrained=<that
    file>`."""
    # --- data: the pretraining set, its validation people, the built-in faces to test on ---
    run_dir = runtime.check_writable(Path(config.out) / (config.name or config.preset), "--out")
    if config.pretrained:  # the weights and their BPE (or --vocab) are read before the rendering
        tokenizer = build.build_tokenizer(config)
        pretrained = load_openai(build.pretrained_path(config))
    settings = build.render_settings(config)
    views, truths = pretraining.pretraining_set(
        config.pretrain_scans, settings, build.cache_folder(config), config.render_workers,
        dist, progress=dist.is_main)
    yaws = [yaw for yaw, _ in settings.views]
    train_set = pretraining.CaptionedViews(views, truths, yaws, train=True, seed=config.seed)
    root = build.dataset_root(config, dist, say=to_stderr)
    samples, _ = build.select_samples(root, config)
    classes = class_names(samples)
    cache, kept, _ = build.fill_cache(samples, config, dist)
    test_set = build.make_dataset(kept, cache, config, classes, train=False)
    val_set = pretraining.EmotionViews(*pretraining.validation_set(
        config.pretrain_val_people, settings, build.cache_folder(config), config.render_workers,
        dist, progress=dist.is_main), classes)
    if dist.is_main:
        people = len(truths) // pretraining.SCANS_PER_PERSON
        print(f"pretraining on {len(train_set)} captioned scans of {people} people; zero-shot "
              f"validation: {len(val_set)} scans of {config.pretrain_val_people} other people; "
              f"test, at the end: {len(test_set)} scans of {root.name}")

    # --- model: CLIP from scratch, its BPE learned on the captions and the class prompts; or
    # continued from CLIP weights in OpenAI's layout (--pretrained), read as train.py reads them
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if config.pretrained:
        clip = CentredCLIP.identity(pretrained.train())
    else:
        tokenizer = build.caption_tokenizer(config, train_set)
        clip = CentredCLIP.for_tower(build.build_clip(config, tokenizer),
                                     *pretraining.image_statistics(views))
    clip = clip.to(dist.device)
    objective = ContrastiveObjective(clip, tokenizer, config.augment, config.mode)

    def zero_shot_on(dataset) -> Callable[[CentredCLIP], dict]:
        """The CLIP as it would be saved now, classifying `dataset` by its class prompts."""
        def scored(centred: CentredCLIP) -> dict:
            model = zero_shot_model(centred.folded(), build.view_slots(config))
            prompts = build.class_prompts(config, model, tokenizer, classes)
            return loop.evaluate(model, dataset, classes, prompts, config, dist)
        return scored

    # --- the epochs, as for FACET-VLM, under the run lock ---
    with runtime.run_lock(run_dir) if dist.is_main else contextlib.nullcontext():
        refuse_overwrite(run_dir, config)
        metrics = loop.fit(objective, train_set, pretraining.collate_captions, config, dist,
                           run_dir, test=zero_shot_on(val_set), held_out="val",
                           final=zero_shot_on(test_set), generator=generator,
                           saved={"merges": [list(m) for m in tokenizer.merges],
                                  "classes": list(classes)},
                           drop_last=True, say=say)  # InfoNCE wants full batches of negatives

        # --- the result, in OpenAI's layout; reports ---
        if dist.is_main:
            save_openai(run_dir / "clip.pt", clip.folded(), tokenizer.merges,
                        made_by=runtime.made_by("train.py", argv, config.seed),
                        render={"views": config.views, "image_size": config.image_size,
                                "mode": config.mode})  # how its images were drawn
            reports.write_report(run_dir, metrics, classes, parse_views(config.views),
                                 reports.PRETRAINING_CURVES, config=to_dict(config),
                                 log=loop.read_log(run_dir / "log.jsonl"))
            print(f"zero-shot on {len(val_set)} validation scans: accuracy "
                  f"{metrics['validation']['accuracy']:.4f}; on {len(test_set)} test scans: "
                  f"{metrics['accuracy']:.4f}; wrote {run_dir / 'clip.pt'} "
                  f"(--pretrained={run_dir / 'clip.pt'})")
    return [metrics]


def say(line: str) -> None:
    """What the training loop reports (rank 0): the resume, one JSON record per epoch."""
    print(line, flush=True)


def to_stderr(line: str) -> None:
    """Announcements beside the results (a one-off dataset generation)."""
    print(line, file=sys.stderr)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model initialisation, workers)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seconds_since(start: float) -> float:
    """Wall seconds since `start` (a `time.perf_counter()`), to 0.1 s."""
    return round(time.perf_counter() - start, 1)


def write_fold_table(folder: Path, results: list[dict], provenance: dict) -> None:
    """folds.json / folds.md: every fold's scores, their mean +- std, and the pooled scores;
    folds.json also holds `provenance` (the command, its wall time, the machine)."""
    table = reports.fold_table(results, ("accuracy", "macro_f1", "uar", "uf1"))
    pooled = reports.pooled_metrics(results)
    write_atomic(folder / "folds.json", json.dumps(
        {"folds": table, "pooled": {k: pooled[k] for k in ("accuracy", "macro_f1", "uar",
                                                           "uf1", "n")},
         **provenance}, indent=1))
    text = reports.fold_table_markdown(table, pooled)
    write_atomic(folder / "folds.md", text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as err:  # configuration, data, disk: no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
