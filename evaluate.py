"""Evaluate a trained FACET-VLM checkpoint: its held-out fold, a whole dataset, or new classes.

    python evaluate.py --ckpt out/cpu/ckpt.pt                       # the fold it was tested on
    python evaluate.py --ckpt out/4d/ckpt.pt --data /data/BP4D --dataset bp4d      # cross-dataset
    python evaluate.py --ckpt out/4d/ckpt.pt --dataset bp4d      # ... on the built-in BP4D-like set
    python evaluate.py --ckpt out/cpu/ckpt.pt --zero-shot "happiness,surprise,a frown"
    python evaluate.py --ckpt out/cpu/ckpt.pt face.wrl seq_folder/ --out pred/  # single scans
    python evaluate.py --ckpt facet/assets/facet_clip_tiny.pt      # the pretrained CLIP, zero-shot
    python evaluate.py --table out/cpu out/bosphorus out/micro     # finished runs -> results table

The checkpoint is self-describing (facet/checkpoint.py): its config rebuilds the same data
pipeline (views, image size, render mode, frames) and model, its BPE merges the tokenizer.
Writes metrics.json (accuracy, per_class, macro_f1, uar, uf1, confusion, per_intensity where
the dataset has intensities, view_weights), predictions.csv, confusion.png and view_weights.png
into --out, by default a folder named after the evaluation beside the checkpoint (e.g.
out/cpu/eval-test/): the training run's own report is never overwritten.

With SCAN arguments (mesh files, or folders of frames for a 4D sequence) it predicts each scan
instead (facet/app/explain.py): prediction.json (probabilities, per-view predictions, view and frame
weights, saliency maps, familiarity) and one PNG sheet per scan into --out (default: predict/
beside the checkpoint), and a table on the terminal. A scan unlike the built-in faces (a
non-face, an upside-down face: facet/faces/familiarity.py) is still predicted, and marked "!" in
the table, in the JSON and on its sheet, with the reason. A scan that cannot be read or renders
blank is named and skipped; the exit code is then 1 (2: nothing could be done, with the reason).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import facet  # noqa: F401 -- first: sets OpenMP's passive wait before torch loads

import torch

from facet import results, build, loop, reports, runtime
from facet.app import explain
from facet.atomic import write_atomic
from facet.camera import format_views, parse_views
from facet.config import SYNTH_KINDS, TrainConfig, to_dict
from facet.faces import synth


def select(config: TrainConfig, split: str, classes: tuple[str, ...]):
    """The samples of `split` ("test": the checkpoint's held-out fold; "all") whose labels are
    among `classes`, a note on what was left out, and the index (its kind, the files it skipped).

    Raises:
        ValueError: no sample is left (naming the labels found and the classes asked for).
    """
    root = build.dataset_root(config, say=lambda line: print(line, file=sys.stderr))
    samples, index = build.select_samples(root, config)
    if split == "test":
        samples = build.make_splits(samples, config)[config.fold][1]
    kept = [s for s in samples if s.label in classes]
    dropped = sorted({s.label for s in samples} - set(classes))
    if not kept:
        raise ValueError(f"{root}: none of its {len(samples)} samples is labelled with one of "
                         f"{list(classes)} (labels there: {sorted({s.label for s in samples})})")
    note = (f"left out {len(samples) - len(kept)} of {len(samples)} samples whose labels "
            f"{dropped} are outside the chosen classes {list(classes)}" if dropped else "")
    return kept, note, index


def parse_intensities(text: str) -> tuple[int, ...]:
    """`--intensities 1,2,3,4` -> (1, 2, 3, 4). Raises ValueError naming a bad level."""
    try:
        levels = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--intensities={text!r}: expected comma-separated levels, "
                         "e.g. 1,2,3,4") from None
    if not levels or any(level < 0 for level in levels):
        raise ValueError(f"--intensities={text!r}: expected levels >= 0, e.g. 1,2,3,4")
    return levels


def zero_shot_classes(text: str) -> tuple[tuple[str, ...], list[str]]:
    """`--zero-shot` -> (class labels, what each is prompted with). Entries are separated by
    commas; "name" is prompted by the templates, "label=description" scores the dataset's
    label with a description of its own ("happiness=a face with the lip corners pulled up").

    Raises:
        ValueError: an empty entry, label or description, or a label given twice.
    """
    labels, prompts = [], []
    for entry in text.split(","):
        label, _, description = entry.partition("=")
        label, description = label.strip(), description.strip()
        if not label or ("=" in entry and not description):
            raise ValueError(f"--zero-shot: empty class in {text!r} (classes are separated by "
                             "commas; label=description gives a class a description)")
        labels.append(label)
        prompts.append(description or label)
    if len(set(labels)) != len(labels):
        raise ValueError(f"--zero-shot: a class is given twice in {text!r}")
    return tuple(labels), prompts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="checkpoint written by train.py, or CLIP weights with "
                                       "their merges (clip.pt)")
    parser.add_argument("--table", nargs="+", metavar="RUN", default=None,
                        help="instead: the results table (Markdown) of these finished run "
                             "folders, one row per benchmark (facet/results.py); written to "
                             "--out FILE too when given")
    parser.add_argument("scans", nargs="*", metavar="SCAN",
                        help="predict these scans instead: mesh files (.wrl, .bnt, .obj, .ply, "
                             ".off, .stl, .glb) or folders of frames (4D sequences)")
    parser.add_argument("--neutral", default="", metavar="FILE",
                        help="with SCANs: a neutral scan of the same person, for a model trained "
                             "on 3D scans with --onset (each scan is read as its change from it)")
    parser.add_argument("--data", default="", help="dataset root (default: the training data)")
    parser.add_argument("--dataset", default="auto",
                        help="layout of --data (default: auto); without --data, the built-in "
                             f"set of that kind ({', '.join(SYNTH_KINDS)}), generated on "
                             "first use")
    parser.add_argument("--split", choices=("test", "all"), default=None,
                        help="test: the checkpoint's held-out fold (default on its own data); "
                             "all: every sample (default on another dataset)")
    parser.add_argument("--out", default="", help="output folder (default: beside --ckpt, "
                                                  "named after the evaluation; predict/ for "
                                                  "SCANs)")
    parser.add_argument("--zero-shot", dest="zero_shot", default="",
                        help="comma-separated class names to classify with new prompts; "
                             "label=description prompts a label with a description")
    parser.add_argument("--intensities", default=None,
                        help="comma-separated intensity levels to evaluate, e.g. 1,2,3,4 (the "
                             "held-out subjects at levels the protocol did not train on)")
    parser.add_argument("--mirror_test", action=argparse.BooleanOptionalAction, default=None,
                        help="score each face by the mean of its and its mirror image's "
                             "probabilities (default: as the checkpoint was trained)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--cache", default=None, help="view cache folder (default: as trained)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0: every core, as train.py)")
    started = time.perf_counter()  # the report gives the evaluation's wall time from here
    args = parser.parse_args(argv)
    if args.table is not None:
        if args.ckpt or args.scans or args.data:
            parser.error("--table reads finished run folders: give it no --ckpt, SCAN or --data")
        return results_table(args.table, args.out)
    if not args.ckpt:
        parser.error("--ckpt is required (or --table RUN ... for the results table)")
    runtime.keep_freed_memory()  # no page faults for the rasterizer's re-allocated temporaries
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: every core), got {args.threads}")
    device = runtime.resolve_device(args.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or runtime.default_threads(device))
    try:
        return run(args, device, sys.argv[1:] if argv is None else argv, started)
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process (tests, notebooks)


def results_table(folders: list[str], out: str) -> dict:
    """Print the Markdown results table of finished run folders (and write it to `out`).

    Returns:
        {"table": the Markdown text}.
    Raises:
        FileNotFoundError / ValueError: a folder that holds no finished run (naming it).
    """
    text = results.table([results.read_run(folder) for folder in folders])
    if out:
        write_atomic(out, text)
    print(text, end="")
    return {"table": text}


def run(args: argparse.Namespace, device: torch.device, argv: list[str], started: float
        ) -> dict:
    """What main() does once the options are read: predict SCANs, or evaluate a dataset (its
    report records `argv` as the command and the seconds since `started`)."""
    if args.scans:
        if args.data or args.split or args.cache is not None:
            raise ValueError("SCAN arguments predict single scans; --data, --split and --cache "
                             "evaluate a dataset: use one or the other")
        return predict_scans(args.ckpt, args.scans, args.out, args.zero_shot, device,
                             args.neutral, args.mirror_test)
    predictor = build.load_predictor(args.ckpt, device)
    config, classes, tokenizer, model = (predictor.config, predictor.classes,
                                         predictor.tokenizer, predictor.model)
    pretrained_clip = predictor.kind == "clip"  # it saw none of the built-in datasets' people
    builtin = "" if args.data or args.dataset == "auto" else args.dataset  # another built-in set
    if builtin and builtin not in SYNTH_KINDS:
        raise ValueError(f"--dataset={builtin} without --data: the built-in sets are "
                         f"{', '.join(SYNTH_KINDS)}; give --data=ROOT for a dataset on disk")
    if builtin == config.synth_kind and not config.data:
        builtin = ""  # the checkpoint's own built-in set
    same_data = not builtin and (not args.data or
                                 Path(args.data).resolve() == Path(config.data or "/").resolve())
    split = args.split or ("test" if same_data and not pretrained_clip else "all")
    if split == "test" and (config.fold == "all" or not same_data or pretrained_clip):
        raise ValueError("--split=test needs the checkpoint's own dataset and fold; "
                         "use --split=all for another dataset or a pretrained CLIP")
    provenance = {"made_by": runtime.made_by("evaluate.py", argv, config.seed),
                  "machine": runtime.machine(device), "threads": torch.get_num_threads()}
    descriptions = None  # what each class is prompted with, if not its name
    if args.zero_shot:
        if not config.text_head:
            raise ValueError(f"{args.ckpt}: a linear-head model (text_head=False) cannot "
                             "classify new class names; zero-shot needs the prompt head")
        classes, descriptions = zero_shot_classes(args.zero_shot)
    trained_on = {k: getattr(config, k) for k in ("data", "dataset", "synth_kind",
                                                  "synth_subjects", "fold")}
    if builtin:
        data_name = synth.default_root(builtin).name
    else:
        data_name = Path(args.data).name if args.data else Path(config.data).name or "synthetic"
    out = Path(args.out) if args.out else Path(args.ckpt).parent / (
        f"eval-{split}" if same_data else f"eval-{data_name}-{split}")
    if args.zero_shot and not args.out:
        out = out.with_name(out.name + "-zero-shot")
    if args.intensities and not args.out:
        out = out.with_name(out.name + "-levels" + args.intensities.replace(",", ""))
    mirror_test = config.mirror_test if args.mirror_test is None else args.mirror_test
    if mirror_test != config.mirror_test and not args.out:
        out = out.with_name(out.name + ("-mirror" if mirror_test else "-no-mirror"))
    shipped = build.FACET_CLIP.parent in Path(args.ckpt).resolve().parents
    if shipped and not args.out:  # facet's own weights: never write into the package
        out = Path("out") / f"{Path(args.ckpt).stem}-{out.name}"
    runtime.check_writable(out, "--out")  # before the (slow) rendering, not after

    changes = {"eval_batch_size": args.batch_size, "workers": 0, "mirror_test": mirror_test}
    if args.data:
        changes.update(data=args.data, dataset=args.dataset, intensities=None, subjects=None)
    elif builtin:  # the built-in set of that kind, at its writer's size, in its own folder
        changes.update(synth_kind=builtin, synth_subjects=synth.DEFAULT_SUBJECTS[builtin],
                       dataset="auto", intensities=None, subjects=None)
    if args.cache is not None:
        changes["cache"] = args.cache
    if args.intensities is not None:  # the folds stay the same: they split subjects
        changes["intensities"] = parse_intensities(args.intensities)
    config = dataclasses.replace(config, **changes)
    samples, note, index = select(config, split, classes)
    skipped = index.skipped
    if note:
        print(note, file=sys.stderr)
    cache, samples, failed = build.fill_cache(samples, config)
    reports.write_skipped(out / "skipped.csv", skipped, failed)  # out: checked writable above
    print(reports.dropped_summary(skipped, failed, out / "skipped.csv"), file=sys.stderr)
    dataset = build.make_dataset(samples, cache, config, classes, train=False)
    prompts = build.class_prompts(config, model, tokenizer, classes, descriptions=descriptions)
    metrics = loop.evaluate(model, dataset, classes, prompts, config,
                            runtime.DistInfo(device=device), runtime.amp_dtype(config.amp, device))
    reports.write_report(out, metrics, classes, parse_views(config.views),
                         checkpoint=str(args.ckpt), split=split,
                         data=config.data or "synthetic", zero_shot=bool(args.zero_shot),
                         class_prompts=descriptions,
                         left_out=note, config=to_dict(config), trained_on=trained_on,
                         dataset_kind=index.kind, **provenance,
                         seconds={"since_start": round(time.perf_counter() - started, 1)})
    print(reports.metrics_table(metrics))
    print(f"wrote {out}/: metrics.json, predictions.csv, confusion.png, view_weights.png, "
          "skipped.csv")
    return metrics


def predict_scans(ckpt: str, scans: list[str], out: str, zero_shot: str,
                  device: torch.device, neutral: str = "", mirror_test: bool | None = None
                  ) -> dict:
    """Predict and explain each scan (facet.app.explain): prediction.json, a sheet per scan, a
    table.
    A scan that cannot be read or renders blank is skipped and reported (stderr and the
    "skipped" entry of prediction.json) while the others are predicted; one scan alone, or
    every scan failing, is an error.

    Returns:
        The contents of prediction.json.
    Raises:
        ValueError / FileNotFoundError: no scan could be predicted (naming each and why).
    """
    folder = runtime.check_writable(Path(out) if out else Path(ckpt).parent / "predict", "--out")
    missing = [s for s in scans + ([neutral] if neutral else []) if not Path(s).exists()]
    if missing:  # before the checkpoint is loaded
        raise FileNotFoundError(f"no such scan: {', '.join(missing)}")
    predictor = build.load_predictor(ckpt, device)
    if mirror_test is not None:  # None: as the checkpoint was trained
        predictor = dataclasses.replace(predictor, config=dataclasses.replace(
            predictor.config, mirror_test=mirror_test))
    # a single scan has no label to keep: a "label=description" class is shown by its prompt
    classes = zero_shot_classes(zero_shot)[1] if zero_shot else None
    predictions, skipped = [], []
    for scan in scans:
        try:
            predictions.append(explain.explain(predictor, scan, classes,
                                               neutral=neutral or None))
        except ValueError as err:  # unreadable, blank render, too large: named in the message
            if len(scans) == 1:
                raise
            skipped.append({"scan": str(scan), "reason": str(err)})
            print(f"skipped {scan}: {err}", file=sys.stderr)
    if not predictions:
        raise ValueError(f"none of the {len(scans)} scans could be predicted:\n  " +
                         "\n  ".join(f"{s['scan']}: {s['reason']}" for s in skipped))
    names = {}
    for p in predictions:  # one sheet per scan, even when two scans share a name
        stem = Path(p.name).stem or "scan"
        names[stem] = names.get(stem, 0) + 1
        sheet = folder / (stem if names[stem] == 1 else f"{stem}-{names[stem]}")
        explain.save_sheet(p, sheet.with_suffix(".png"), patch=explain.patch_pixels(predictor))
    settings = predictor.settings
    report = {"checkpoint": str(ckpt), "kind": predictor.kind, "zero_shot": classes is not None,
              "classes": list(predictions[0].classes),
              "render": {"views": format_views(settings.views),
                         "image_size": settings.image_size, "mode": settings.mode},
              "frames": predictor.config.frames,
              "frame_sampling": predictor.config.frame_sampling,
              "predictions": [p.to_json() for p in predictions], "skipped": skipped}
    write_atomic(folder / "prediction.json", json.dumps(report))
    print(explain.prediction_table(predictions))
    unfamiliar = sum(p.unfamiliar for p in predictions)
    print(f"wrote {folder}/: prediction.json and {len(predictions)} sheet(s) "
          f"({sum(p.seconds for p in predictions) / len(predictions):.2f} s per scan)" +
          (f"; {len(skipped)} scan(s) skipped (prediction.json lists why)" if skipped else "") +
          (f"; {unfamiliar} scan(s) unlike the training faces (!)" if unfamiliar else ""))
    return report


if __name__ == "__main__":
    try:
        result = main()
    except (ValueError, OSError) as err:  # configuration, data, disk: no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if result.get("skipped") else 0)  # scans: 1 when some could not be predicted
