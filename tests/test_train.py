"""train.py + evaluate.py end to end on a tiny synthetic set, and the up-front config checks."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import train
from facet import build, loop, objective
from facet.augment import mirror_faces
from facet.checkpoint import load_checkpoint, save_checkpoint
from facet.config import help_text, parse_args, to_dict
from facet.data.datasets import collate
from facet.data.layouts import EMOTIONS
from facet.data.meshio import save_wrl
from facet.faces import synth
from facet.mesh import Mesh
from facet.runtime import DistInfo, run_lock

REPO = Path(__file__).resolve().parents[1]

# 2 subjects x 6 emotions x intensities 3-4 = 24 scans; 2 folds = 1 subject each side
TINY = ["--folds=2", "--fold=0", "--image_size=16", "--batch_size=6", "--epochs=2",
        "--threads=1", "--render_workers=1", "--log_every=1", "--eval_batch_size=8",
        "--pretrained="]  # from scratch: 16 px in seconds (the default fine-tunes a 64-px CLIP)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return synth.write_bu3dfe(tmp_path_factory.mktemp("data") / "bu3dfe", subjects=2, seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # shared: views are rendered once per module


def args(root: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [f"--data={root}", f"--cache={cache}", f"--out={out}", "--name=t", *TINY, *extra]


def _no_objective(*_, **__):
    raise AssertionError("evaluation built a training objective")


def test_train_writes_a_checkpoint_that_evaluate_reloads(tiny_root, cache, tmp_path, monkeypatch):
    [metrics] = train.main(args(tiny_root, cache, tmp_path))
    run = tmp_path / "t"
    for name in ("ckpt.pt", "metrics.json", "log.jsonl", "predictions.csv", "confusion.png",
                 "curves.png", "view_weights.png"):
        assert (run / name).is_file(), name
    rows = (run / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 12 and rows[0].startswith("file,subject,label,predicted,p_anger")
    ckpt = load_checkpoint(run / "ckpt.pt")  # weights_only=True
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4  # 12 training scans / 6 = 2 steps x 2 epochs
    assert ckpt["classes"] == list(EMOTIONS)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert [r["epoch"] for r in log if "epoch" in r] == [0, 1]
    assert metrics["n"] == 12 and set(metrics["per_intensity"]) == {"3", "4"}

    # evaluate.py rebuilds model + tokenizer from the checkpoint alone: same fold, same numbers,
    # written beside the run under the evaluation's name, never over the training report; it
    # scores by the class prompts alone, building no training step (no loss, no generator)
    report = (run / "metrics.json").read_bytes()
    monkeypatch.setattr(objective.Objective, "__init__", _no_objective)
    again = evaluate.main(["--ckpt", str(run / "ckpt.pt"), "--cache", str(cache)])
    assert again["confusion"] == metrics["confusion"]
    assert again["accuracy"] == metrics["accuracy"]
    torch.testing.assert_close(torch.tensor([r["probabilities"] for r in again["predictions"]]),
                               torch.tensor([r["probabilities"] for r in metrics["predictions"]]))
    assert (run / "eval-test" / "predictions.csv").is_file()
    assert (run / "metrics.json").read_bytes() == report

    # zero-shot: new class prompts over a subset of the labels; the others are left out, said
    zero = evaluate.main(["--ckpt", str(run / "ckpt.pt"), "--out", str(tmp_path / "zs"),
                          "--cache", str(cache), "--zero-shot", "happiness,surprise",
                          "--split", "all"])
    assert zero["classes"] == ["happiness", "surprise"] and zero["n"] == 8
    assert "left out 16 of 24 samples" in json.loads((tmp_path / "zs" / "metrics.json")
                                                     .read_text())["left_out"]
    with pytest.raises(ValueError, match="none of its 24 samples is labelled"):
        evaluate.main(["--ckpt", str(run / "ckpt.pt"), "--out", str(tmp_path / "none"),
                       "--cache", str(cache), "--zero-shot", "smirk", "--split", "all"])


@pytest.mark.parametrize("bad, message", [
    (["--epoch=3"], "unknown option --epoch. Did you mean: --epochs"),
    (["--lr=inf"], "--lr=inf must be a finite number"),
    (["--tau=nan"], "--tau=nan must be a finite number"),
    (["--weight_decay=inf"], "--weight_decay=inf must be a finite number"),
    (["--grad_clip=nan"], "--grad_clip=nan must be a finite number"),
    (["--warmup=nan"], "--warmup=nan must be a finite number"),
    (["--name=../../x"], "--name='../../x' must be one folder name"),
    (["--lr=-1"], "--lr must be > 0"),
    (["--fold=5", "--folds=2"], "--fold=5 is outside 0..1"),
    (["--image_size=20"], "not a multiple of the tiny-stem patch size"),
    (["--views=0,1,2;1,2"], "cannot read '0,1,2'"),
    (["--views=1000,0;0,0"], "view 1000,0 is outside yaw -180..180, pitch -90..90"),
    (["--render_workers=-1"], "--render_workers must be >= 1 (got -1)"),
    (["--subjects=-2"], "--subjects must be >= 1 (got -2)"),
    (["--seed=-1"], "--seed must be in 0..2**32-1 (got -1)"),
    (["--preset=gpu"], "unknown preset 'gpu'"),
    (["--change_rms=0.3"], "--change_rms normalises the change from the first frame"),
    (["--change_rms=-1", "--onset=difference", "--frames=2"], "--change_rms must be >= 0"),
    (["--apex_motion=1", "--no-align_frames"], "--apex_motion magnifies the motion of aligned"),
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
    from facet.loop import cosine_schedule, parameter_groups

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.logit_scale = torch.nn.Parameter(torch.ones(()))
    decay, no_decay = parameter_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [(4, 4)]  # only the weight matrix decays
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0
    # the towers apart at their own rate: names under a `clip.` module, but its logit_scale
    towers = torch.nn.Module()
    towers.clip, towers.fusion = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    towers.clip.logit_scale = torch.nn.Parameter(torch.ones(()))
    groups = parameter_groups(towers, 0.1, tower_lr=1e-5)
    assert [len(g["params"]) for g in groups] == [1, 2, 1, 1]
    assert [g.get("lr") for g in groups] == [None, None, 1e-5, 1e-5]
    assert groups[2]["params"][0] is towers.clip.weight
    assert any(p is towers.clip.logit_scale for p in groups[1]["params"])  # at --lr
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
    table = json.loads((tmp_path / "t" / "folds.json").read_text())["folds"]
    accuracies = [m["accuracy"] for m in results]
    assert table["accuracy"]["folds"] == pytest.approx(accuracies)
    assert table["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert "| accuracy |" in (tmp_path / "t" / "folds.md").read_text()
    assert (tmp_path / "t" / "fold1" / "ckpt.pt").is_file()
    with pytest.raises(ValueError, match="exists: pass --resume"):  # a finished run is kept
        train.main(args(tiny_root, cache, tmp_path, "--fold=all", "--epochs=1"))


def test_help_lists_every_option_with_its_meaning():
    lines = [line for line in help_text().splitlines() if line.startswith("  --")]
    assert len(lines) == len(parse_args([]).__dataclass_fields__)
    for line in lines:
        meaning = line.split("]  ", 1)[1]
        assert len(meaning) > 10 and not meaning.endswith(("(", ",", "/", "--")), line


def test_a_run_owns_its_folder(tiny_root, cache, tmp_path):
    with run_lock(tmp_path / "t"):  # another train.py holds out/t
        with pytest.raises(ValueError, match=r"t is in use by another run .*--name=NEW"):
            train.main(args(tiny_root, cache, tmp_path))
    assert not (tmp_path / "t" / "log.jsonl").exists()


def test_resume_with_changed_options_names_them(tiny_root, cache, tmp_path):
    train.main(args(tiny_root, cache, tmp_path, "--epochs=1"))
    with pytest.raises(ValueError, match=r"changed options \['epochs', 'lr'\].*--epochs=1"):
        train.main(args(tiny_root, cache, tmp_path, "--epochs=2", "--lr=1e-3", "--resume"))
    # a run made before an option existed ran at its default: it resumes with it, not otherwise
    ckpt_path = tmp_path / "t" / "ckpt.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    del ckpt["config"]["apex_motion"]
    torch.save(ckpt, ckpt_path)
    with pytest.raises(ValueError, match=r"changed options \['apex_motion'\].*=0.0"):
        train.main(args(tiny_root, cache, tmp_path, "--epochs=1", "--apex_motion=1", "--resume"))
    assert train.main(args(tiny_root, cache, tmp_path, "--epochs=1", "--resume"))  # resumes


def test_synth_cli_and_train_share_the_generated_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACET_DATA", str(tmp_path))
    config = parse_args(["--synth_subjects=2", "--synth_kind=bu4dfe"])
    monkeypatch.setattr(synth, "ensure_dataset", lambda *a, **k: None)  # the announcement only
    build.dataset_root(config, say=train.to_stderr)
    root = tmp_path / "bu4dfe-2subjects-g2"
    assert (f"generating the built-in bu4dfe set (2 subjects) into {root}"
            f", once: later runs reuse it") in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setenv("FACET_DATA", str(tmp_path))
    synth.main(["--kind", "bu3dfe", "--subjects", "2"])
    written = tmp_path / "bu3dfe-2subjects"
    assert written.is_dir()
    config = parse_args(["--synth_subjects=2"])
    before = written.stat().st_mtime_ns
    assert build.dataset_root(config, say=train.to_stderr) == written
    assert written.stat().st_mtime_ns == before
    assert "generating" not in capsys.readouterr().err  # present: nothing to announce


def test_train_asks_for_a_built_in_set_scanned_frame_by_frame(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACET_DATA", str(tmp_path))
    asked = {}
    monkeypatch.setattr(synth, "ensure_dataset", lambda kind, root, **kw: asked.update(kw))
    config = parse_args(["--preset=4d", "--synth_subjects=2", "--synth_crop_per_frame"])
    root = build.dataset_root(config, say=train.to_stderr)
    # its own folder, beside the shared-triangulation set of the same people, which it never
    # replaces; the CLI writes the same folder
    assert root == tmp_path / "bu4dfe-2subjects-g2-cropperframe"
    assert synth.default_root("bu4dfe", 2, crop_per_frame=True) == root
    assert asked["crop_per_frame"] is True
    assert "every frame scanned apart" in capsys.readouterr().err
    with pytest.raises(ValueError, match="static scans"):  # BU-3DFE-like scans have no frames
        parse_args(["--synth_crop_per_frame"])


def test_grad_accum_matches_the_unaccumulated_step(tiny_root, cache):
    """Two micro-batches of 6 accumulated = one step of 12: the same weights afterwards."""
    config = parse_args([f"--data={tiny_root}", f"--cache={cache}", *TINY, "--no-augment",
                         "--no-center_images"])  # batch statistics would differ by design
    samples, _ = build.select_samples(tiny_root, config)
    store, kept, _ = build.fill_cache(samples, config)
    dataset = build.make_dataset(kept[:12], store, config, tuple(EMOTIONS), train=False)
    tokenizer = build.build_tokenizer(config)
    weights = []
    for batch_size, accum in ((12, 1), (6, 2)):
        torch.manual_seed(0)
        model = build.build_model(config, tokenizer, 6)
        objective = build.build_objective(config, model, tokenizer, tuple(EMOTIONS),
                                          torch.Generator().manual_seed(0))
        optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
        scheduler = loop.cosine_schedule(optimizer, 0, 1)
        batches = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                              collate_fn=collate)
        loop.train_epoch(objective, batches, optimizer, scheduler, device=torch.device("cpu"),
                         grad_accum=accum, grad_clip=0)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    moved = (weights[0] - torch.cat([p.detach().flatten() for p in
                                     build.build_model(config, tokenizer, 6).parameters()]))
    assert moved.abs().max() > 1e-4  # the step did something
    # equal up to float32 rounding: the two ways sum the same gradients in another order
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=1e-6)


def test_a_loss_that_is_not_finite_stops_the_run_at_its_step():
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            loss = self.w.sum() * (float("nan") if batch["step"] == 2 else 1.0)
            return loss, torch.zeros(1, 2), {}

    objective = Exploding()
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    batches = [{"views": torch.zeros(1), "label": torch.zeros(1, dtype=torch.long), "step": s}
               for s in (1, 2, 3)]
    with pytest.raises(ValueError, match="became nan at optimizer step 7"):
        loop.train_epoch(objective, batches, optimizer, loop.cosine_schedule(optimizer, 0, 3),
                         device=torch.device("cpu"), first_step=5)
    assert objective.w.item() == pytest.approx(0.9)  # the NaN step changed nothing


@pytest.mark.parametrize("argv, words", [
    (["--ckpt", "missing.pt"], "error: checkpoint missing.pt does not exist"),
    (["--ckpt", "{tmp}/ckpt.pt"], "ckpt.pt: not a facet checkpoint of this version: no "
                                  "['config', 'classes', 'merges'] entry"),
    (["--ckpt", "{tmp}/ckpt.pt", "--batch_size", "0"], "error: --batch_size must be >= 1"),
    (["--ckpt", "{tmp}/ckpt.pt", "--threads", "-1"], "error: --threads must be >= 0"),
])
def test_evaluate_errors_exit_2_with_a_message(argv, words, tmp_path):
    save_checkpoint(tmp_path / "ckpt.pt", {"model": {}})
    proc = subprocess.run([sys.executable, "evaluate.py", *(a.format(tmp=tmp_path) for a in argv)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert words in proc.stderr, proc.stderr


def test_a_checkpoint_without_classes_is_named(tmp_path):
    save_checkpoint(tmp_path / "ckpt.pt", {"model": {}, "config": {}})
    with pytest.raises(ValueError, match=r"ckpt.pt: .*no \['classes', 'merges'\] entry"):
        evaluate.main(["--ckpt", str(tmp_path / "ckpt.pt")])


def test_an_ema_run_reports_and_keeps_the_averaged_weights(tiny_root, cache, tmp_path):
    """--ema_decay: the log shows both accuracies, the checkpoint keeps the average, and
    evaluate.py scores the average -- the numbers the run reported, not the raw weights'."""
    [metrics] = train.main(args(tiny_root, cache, tmp_path, "--ema_decay=0.5"))
    run = tmp_path / "t"
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
              if '"epoch"' in line]
    assert all("test_acc_ema" in r and "test_acc" in r for r in epochs)
    ckpt = load_checkpoint(run / "ckpt.pt")
    assert ckpt["ema"] is not None
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in ckpt["model"]
               if ckpt["model"][k].is_floating_point())
    again = evaluate.main(["--ckpt", str(run / "ckpt.pt"), "--cache", str(cache),
                           "--out", str(tmp_path / "eval")])
    assert again["accuracy"] == metrics["accuracy"] == epochs[-1]["test_acc_ema"]
    for mine, theirs in zip(again["predictions"], metrics["predictions"]):
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)


