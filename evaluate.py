"""Evaluate a trained FACET-VLM checkpoint: its held-out fold, a whole dataset, or new classes.

    python evaluate.py --ckpt out/cpu/ckpt.pt                       # the fold it was tested on
    python evaluate.py --ckpt out/cpu/ckpt.pt --data /data/BU4DFE --dataset bu4dfe   # cross-dataset
    python evaluate.py --ckpt out/cpu/ckpt.pt --zero-shot "happiness,surprise,a frown"

The checkpoint is self-describing (facet/checkpoint.py): its config rebuilds the same data
pipeline (views, image size, render mode, frames) and model, its BPE merges the tokenizer.
Writes metrics.json (accuracy, per_class, macro_f1, uar, uf1, confusion, per_intensity where the
dataset has intensities, view_weights), confusion.png and view_weights.png next to the checkpoint
(or to --out), and prints a per-class table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from facet import experiment, viz
from facet.checkpoint import load_checkpoint, load_weights
from facet.cpu_memory import keep_freed_memory
from facet.config import from_dict, to_dict
from facet.distributed import DistInfo, resolve_device
from facet.train_config import TrainConfig, parse_views

import train  # the script beside this one: evaluation reuses its held-out evaluation


def load_model(ckpt: dict, device: torch.device):
    """(config, classes, model) rebuilt from a checkpoint dict, in eval mode on `device`."""
    config = from_dict(TrainConfig, ckpt["config"])
    config = dataclasses.replace(config, pretrained="")  # the weights come from the checkpoint
    classes = tuple(ckpt["classes"])
    tokenizer = experiment.build_tokenizer(config, ckpt["merges"])
    model = experiment.build_model(config, tokenizer, len(classes))
    load_weights(model, ckpt["model"], ckpt.get("path", "checkpoint"))
    return config, classes, model.to(device).eval()


def select(config: TrainConfig, args, trained_classes: tuple[str, ...], same_data: bool):
    """(samples, classes, split) to evaluate, following --data/--split/--zero-shot."""
    root = experiment.dataset_root(config)
    samples, _ = experiment.select_samples(root, config)
    split = args.split or ("test" if same_data else "all")
    if split == "test":
        if config.fold == "all" or not same_data:
            raise ValueError("--split=test needs the checkpoint's own dataset and fold; "
                             "use --split=all for another dataset")
        samples = experiment.make_splits(samples, config)[config.fold][1]
    classes = trained_classes
    if args.zero_shot:
        classes = tuple(c.strip() for c in args.zero_shot.split(",") if c.strip())
    kept = [s for s in samples if s.label in classes]
    if not kept:
        raise ValueError(f"{root}: no sample is labelled with one of {list(classes)} "
                         f"(labels there: {sorted({s.label for s in samples})})")
    return kept, classes, split


def print_table(metrics: dict) -> None:
    """Per-class accuracy (recall) and F1, then the summary metrics."""
    print(f"{'class':>14}  {'n':>5}  {'acc %':>6}  {'F1 %':>6}")
    supports = [sum(row) for row in metrics["confusion"]]
    for name, n in zip(metrics["classes"], supports):
        acc, f1 = metrics["per_class"][name], metrics["per_class_f1"][name]
        fmt = lambda x: "-" if x is None else f"{100 * x:.1f}"
        print(f"{name:>14}  {n:>5}  {fmt(acc):>6}  {fmt(f1):>6}")
    print(f"accuracy {100 * metrics['accuracy']:.2f}%  macro-F1 {100 * metrics['macro_f1']:.2f}%  "
          f"UAR {100 * metrics['uar']:.2f}%  (n = {metrics['n']})")
    if metrics.get("per_intensity"):
        print("per intensity: " + ", ".join(f"{k}: {100 * v:.1f}%"
                                             for k, v in metrics["per_intensity"].items()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
    parser.add_argument("--data", default="", help="dataset root (default: the training data)")
    parser.add_argument("--dataset", default=None, help="layout of --data (default: auto)")
    parser.add_argument("--split", choices=("test", "all"), default=None,
                        help="test: the checkpoint's held-out fold (default on its own data); "
                             "all: every sample (default on another dataset)")
    parser.add_argument("--out", default="", help="output folder (default: beside --ckpt)")
    parser.add_argument("--zero-shot", dest="zero_shot", default="",
                        help='comma-separated class names to classify with new prompts')
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--cache", default=None, help="view cache folder (default: as trained)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # facet.cpu_memory: no page faults for re-allocated temporaries

    device = resolve_device(args.device)
    ckpt = {**load_checkpoint(args.ckpt, map_location=device), "path": args.ckpt}
    config, trained_classes, model = load_model(ckpt, device)
    trained_on = ckpt["config"]["data"]
    same_data = not args.data or bool(trained_on) and Path(args.data).resolve() == Path(
        trained_on).resolve()
    if args.zero_shot and not config.text_head:
        raise ValueError(f"{args.ckpt}: a linear-head model (text_head=False) cannot classify "
                         "new class names; zero-shot needs the prompt head")
    changes = {"eval_batch_size": args.batch_size, "workers": 0, "fold": config.fold}
    if args.data:
        changes.update(data=args.data, dataset=args.dataset or "auto", intensities=None,
                       subjects=None)
    if args.cache is not None:
        changes["cache"] = args.cache
    config = dataclasses.replace(config, **changes)
    samples, classes, split = select(config, args, trained_classes, same_data)
    cache, samples, failed = experiment.fill_cache(samples, config)
    for path, reason in failed:
        print(f"render failed {path}: {reason}", file=sys.stderr)
    dataset = experiment.make_dataset(samples, cache, config, classes, train=False)

    metrics = train.evaluate_split(model, dataset, config, DistInfo(device=device), classes,
                                   train.amp_dtype_for(config, device))
    metrics.update(checkpoint=str(args.ckpt), split=split, data=config.data or "synthetic",
                   zero_shot=bool(args.zero_shot), config=to_dict(config))
    out = Path(args.out) if args.out else Path(args.ckpt).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    viz.plot_confusion(metrics["confusion"], classes, out / "confusion.png")
    names = [f"yaw {y:+g} pitch {p:+g}" for y, p in parse_views(config.views)]
    viz.plot_view_weights([metrics["view_weights"][c] for c in classes], names,
                          out / "view_weights.png", class_names=list(classes))
    print_table(metrics)
    print(f"wrote {out / 'metrics.json'}, confusion.png, view_weights.png")
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
