"""End-to-end runs in subprocesses: torchrun DDP parity and kill-and-resume (slow, run in CI).

- `torchrun --standalone --nproc_per_node=2 train.py` (gloo, CPU) with global batch 4 (2 per
  rank) must follow the same loss trajectory as one process with batch 4: the DistributedSampler
  deals each rank every other sample of the same shuffled order, and DDP averages the two
  half-batch gradients into the full-batch gradient.
- A run killed (SIGKILL) after its first checkpoint and restarted with --resume must end with
  bit-identical weights and the same log as an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facet import build
from facet.checkpoint import load_checkpoint
from facet.config import TrainConfig
from facet.faces import synth

REPO = Path(__file__).resolve().parents[1]
# no augmentation and nothing computed across the batch (the affect loss compares samples,
# BatchNorm centring uses batch statistics, per rank on CPU where SyncBatchNorm is unavailable):
# then a step's loss is a plain mean over samples, which sharding must not change
TINY = ["--folds=2", "--fold=0", "--image_size=16", "--batch_size=4", "--epochs=2",
        "--threads=1", "--render_workers=1", "--log_every=1", "--no-augment",
        "--lambda_aff=0", "--no-center_images", "--name=t", "--pretrained="]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny dataset and its filled view cache (so the timed runs only train)."""
    root = synth.write_bu3dfe(tmp_path_factory.mktemp("data") / "bu3dfe", subjects=2, seed=0)
    cache = tmp_path_factory.mktemp("cache")
    config = TrainConfig(data=str(root), cache=str(cache), image_size=16, render_workers=1)
    samples, _ = build.select_samples(root, config)
    build.fill_cache(samples, config)
    return root, cache


def _run(*cmd: str) -> None:
    """Run a command in the repository; on failure show the end of its output."""
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{' '.join(cmd[:6])} ... failed:\n{proc.stderr[-3000:]}"


def _losses(run: Path) -> list[float]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


# the default recipe (facet's pretrained CLIP, no embedding centring, augmentation seeded per
# sample, consistency loss) computes nothing across the batch either: one epoch of it at 64 px
DEFAULT = ["--folds=2", "--fold=0", "--batch_size=4", "--epochs=1", "--threads=1",
           "--render_workers=1", "--log_every=1", "--name=t"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [TINY, DEFAULT], ids=["tiny-from-scratch", "default"])
def test_torchrun_two_ranks_match_one_process(prepared, tmp_path, recipe):
    root, cache = prepared
    common = [f"--data={root}", f"--cache={cache}", *recipe]
    _run(sys.executable, "train.py", *common, f"--out={tmp_path / 'one'}")
    _run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "train.py", *common, f"--out={tmp_path / 'two'}")
    one, two = _losses(tmp_path / "one" / "t"), _losses(tmp_path / "two" / "t")
    epochs = 2 if recipe is TINY else 1
    assert len(one) == len(two) == 3 * epochs  # 12 training scans / batch 4 = 3 steps an epoch
    assert two == pytest.approx(one, abs=1e-5)
    w1 = load_checkpoint(tmp_path / "one" / "t" / "ckpt.pt")["model"]
    w2 = load_checkpoint(tmp_path / "two" / "t" / "ckpt.pt")["model"]
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    m1 = json.loads((tmp_path / "one" / "t" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "t" / "metrics.json").read_text())
    assert m1["n"] == m2["n"] == 12  # evaluation counts every test sample once over 2 ranks


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(prepared, tmp_path):
    root, cache = prepared
    common = [f"--data={root}", f"--cache={cache}", *TINY, "--epochs=4", "--augment",
              "--center_images",  # resume must also restore BatchNorm's running statistics
              "--checkpoint_every_s=0"]  # a checkpoint after every epoch: one to cut after
    _run(sys.executable, "train.py", *common, f"--out={tmp_path / 'full'}")

    ckpt = tmp_path / "cut" / "t" / "ckpt.pt"
    proc = subprocess.Popen([sys.executable, "train.py", *common, f"--out={tmp_path / 'cut'}"],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the checkpoint appears atomically, complete, after epoch 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch = load_checkpoint(ckpt)["epoch"]
    assert epoch < 3, "the run finished before it could be interrupted"

    _run(sys.executable, "train.py", *common, f"--out={tmp_path / 'cut'}", "--resume")
    full = load_checkpoint(tmp_path / "full" / "t" / "ckpt.pt")
    cut = load_checkpoint(ckpt)
    assert cut["epoch"] == full["epoch"] == 3 and cut["step"] == full["step"]
    for key, value in full["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    assert _losses(tmp_path / "cut" / "t") == _losses(tmp_path / "full" / "t")