def test_evaluate_held_out_subjects_at_every_intensity(tiny_root, cache, tmp_path):
    """--intensities: the same held-out subjects (folds split subjects), at levels the protocol
    did not train on; the levels it did train on get the numbers of the default evaluation."""
    train.main(args(tiny_root, cache, tmp_path))
    ckpt = str(tmp_path / "t" / "ckpt.pt")
    default = evaluate.main(["--ckpt", ckpt, "--cache", str(cache)])
    every = evaluate.main(["--ckpt", ckpt, "--cache", str(cache), "--intensities", "1,2,3,4"])
    assert (tmp_path / "t" / "eval-test-levels1234" / "metrics.json").is_file()
    assert every["n"] == 24 and set(every["per_intensity"]) == {"1", "2", "3", "4"}
    assert {p["subject"] for p in every["predictions"]} == {p["subject"]
                                                            for p in default["predictions"]}
    again = {p["path"]: p["probabilities"] for p in every["predictions"]}
    for p in default["predictions"]:
        assert again[p["path"]] == pytest.approx(p["probabilities"], abs=1e-6)
    with pytest.raises(ValueError, match="--intensities='x'"):
        evaluate.main(["--ckpt", ckpt, "--intensities", "x"])


def test_a_frozen_text_tower_is_encoded_once_with_the_same_result(tiny_root, cache):
    """--freeze_text: the class embeddings are computed on the first step and reused; the
    loss and its gradients are those of encoding the prompts every step."""
    config = parse_args([f"--data={tiny_root}", f"--cache={cache}", *TINY, "--no-augment",
                         "--freeze_text"])
    samples, _ = build.select_samples(tiny_root, config)
    store, kept, _ = build.fill_cache(samples, config)
    dataset = build.make_dataset(kept[:6], store, config, tuple(EMOTIONS), train=False)
    batch = collate([dataset[i] for i in range(6)])
    tokenizer = build.build_tokenizer(config)
    model = build.build_model(config, tokenizer, 6).eval()
    objective = build.build_objective(config, model, tokenizer, tuple(EMOTIONS),
                                      torch.Generator().manual_seed(0))
    assert objective.text_frozen
    calls = []
    model.clip.encode_text = (lambda original: lambda *a: calls.append(1) or original(*a))(
        model.clip.encode_text)
    cached = [objective(batch)[0] for _ in range(3)]
    assert len(calls) == 1  # one encoding for three steps
    objective.text_frozen = False
    fresh = objective(batch)[0]
    assert len(calls) == 2
    for loss in cached:
        torch.testing.assert_close(loss, fresh, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(cached[0], [model.clip.logit_scale], allow_unused=True)
    assert grads[0] is not None  # the temperature still learns through cached embeddings


def test_mirror_test_scores_the_mean_of_a_face_and_its_mirror_image(tiny_root, cache):
    """--mirror_test: each probability is the mean of the face's and its mirrored face's
    (`facet.augment.mirror_faces`), and the view weights are mapped back to their slots."""
    config = parse_args([f"--data={tiny_root}", f"--cache={cache}", *TINY, "--mirror_test"])
    samples, _ = build.select_samples(tiny_root, config)
    store, kept, _ = build.fill_cache(samples, config)
    dataset = build.make_dataset(kept[:6], store, config, tuple(EMOTIONS), train=False)
    model = build.build_model(config, build.build_tokenizer(config), 6).eval()
    prompts = build.class_prompts(config, model, build.build_tokenizer(config), tuple(EMOTIONS))
    metrics = loop.evaluate(model, dataset, tuple(EMOTIONS), prompts, config, DistInfo())
    batch = loop.to_device(collate([dataset[i] for i in range(6)]), torch.device("cpu"))
    views = batch["views"]  # (6, 1, 3, 3, H, W) in [0, 1]
    with torch.no_grad():
        shared = model.encode_classes(prompts.tokens())
        plain = model(views, class_embeddings=shared)
        mirrored = model(mirror_faces(views, (2, 1, 0), config.mode), class_embeddings=shared)
    expected = (plain.logits.softmax(-1) + mirrored.logits.softmax(-1)) / 2  # (6, K)
    got = torch.tensor([p["probabilities"] for p in metrics["predictions"]])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(got, plain.logits.softmax(-1), atol=1e-3)  # the mirror counted
    weights = (plain.view_weights[:, 0] + mirrored.view_weights[:, 0].flip(-1)) / 2  # (6, V)
    labels = batch["label"]
    for k, name in enumerate(EMOTIONS):
        if (labels == k).any():
            torch.testing.assert_close(torch.tensor(metrics["view_weights"][name]).double(),
                                       weights[labels == k].mean(0).double(), atol=1e-5, rtol=0)


def test_evaluate_can_switch_the_mirror_test_of_a_checkpoint(tiny_root, cache, tmp_path):
    """evaluate.py --mirror_test / --no-mirror_test overrides the checkpoint's choice, into a
    folder of its own; without the flag it scores as trained."""
    train.main(args(tiny_root, cache, tmp_path, "--no-mirror_test"))
    ckpt = str(tmp_path / "t" / "ckpt.pt")
    plain = evaluate.main(["--ckpt", ckpt, "--cache", str(cache)])
    mirrored = evaluate.main(["--ckpt", ckpt, "--cache", str(cache), "--mirror_test"])
    assert (tmp_path / "t" / "eval-test-mirror" / "metrics.json").is_file()
    p = torch.tensor([q["probabilities"] for q in plain["predictions"]])
    m = torch.tensor([q["probabilities"] for q in mirrored["predictions"]])
    assert p.shape == m.shape and not torch.allclose(p, m, atol=1e-4)


def test_a_run_that_finished_while_this_one_rendered_is_not_overwritten(tiny_root, cache,
                                                                         tmp_path, monkeypatch):
    # the race: a second run with the same --name passes run()'s early check, and the first
    # finishes (writes ckpt.pt) while the second is still rendering its view cache
    finished = b"the first run's checkpoint"
    fill_cache = build.fill_cache

    def fill_cache_while_the_other_run_finishes(*a, **k):
        result = fill_cache(*a, **k)
        (tmp_path / "t").mkdir(exist_ok=True)
        (tmp_path / "t" / "ckpt.pt").write_bytes(finished)
        return result

    monkeypatch.setattr(build, "fill_cache", fill_cache_while_the_other_run_finishes)
    with pytest.raises(ValueError, match=r"ckpt.pt exists: pass --resume"):
        train.main(args(tiny_root, cache, tmp_path))
    assert (tmp_path / "t" / "ckpt.pt").read_bytes() == finished
    assert [p.name for p in (tmp_path / "t").iterdir() if p.name != ".lock"] == ["ckpt.pt"]


def test_every_dropped_file_is_named_in_skipped_csv(tiny_root, tmp_path, capsys):
    """A file the index cannot use and a scan that renders blank are written, with the stage and
    the reason, into the run folder's skipped.csv, and named in the summary."""
    root = tmp_path / "bu3dfe"
    shutil.copytree(tiny_root, root)
    shutil.copy(root / "F0001" / "F0001_AN03WH_F3D.wrl", root / "F0001" / "F0001_XX03WH_F3D.wrl")
    flat = Mesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.float32), np.array([[0, 1, 2]]))
    save_wrl(flat, root / "F0002" / "F0002_SA03WH_F3D.wrl")  # no area: renders to nothing
    train.main(args(root, tmp_path / "c", tmp_path / "o", "--epochs=1"))
    with open(tmp_path / "o" / "t" / "skipped.csv", newline="") as f:
        rows = {(Path(r["file"]).name, r["stage"]): r["reason"] for r in csv.DictReader(f)}
    assert set(rows) == {("F0001_XX03WH_F3D.wrl", "index"), ("F0002_SA03WH_F3D.wrl", "render")}
    assert "unknown expression code 'XX'" in rows["F0001_XX03WH_F3D.wrl", "index"]
    assert "renders to an (almost) empty image" in rows["F0002_SA03WH_F3D.wrl", "render"]
    out = capsys.readouterr().out
    assert "1 file(s) skipped while indexing, 1 failed to render; all listed in" in out
    assert "skipped " in out and "F0001_XX03WH_F3D.wrl: unknown expression code" in out


