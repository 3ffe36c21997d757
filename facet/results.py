"""The paper's results table: every benchmark FACET-VLM reports, one row each, from finished runs.

FACET-VLM (arXiv 2507.01673) reports five benchmarks; `BENCHMARKS` holds, per benchmark, its
protocol, the metrics it is scored by, the command that runs it on facet's built-in twin (the
same command with `--data=/path/to/real` runs the real dataset through the same code), and the
paper's number where it is public. Only two could be found: 99.41 % on BU-4DFE and a +15.12 %
cross-dataset margin on BP4D-Spontaneous; every other cell reads "not public", never a guess.

`read_run(folder)` reads what the scripts leave in a run folder: train.py's `folds.json` (a
`--fold=all` run) or `metrics.json` (one fold), or evaluate.py's `metrics.json` (e.g. the
BP4D-like cross-dataset test). Each holds the config, the command (`made_by`), the dataset kind,
the machine and the wall time; for a run made before they were recorded, the command is rebuilt
from the config and the time is the sum of its epochs (both said so in the cell).
`table(runs)` gives one Markdown row per run, in the paper's benchmark order, and a
"not measured yet" row with the command for every benchmark no run covers.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from facet import reports
from facet.baseline import CNN_MODEL
from facet.config import PRESETS, parse_args, to_dict
from facet.data.datasets import PROTOCOLS
from facet.data.layouts import natural_key
from facet.faces.synth import DEFAULT_SUBJECTS

NOT_PUBLIC = "not public"


@dataclass(frozen=True)
class Benchmark:
    """One dataset FACET-VLM reports on, and how facet runs its protocol."""

    name: str  # as the paper names it
    kind: str  # facet's layout (facet.data.layouts.KINDS), also its built-in twin's kind
    protocol: str  # the protocol in words
    metrics: tuple[str, ...]  # summarize() keys it is scored by
    command: str  # the command that runs it on the built-in twin
    paper: str  # the paper's published number, or NOT_PUBLIC


BENCHMARKS = (
    Benchmark("BU-3DFE", "bu3dfe", "10-fold subject-independent, 60 people, six emotions at "
              "intensities 3-4", ("accuracy",), "python train.py --fold=all", NOT_PUBLIC),
    Benchmark("Bosphorus", "bosphorus", "10-fold subject-independent, 60 people, six emotions "
              "(.bnt range scans)", ("accuracy",), "python train.py --preset=bosphorus --fold=all",
              NOT_PUBLIC),
    Benchmark("BU-4DFE", "bu4dfe", "10-fold subject-independent, six emotions (sequences)",
              ("accuracy",), "python train.py --preset=4d --fold=all", "99.41 %"),
    Benchmark("BP4D-Spontaneous", "bp4d", "cross-dataset: a BU-4DFE model tested on every "
              "BP4D sequence of other people (six task emotions)", ("accuracy",),
              "python evaluate.py --ckpt out/4d/ckpt.pt --dataset=bp4d",
              "+15.12 % (a margin; no accuracy public)"),
    Benchmark("4DME", "4dme", "leave-one-subject-out, micro-expression clips, five classes",
              ("uf1", "uar"), "python train.py --preset=micro --fold=all", NOT_PUBLIC),
)
BENCHMARK_OF = {b.kind: b for b in BENCHMARKS}
METRIC_NAMES = {"accuracy": "accuracy", "uf1": "UF1", "uar": "UAR", "macro_f1": "macro-F1"}
COLUMNS = ("dataset", "protocol", "metric", "facet: mean +- std over folds", "pooled",
           "chance (1/K)", "paper", "wall time", "command")


@dataclass
class Run:
    """What one finished run folder says about its result."""

    folder: str
    kind: str  # the dataset kind it was scored on
    config: dict  # its TrainConfig as a dict (evaluate.py: the evaluation's)
    folds: list[dict]  # per fold: {metric: value}; one entry for a single fold or test set
    pooled: dict | None  # all folds' predictions pooled ({metric: value}), for --fold=all
    classes: list[str]
    n: int  # test samples scored, all folds together
    command: str  # the command line, or one rebuilt from the config
    command_recorded: bool
    seconds: float | None  # the command's wall time; None: not recorded
    epoch_seconds: float  # the sum of the epochs' times in log.jsonl (0 for an evaluation)
    threads: int | None
    machine: str
    resumed: bool
    split: str  # evaluate.py: "test" (the checkpoint's held-out fold) or "all"; train.py: ""
    trained_on: dict | None  # evaluate.py: the checkpoint's data, dataset, synth_kind,
    # synth_subjects and fold


def _read_json(path: Path, required: tuple[str, ...]) -> dict:
    """A report written by train.py or evaluate.py; ValueError naming the file if it is not
    one (unreadable, not JSON, or without the `required` keys)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable report ({err})") from None
    missing = [k for k in required if not isinstance(report, dict) or k not in report]
    if missing:
        raise ValueError(f"{path}: not a train.py or evaluate.py report (no {missing})")
    return report


