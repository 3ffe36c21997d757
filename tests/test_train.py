"""train.py + evaluate.py end to end on a tiny synthetic set, and the up-front config checks."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evaluate
import train
from facet import synth
from facet.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

# 2 subjects x 6 emotions x intensities 3-4 = 24 scans; 2 folds = 1 subject each side
TINY = ["--folds=2", "--fold=0", "--image_size=16", "--batch_size=6", "--epochs=2",
        "--threads=1", "--render_workers=1", "--log_every=1", "--eval_batch_size=8"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return synth.write_bu3dfe(tmp_path_factory.mktemp("data") / "bu3dfe", subjects=2, seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # shared: views are rendered once per module


def args(root: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [f"--data={root}", f"--cache={cache}", f"--out={out}", "--name=t", *TINY, *extra]


def test_train_writes_a_checkpoint_that_evaluate_reloads(tiny_root, cache, tmp_path):
    [metrics] = train.main(args(tiny_root, cache, tmp_path))
    run = tmp_path / "t"
    for name in ("ckpt.pt", "metrics.json", "log.jsonl", "confusion.png", "curves.png",
                 "view_weights.png"):
        assert (run / name).is_file(), name
    ckpt = load_checkpoint(run / "ckpt.pt")  # weights_only=True
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4  # 12 training scans / 6 = 2 steps x 2 epochs
    assert ckpt["classes"] == list(synth.EMOTIONS)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert [r["epoch"] for r in log if "epoch" in r] == [0, 1]
    assert metrics["n"] == 12 and set(metrics["per_intensity"]) == {"3", "4"}

    # evaluate.py rebuilds model + tokenizer from the checkpoint alone: same fold, same numbers
    again = evaluate.main(["--ckpt", str(run / "ckpt.pt"), "--out", str(tmp_path / "eval"),
                           "--cache", str(cache)])
    assert again["confusion"] == metrics["confusion"]
    assert again["accuracy"] == metrics["accuracy"]
    assert (tmp_path / "eval" / "confusion.png").is_file()

    # zero-shot: new class prompts over a subset of the labels
    zero = evaluate.main(["--ckpt", str(run / "ckpt.pt"), "--out", str(tmp_path / "zs"),
                          "--cache", str(cache), "--zero-shot", "happiness,surprise",
                          "--split", "all"])
    assert zero["classes"] == ["happiness", "surprise"] and zero["n"] == 8


@pytest.mark.parametrize("bad, message", [
    (["--epoch=3"], "unknown option --epoch. Did you mean: --epochs"),
    (["--lr=-1"], "--lr must be > 0"),
    (["--fold=5", "--folds=2"], "--fold=5 is outside 0..1"),
    (["--image_size=20"], "not a multiple of the tiny patch size"),
    (["--views=0,1,2;1,2"], "cannot read '0,1,2'"),
    (["--preset=gpu"], "unknown preset 'gpu'"),
])
def test_bad_config_is_rejected_before_any_work(bad, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        train.main([f"--out={tmp_path}", *bad])
    assert not any(tmp_path.iterdir())  # nothing was written


def test_empty_or_missing_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train.main([f"--data={tmp_path / 'nowhere'}", f"--out={tmp_path}"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable sample"):
        train.main([f"--data={tmp_path / 'empty'}", "--dataset=bu3dfe", f"--out={tmp_path}"])


def test_class_missing_from_a_training_split(tiny_root, tmp_path):
    root = tmp_path / "bu3dfe"
    shutil.copytree(tiny_root, root)
    for path in root.glob("F0001/*_AN0*"):  # one subject loses every anger scan
        path.unlink()
    # the fold that tests on the other subject trains without anger: refused, nothing rendered
    with pytest.raises(ValueError, match=r"classes \['anger'\] have no training sample"):
        train.main([f"--data={root}", "--folds=2", "--fold=all", f"--out={tmp_path / 'o'}",
                    f"--cache={tmp_path / 'c'}"])
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_cli_reports_errors_without_traceback():
    proc = subprocess.run([sys.executable, "train.py", "--batchsize=3"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: unknown option --batchsize" in proc.stderr and "--batch_size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_optimizer_groups_and_schedule():
    from facet.engine import cosine_schedule, parameter_groups

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.logit_scale = torch.nn.Parameter(torch.ones(()))
    decay, no_decay = parameter_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [(4, 4)]  # only the weight matrix decays
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = cosine_schedule(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])  # linear warm-up, then the peak
    # then cosine over the 4 remaining steps: 0.5 * (1 + cos(pi * k / 4)), k = 1, 2, 3
    assert lrs[3:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)])


def test_all_folds_table_and_no_overwrite(tiny_root, cache, tmp_path):
    results = train.main(args(tiny_root, cache, tmp_path, "--fold=all", "--epochs=1"))
    assert len(results) == 2
    table = json.loads((tmp_path / "t" / "folds.json").read_text())
    accuracies = [m["accuracy"] for m in results]
    assert table["accuracy"]["folds"] == pytest.approx(accuracies)
    assert table["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert "| accuracy |" in (tmp_path / "t" / "folds.md").read_text()
    assert (tmp_path / "t" / "fold1" / "ckpt.pt").is_file()
    with pytest.raises(ValueError, match="exists: pass --resume"):  # a finished run is kept
        train.main(args(tiny_root, cache, tmp_path, "--fold=all", "--epochs=1"))