def test_checkpoint_every_s_spaces_the_writes_but_the_last_epoch_is_always_written(
        tiny_root, cache, tmp_path, monkeypatch):
    written = []

    def record(path, checkpoint):
        written.append(checkpoint["epoch"])
        save_checkpoint(path, checkpoint)

    monkeypatch.setattr(loop, "save_checkpoint", record)
    train.main(args(tiny_root, cache, tmp_path / "often", "--epochs=3", "--checkpoint_every_s=0"))
    assert written == [0, 1, 2]
    written.clear()
    train.main(args(tiny_root, cache, tmp_path / "rarely", "--epochs=3",
                    "--checkpoint_every_s=1e9"))
    assert written == [2]  # the last epoch always: its weights are the run's result
    assert len(_epoch_records(tmp_path / "rarely" / "t")) == 3  # the log has every epoch


def _epoch_records(run: Path) -> list[dict]:
    """log.jsonl's lines without their timings (which differ between any two runs)."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.endswith("_s")} for line in lines
            if "epoch" in line]


def test_resume_from_an_older_checkpoint_repeats_the_lost_epochs(tiny_root, cache, tmp_path,
                                                                 monkeypatch):
    """A crash between checkpoints: the log ran two epochs past the checkpoint, whose epochs
    the resumed run trims from the log and repeats, ending where the uninterrupted run ended."""
    def keep_every_epoch(path, checkpoint):
        save_checkpoint(path, checkpoint)
        shutil.copy(path, tmp_path / f"epoch{checkpoint['epoch']}.pt")

    monkeypatch.setattr(loop, "save_checkpoint", keep_every_epoch)
    common = ["--epochs=3", "--checkpoint_every_s=0"]
    train.main(args(tiny_root, cache, tmp_path, *common))
    run = tmp_path / "t"
    uninterrupted, full = _epoch_records(run), load_checkpoint(run / "ckpt.pt")
    shutil.copy(tmp_path / "epoch0.pt", run / "ckpt.pt")  # what a crash in epoch 2 would leave

    train.main(args(tiny_root, cache, tmp_path, *common, "--resume"))
    assert _epoch_records(run) == uninterrupted
    resumed = load_checkpoint(run / "ckpt.pt")
    assert resumed["epoch"] == 2 and resumed["step"] == full["step"]
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_resume_without_a_checkpoint_says_it_starts_fresh(tiny_root, cache, tmp_path, capsys):
    train.main(args(tiny_root, cache, tmp_path, "--epochs=1", "--resume"))
    assert "does not exist yet; starting that run from epoch 0" in capsys.readouterr().out


class _RunsCode:
    """A pickle payload: unpickling it would create `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_bad_pretrained_weights_and_vocab_are_refused_before_rendering(tiny_root, tmp_path):
    """A payload as --pretrained is named for what it is (not "carries no vocabulary"), a
    non-vocabulary as --vocab gets a message instead of gzip's traceback; both before any
    rendering, and no code runs."""
    torch.save({"state_dict": {}, "evil": _RunsCode(tmp_path / "ran")}, tmp_path / "evil.pt")
    (tmp_path / "hostname").write_text("build-machine\n")
    shutil.copy(REPO / "facet" / "assets" / "facet_clip_tiny.pt", tmp_path / "clip.pt")
    base = [f"--data={tiny_root}", f"--cache={tmp_path / 'c'}", f"--out={tmp_path / 'o'}",
            "--folds=2"]
    with pytest.raises(ValueError, match=r"evil.pt: not readable as CLIP weights: it holds "
                                         r"Python objects other than tensors"):
        train.main([*base, f"--pretrained={tmp_path / 'evil.pt'}"])
    with pytest.raises(ValueError, match=r"hostname: not a CLIP BPE vocabulary"):
        train.main([*base, f"--pretrained={tmp_path / 'clip.pt'}",
                    f"--vocab={tmp_path / 'hostname'}"])
    with pytest.raises(ValueError, match=r"hostname: not a CLIP BPE vocabulary"):
        train.main([*base, "--preset=pretrain", f"--pretrained={tmp_path / 'clip.pt'}",
                    f"--vocab={tmp_path / 'hostname'}"])
    assert not (tmp_path / "ran").exists() and not (tmp_path / "c").exists()


def test_a_read_only_or_full_disk_is_named_not_a_traceback(tiny_root, cache, tmp_path,
                                                           small_disk):
    read_only = small_disk(64, read_only=True)  # a cache with nothing in it, read-only
    proc = subprocess.run([sys.executable, "train.py", *args(tiny_root, read_only, tmp_path / "a")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"view cache {read_only}: cannot write there (Read-only file system)" in proc.stderr
    full = small_disk(32)  # room for a few of the 24 entries
    with pytest.raises(OSError, match=r"view cache: cannot write .*\.npy \(No space left on "
                                      r"device\); free space there, or pass --cache=DIR"):
        train.main(args(tiny_root, full, tmp_path / "b"))
    out = small_disk(32)  # the views are cached; the checkpoint does not fit
    with pytest.raises(OSError, match=rf"{out}/t/\S+: cannot write it \(No space left on device\)"):
        train.main(args(tiny_root, cache, out))


def test_a_log_torn_by_a_kill_mid_append_still_reads(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "train_lo')  # killed mid-line
    assert loop.read_log(log) == [{"step": 1}, {"step": 2}]
    loop.trim_log(log, step=1)
    assert log.read_text() == '{"step": 1}\n'
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log.jsonl: line 2 is not a JSON record"):
        loop.read_log(log)


def _save_3d_checkpoint(tmp_path):
    """A small from-scratch 3D model saved as train.py does: (path, model, tokenizer)."""
    config3d = parse_args(["--image_size=32", "--pretrained=", "--views=-20,0;0,0;20,0"])
    tokenizer = build.build_tokenizer(config3d)
    torch.manual_seed(1)
    model3d = build.build_model(config3d, tokenizer, 6)
    ckpt = tmp_path / "3d.pt"
    save_checkpoint(ckpt, {"model": model3d.state_dict(), "config": to_dict(config3d),
                           "merges": [list(m) for m in tokenizer.merges],
                           "classes": list(EMOTIONS), "quick_gelu": False})
    return ckpt, model3d, tokenizer


def test_a_4d_model_starts_from_a_3d_checkpoint_and_refuses_a_mismatch(tmp_path):
    """--init: every weight of the 3D checkpoint (towers, fusion, input statistics) starts the
    4D model, whose temporal fusion starts fresh; its tokenizer is the checkpoint's; weights of
    another shape (other view slots) are refused, naming the file."""
    ckpt, model3d, tokenizer = _save_3d_checkpoint(tmp_path)
    config4d = parse_args(["--image_size=32", "--frames=4", "--views=-20,0;0,0;20,0",
                           "--pretrained=", f"--init={ckpt}"])
    assert build.build_tokenizer(config4d).merges == tokenizer.merges
    model4d = build.build_model(config4d, build.build_tokenizer(config4d), 6)
    fresh = [k for k in model4d.state_dict() if k not in model3d.state_dict()]
    assert fresh and all(k.startswith("fusion.temporal.") for k in fresh)
    for name, tensor in model3d.state_dict().items():
        assert torch.equal(model4d.state_dict()[name], tensor), name
    wider = parse_args(["--image_size=32", "--frames=4", f"--init={ckpt}", "--pretrained=",
                        "--views=" + ";".join(f"{y},0" for y in range(-50, 51, 10))])  # 11 slots
    with pytest.raises(ValueError, match=r"3d\.pt: --init weights do not fit"):
        build.build_model(wider, build.build_tokenizer(wider), 6)


def test_a_difference_input_takes_its_statistics_from_its_training_set(tmp_path):
    """--init with --onset=difference: the start's mean face does not describe a grey
    difference image, so the pixel statistics are the training set's (recomputed here by
    hand); a magnified input, still a face, keeps the start's."""
    ckpt, model3d, _ = _save_3d_checkpoint(tmp_path)
    generator = torch.Generator().manual_seed(0)
    items = [(0.5 + 0.02 * torch.randn(2, 3, 3, 32, 32, generator=generator), 0, {})
             for _ in range(3)]  # (T, V, 3, H, W) difference images around grey
    pixels = torch.stack([views for views, _, _ in items]).double()  # (N, T, V, 3, H, W)
    mean = pixels.mean(dim=(0, 1))  # (V, 3, H, W)
    std = (pixels - mean).square().mean().sqrt()
    for onset, expect_mean, expect_std in (
            ("difference", mean.float(), float(std)),
            ("magnified", model3d.pixel_mean[:3], model3d.pixel_std[:3])):
        config = parse_args(["--image_size=32", "--frames=2", "--views=-20,0;0,0;20,0",
                             "--pretrained=", f"--init={ckpt}", f"--onset={onset}"])
        model = build.build_model(config, build.build_tokenizer(config), 6, train_set=items)
        torch.testing.assert_close(model.pixel_mean[:3], expect_mean)
        torch.testing.assert_close(model.pixel_std[:3], torch.full_like(model.pixel_std[:3], 1)
                                   * expect_std)


def test_a_validation_split_scores_the_epochs_and_the_test_fold_once(cache, tmp_path):
    """--val_subjects: the epochs are scored on people held out of the training fold, the test
    fold once, after the last epoch, on the weights the checkpoint keeps (evaluate.py agrees)."""
    root = synth.write_bu3dfe(tmp_path / "bu3dfe", subjects=3, seed=0)  # 1 test, 1 val, 1 train
    [metrics] = train.main(args(root, cache, tmp_path, "--folds=3", "--val_subjects=1"))
    epochs = [r for r in loop.read_log(tmp_path / "t" / "log.jsonl") if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all("val_acc" in r and "test_acc" not in r for r in epochs)
    # the run's result is the moving average of the weights (the cpu preset's --ema_decay)
    assert metrics["validation"]["accuracy"] == epochs[-1]["val_acc_ema"]
    assert metrics["n"] == 12  # the test person x 6 emotions x 2 intensities
    # the checkpoint holds the weights the test fold was read with: evaluate.py agrees
    again = evaluate.main(["--ckpt", str(tmp_path / "t" / "ckpt.pt"), "--cache", str(cache)])
    assert again["accuracy"] == metrics["accuracy"] and again["n"] == 12


@pytest.mark.parametrize("preset, init", [
    ("4d", "facet-3d"), ("micro", "facet-3d"),
    ("4d --init=facet-3d-tiny --model=tiny", "facet-3d-tiny")])
def test_the_4d_presets_start_from_facets_shipped_3d_models(preset, init):
    """--init=facet-3d (the 4d and micro presets'; facet-3d-tiny, the patch tower's): every
    weight of the shipped 3D model, stored in float16, starts the 4D model in float32; only the
    temporal fusion starts fresh."""
    config = parse_args(f"--preset={preset}".split())
    assert config.init == init
    shipped = load_checkpoint(build.SHIPPED_3D[init], required=("model", "config", "merges"))
    assert shipped["config"]["model"] == config.model  # the preset names the shipped towers
    model = build.build_model(config, build.build_tokenizer(config), 6)
    state = model.state_dict()
    assert all(k.startswith("fusion.temporal.") for k in state if k not in shipped["model"])
    for name, tensor in shipped["model"].items():
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name], tensor.float()), name
    assert shipped["classes"] == list(EMOTIONS)


def test_action_unit_head_reads_the_annotations_and_adds_its_loss(tiny_root, cache):
    """--lambda_au: the training items carry their annotated AUs as multi-hot targets over every
    AU of the split; the step's loss is the usual one plus lambda_au times the mean binary
    cross-entropy of the head's AU logits on the face embedding (recomputed here); a split
    without any annotation is refused."""
    from dataclasses import replace

    from facet.data.layouts import action_units
    from facet.losses import total_loss

    assert (action_units("6+12"), action_units("LFAU_12"), action_units("")) == ((6, 12), (12,), ())
    config = parse_args([f"--data={tiny_root}", f"--cache={cache}", *TINY, "--no-augment",
                         "--lambda_au=0.5"])
    samples, _ = build.select_samples(tiny_root, config)
    store, kept, _ = build.fill_cache(samples, config)
    with pytest.raises(ValueError, match="--lambda_au needs action-unit annotations"):
        build.make_dataset(kept[:4], store, config, tuple(EMOTIONS), train=True)
    annotated = [replace(s, aus=a) for s, a in zip(kept[:4], ("1+2", "12", "", "2+26"))]
    dataset = build.make_dataset(annotated, store, config, tuple(EMOTIONS), train=True)
    assert dataset.aus == (1, 2, 12, 26)
    batch = collate([dataset[i] for i in range(4)])
    assert batch["aus"].tolist() == [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]]
    tokenizer = build.build_tokenizer(config)
    model = build.build_model(config, tokenizer, 6)
    objective = build.build_objective(config, model, tokenizer, tuple(EMOTIONS),
                                      torch.Generator().manual_seed(0), num_aus=4)
    model.eval()  # batch statistics and dropout off: two forward passes agree
    loss, _, parts = objective(batch)
    output = model(batch["views"], class_tokens=objective.prompts.tokens(batch["meta"]))
    au_logits = output.embedding @ objective.au_head.weight.T + objective.au_head.bias  # (4, 4)
    expected_au = torch.nn.functional.binary_cross_entropy_with_logits(au_logits, batch["aus"])
    usual, _ = total_loss(output, batch["label"], objective.loss_config)
    torch.testing.assert_close(loss, usual + 0.5 * expected_au)
    assert parts["au"] == pytest.approx(expected_au.item(), rel=1e-5)
    loss.backward()
    assert objective.au_head.weight.grad.abs().sum() > 0