def _epoch_seconds(folder: Path) -> float:
    """The sum of `epoch_s` over a run folder's log.jsonl (0 when it has none)."""
    log = folder / "log.jsonl"
    if not log.is_file():
        return 0.0
    total = 0.0
    for line in log.read_text().splitlines():
        try:
            total += float(json.loads(line).get("epoch_s", 0.0))
        except (ValueError, AttributeError):
            continue  # a line torn by a kill (train.py trims it on resume)
    return total


def command_from_config(values: dict, fold: int | str | None = None) -> str:
    """The train.py command that rebuilds a run's config: its preset and every option that
    differs from it (for runs made before the command was recorded).

    Args:
        values: a `to_dict(TrainConfig)`.
        fold: the run's `--fold` when it differs from the stored one (`--fold=all` runs store
            each fold's own index).
    """
    preset = values.get("preset", "cpu")
    preset = preset if preset in PRESETS else "cpu"
    wanted = {**values, **({} if fold is None else {"fold": fold})}
    base = to_dict(parse_args([f"--preset={preset}"]))

    chosen = [f"--{k}={_option_text(wanted[k])}" for k in base
              if k not in ("preset", "center_images") and k in wanted and wanted[k] != base[k]]
    # center_images follows --pretrained unless set: name it only where it does not follow
    implied = to_dict(parse_args([f"--preset={preset}", *chosen])).get("center_images")
    if wanted.get("center_images") != implied:
        chosen.append(f"--center_images={_option_text(wanted.get('center_images'))}")
    head = [] if preset == "cpu" else [f"--preset={preset}"]
    return shlex.join(["python", "train.py", *head, *chosen])


def _option_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def read_run(folder: str | Path) -> Run:
    """What a finished run folder holds (module docstring).

    Raises:
        FileNotFoundError: the folder holds neither folds.json nor metrics.json.
        ValueError: a report that cannot be read, or a CLIP pretraining run (no benchmark).
    """
    folder = Path(folder)
    if (folder / "folds.json").is_file():
        return _read_all_folds(folder)
    if not (folder / "metrics.json").is_file():
        raise FileNotFoundError(f"{folder}: no folds.json or metrics.json: not a finished "
                                "train.py or evaluate.py run")
    report = _read_json(folder / "metrics.json", ("classes", "n"))
    config = report.get("config", {})
    if config.get("task") == "pretrain":
        raise ValueError(f"{folder}: a CLIP pretraining run, not a benchmark result")
    evaluation = "checkpoint" in report
    scores = {k: report.get(k) for k in (*METRIC_NAMES, "n")}
    made_by = report.get("made_by", {})
    return Run(
        folder=str(folder), kind=report.get("dataset_kind") or _kind_of(config),
        config=config, folds=[scores], pooled=None, classes=report["classes"], n=report["n"],
        command=made_by.get("command") or ("" if evaluation else command_from_config(config)),
        command_recorded="command" in made_by,
        seconds=report.get("seconds", {}).get("since_start"),
        epoch_seconds=0.0 if evaluation else _epoch_seconds(folder),
        threads=report.get("threads", config.get("threads") or None),
        machine=report.get("machine", ""), resumed=bool(report.get("resumed")),
        split=report.get("split", ""), trained_on=report.get("trained_on") if evaluation else None)


def _read_all_folds(folder: Path) -> Run:
    """A `--fold=all` run: folds.json for the summary, fold<i>/metrics.json for the rest."""
    summary = _read_json(folder / "folds.json", ("folds", "pooled"))
    paths = sorted(folder.glob("fold*/metrics.json"), key=lambda p: natural_key(str(p)))
    if not paths:
        raise FileNotFoundError(f"{folder}: folds.json but no fold*/metrics.json")
    reports = [_read_json(p, ("classes", "n")) for p in paths]
    config = reports[0].get("config", {})
    made_by = summary.get("made_by", {})
    return Run(
        folder=str(folder), kind=summary.get("dataset_kind") or _kind_of(config), config=config,
        folds=[{k: r.get(k) for k in METRIC_NAMES} for r in reports],
        pooled=summary.get("pooled"), classes=reports[0]["classes"],
        n=sum(r["n"] for r in reports),
        command=made_by.get("command") or command_from_config(config, fold="all"),
        command_recorded="command" in made_by, seconds=summary.get("seconds"),
        epoch_seconds=sum(_epoch_seconds(p.parent) for p in paths),
        threads=summary.get("threads", config.get("threads") or None),
        machine=summary.get("machine", ""), resumed=bool(summary.get("resumed")), split="",
        trained_on=None)


def _kind_of(config: dict) -> str:
    """The dataset kind a config names: its --dataset, or its built-in set's kind; "" for a
    dataset on disk whose layout was detected (a run made before the kind was recorded)."""
    if config.get("dataset", "auto") != "auto":
        return config["dataset"]
    return "" if config.get("data") else config.get("synth_kind", "bu3dfe")


def _dataset_name(kind: str, config: dict) -> str:
    """ "BU-3DFE-like (built-in, 60 people)", "BU-3DFE (/data/BU3DFE)" or the folder alone."""
    name = BENCHMARK_OF[kind].name if kind in BENCHMARK_OF else kind
    if config.get("data"):
        return f"{name} ({config['data']})" if name else config["data"]
    people = config.get("synth_subjects") or DEFAULT_SUBJECTS.get(kind)
    return f"{name}-like (built-in, {people} people)"


def _protocol(run: Run) -> str:
    """The protocol as this run followed it (and the model, where it is not FACET-VLM)."""
    return (_split_in_words(run) + _reference_in_words(run.trained_on or run.config)
            + _model_in_words(run.config))


def _split_in_words(run: Run) -> str:
    """How the run divided its people: k-fold, leave-one-subject-out, or an evaluate.py run."""
    c = run.config
    if run.trained_on is not None:  # an evaluate.py run
        t = run.trained_on
        model = f"the model of {_dataset_name(_kind_of(t), t)}" + (
            f" fold {t['fold']}" if t.get("fold") not in (None, "all") else "")
        if run.split == "test":
            return f"evaluate.py: {model}, on its held-out people ({run.n} test samples)"
        if _kind_of(t) != run.kind or t.get("data") != c.get("data"):
            return f"cross-dataset: {model}, tested on all {run.n} samples"
        return f"evaluate.py: {model}, on all {run.n} samples (its training people included)"
    if c.get("split") == "loso":
        scope = "all folds" if len(run.folds) > 1 else f"fold {c.get('fold')} only"
        return f"leave-one-subject-out, {scope} ({run.n} test samples)"
    folds = c.get("folds", 10)
    scope = (f"all {len(run.folds)} folds" if len(run.folds) > 1
             else f"fold {c.get('fold')} only")
    return f"{folds}-fold subject-independent, {scope} ({run.n} test samples)"


def _reference_in_words(config: dict) -> str:
    """A static-scan model that read each scan against its person's neutral scan follows a
    different protocol from the papers' (which classify the scan alone): the row says so. A
    sequence's onset frame is part of the 4D protocols and is not flagged."""
    if config.get("frames", 1) > 1 or config.get("onset", "none") == "none":
        return ""
    return f"; each scan read with its person's neutral scan (--onset={config['onset']})"


def _model_in_words(config: dict) -> str:
    """A reference row is labelled as one: its scores are not FACET-VLM's."""
    if config.get("model") == CNN_MODEL:
        return "; the CNN baseline (facet.baseline), not FACET-VLM"
    return ""


def _percent(value: float | None) -> str:
    return "--" if value is None else f"{100 * value:.1f} %"


def _scores(run: Run, metric: str) -> str:
    """Mean +- std over folds (sample std), or the one fold's / test set's score."""
    row = reports.fold_table(run.folds, (metric,)).get(metric)
    if row is None:
        return "--"
    if len(row["folds"]) == 1:
        fold = "" if run.trained_on is not None else f" (fold {run.config.get('fold')})"
        return f"{100 * row['mean']:.1f} %{fold}"
    return f"{100 * row['mean']:.1f} +- {100 * row['std']:.1f} %"


def format_seconds(seconds: float) -> str:
    """3125.4 -> "52 min 5 s"; 3725 -> "1 h 2 min"."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _wall_time(run: Run) -> str:
    threads = (f", {run.threads} thread{'s' if run.threads != 1 else ''}" if run.threads else
               ", default threads" if run.config.get("threads") == 0 else "")
    if run.seconds is not None:
        return format_seconds(run.seconds) + threads + (" (the resumed part)" if run.resumed
                                                        else "")
    if run.epoch_seconds:
        return f"{format_seconds(run.epoch_seconds)} of epochs{threads} (total not recorded)"
    return "not recorded"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table(runs: Sequence[Run]) -> str:
    """The Markdown table of `runs` (COLUMNS), in the paper's benchmark order; runs on other
    datasets follow. A benchmark no run covers gets a "not measured yet" row with its command.
    Below the table: the machines the runs were timed on."""
    lines = [_row(COLUMNS), _row(["---"] * len(COLUMNS))]
    for kind in [b.kind for b in BENCHMARKS] + sorted({r.kind for r in runs} - set(BENCHMARK_OF)):
        mine = [r for r in runs if r.kind == kind]
        benchmark = BENCHMARK_OF.get(kind)
        if not mine and benchmark is not None:
            classes = PROTOCOLS[kind].expressions
            lines.append(_row([f"{benchmark.name}-like (built-in)", benchmark.protocol,
                               " / ".join(METRIC_NAMES[m] for m in benchmark.metrics),
                               "not measured yet", "--",
                               _percent(1 / len(classes)) if classes else "--", benchmark.paper,
                               "--", f"`{benchmark.command}`"]))
        for run in mine:
            metrics = benchmark.metrics if benchmark else ("accuracy",)
            pools = run.pooled is not None and run.config.get("split") == "loso"
            command = f"`{run.command}`" if run.command else "not recorded"
            if run.command and not run.command_recorded:
                command += " (rebuilt from its config)"
            lines.append(_row([
                _dataset_name(kind, run.config), _protocol(run),
                " / ".join(METRIC_NAMES[m] for m in metrics),
                " / ".join(_scores(run, m) for m in metrics),
                " / ".join(_percent(run.pooled.get(m)) for m in metrics) if pools else "--",
                _percent(1 / len(run.classes)), benchmark.paper if benchmark else
                "not a FACET-VLM benchmark", _wall_time(run), command]))
    machines = sorted({r.machine for r in runs if r.machine})
    note = f"\nTimed on: {'; '.join(machines)}.\n" if machines else ""
    return "\n".join(lines) + "\n" + note
