"""Prediction on one scan (facet.app.explain, `evaluate.py --ckpt CKPT SCAN`): the same pixels and
probabilities as evaluate.py, saliency that adds up, and every bad input named."""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import evaluate
import train
from facet import build
from facet.app import demo_faces, explain, uploads
from facet.checkpoint import save_checkpoint, save_openai
from facet.data.layouts import EMOTIONS
from facet.data.meshio import save_wrl
from facet.data.view_cache import ViewCache
from facet.faces import scanner, synth
from facet.model import FacetConfig, FacetVLM

REPO = Path(__file__).resolve().parents[1]

# 2 subjects, 2 folds, 16-px views (one ViT patch), 2 epochs: a real checkpoint in seconds
TINY = ["--folds=2", "--fold=0", "--image_size=16", "--batch_size=6", "--epochs=2",
        "--threads=1", "--render_workers=1", "--eval_batch_size=8",
        "--pretrained="]  # from scratch: 16 px in seconds (the default fine-tunes a 64-px CLIP)


def tiny_run(root: Path, cache: Path, out: Path, *extra: str) -> Path:
    """Train a tiny run on `root`; returns its checkpoint."""
    train.main([f"--data={root}", f"--cache={cache}", f"--out={out}", "--name=t", *TINY, *extra])
    return out / "t" / "ckpt.pt"


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    """(checkpoint, view cache folder) of a tiny BU-3DFE run."""
    base = tmp_path_factory.mktemp("static")
    root = synth.write_bu3dfe(base / "bu3dfe", subjects=2, seed=0)
    return tiny_run(root, base / "cache", base / "out"), base / "cache"


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """(checkpoint, view cache folder) of a tiny BU-4DFE run: 3 frames around the apex."""
    base = tmp_path_factory.mktemp("4d")
    root = synth.write_bu4dfe(base / "bu4dfe", subjects=2, seed=0, seconds=(0.24, 0.32))
    return tiny_run(root, base / "cache", base / "out", "--frames=3",
                    "--frame_sampling=apex"), base / "cache"


def evaluated(ckpt: Path, cache: Path, out: Path) -> dict[str, list[float]]:
    """evaluate.py's probabilities per sample path, on the checkpoint's held-out fold."""
    metrics = evaluate.main(["--ckpt", str(ckpt), "--cache", str(cache), "--out", str(out)])
    return {p["path"]: p["probabilities"] for p in metrics["predictions"]}


@pytest.mark.slow
def test_a_scan_gets_the_probabilities_evaluate_reports(static, tmp_path):
    ckpt, cache = static
    reported = evaluated(ckpt, cache, tmp_path / "eval")
    predictor = build.load_predictor(ckpt)
    for path in list(reported)[:3]:
        prediction = explain.explain(predictor, path)
        torch.testing.assert_close(prediction.probabilities, torch.tensor(reported[path]))
    # the pixels are the view cache's, bit for bit
    samples, _ = build.select_samples(Path(predictor.config.data), predictor.config)
    sample = next(s for s in samples if s.path == path)
    stored = torch.from_numpy(ViewCache(cache, predictor.settings).load(sample))  # (1, V, C, H, W)
    views, frames = explain.render_scan(path, predictor.settings)
    assert frames == [Path(path).name]
    assert torch.equal(views, stored.expand(-1, -1, 3, -1, -1))


@pytest.mark.slow
def test_a_sequence_gets_the_probabilities_evaluate_reports(sequences, tmp_path):
    ckpt, cache = sequences
    reported = evaluated(ckpt, cache, tmp_path / "eval")
    predictor = build.load_predictor(ckpt)
    folder = Path(next(iter(reported)))  # a sequence is a folder of frames
    assert folder.is_dir()
    prediction = explain.explain(predictor, folder)
    torch.testing.assert_close(prediction.probabilities, torch.tensor(reported[str(folder)]))
    t, v = 3, 3
    assert prediction.views.shape[:2] == (t, v) and prediction.saliency.shape[:2] == (t, v)
    assert prediction.frame_weights.shape == (t,)
    assert prediction.frame_weights.sum().item() == pytest.approx(1, abs=1e-5)
    frames = sorted(p.name for p in folder.glob("*.wrl"))
    assert all(name in frames for name in prediction.frames)
    assert prediction.frames == sorted(prediction.frames)  # apex window, in order
    # frames listed in natural order, whatever order the folder gives
    assert [p.name for p in explain.sequence_frames(folder)] == frames


@pytest.mark.slow
def test_cli_writes_json_sheets_and_a_table(static, tmp_path, capsys):
    ckpt, _ = static
    scan = tmp_path / "face.wrl"
    save_wrl(scanner.demo_face("surprise", 4, seed=3), scan)
    frames = tmp_path / "seq"
    frames.mkdir()
    for i in (10, 9):  # "9" comes before "10"
        save_wrl(scanner.demo_face("happiness", 2 + i % 2, seed=1), frames / f"{i}.wrl")
    flat = tmp_path / "flat.obj"  # renders blank: skipped and reported, the others predicted
    flat.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    report = evaluate.main(["--ckpt", str(ckpt), str(scan), str(flat), str(frames),
                            "--out", str(tmp_path / "pred")])
    saved = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert [p["name"] for p in saved["predictions"]] == ["face.wrl", "seq"]
    assert [s["scan"] for s in saved["skipped"]] == [str(flat)]
    assert "renders to an (almost) empty image" in saved["skipped"][0]["reason"]
    captured = capsys.readouterr()
    assert f"skipped {flat}: " in captured.err
    first = saved["predictions"][0]
    assert sum(first["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert np.asarray(first["saliency"]["maps"]).shape == (1, 3, 16, 16)
    assert len(first["view_predictions"][0]) == 3 and len(first["view_weights"][0]) == 3
    assert saved["predictions"][1]["frames"] == ["9.wrl"]  # T = 1: the first in natural order
    for name in ("face.png", "seq.png"):
        assert (tmp_path / "pred" / name).read_bytes()[:4] == b"\x89PNG"
    assert "face.wrl" in captured.out and "predicted" in captured.out
    assert "prediction.json" in captured.out and "1 scan(s) skipped" in captured.out

    zero = evaluate.main(["--ckpt", str(ckpt), str(scan), "--out", str(tmp_path / "zs"),
                          "--zero-shot", "happiness, a wide open mouth"])
    assert zero["zero_shot"] and zero["classes"] == ["happiness", "a wide open mouth"]
    prompts = zero["predictions"][0]["prompts"]["a wide open mouth"]
    assert {p["prompt"] for p in prompts} == {"a wide open mouth"}  # a description: its own prompt
    assert "a 3D scan of a face showing happiness." in [
        p["prompt"] for p in zero["predictions"][0]["prompts"]["happiness"]]


@pytest.mark.slow
def test_a_sphere_is_predicted_but_marked_unlike_the_training_faces(static, tmp_path, capsys):
    ckpt, _ = static
    sphere = tmp_path / "sphere.obj"
    trimesh.creation.icosphere(subdivisions=3).export(sphere)
    config = build.load_predictor(ckpt).config
    samples, _ = build.select_samples(Path(config.data), config)  # a training scan: familiar
    face = samples[0].path
    report = evaluate.main(["--ckpt", str(ckpt), str(sphere), face, "--out", str(tmp_path)])
    odd, usual = (p["familiarity"] for p in report["predictions"])
    assert odd["unfamiliar"] and odd["score"] < odd["threshold"]
    assert "unlike the training faces" in odd["reasons"][0]
    assert not usual["unfamiliar"] and usual["reasons"] == []
    assert usual["score"] > usual["threshold"]
    out = capsys.readouterr().out
    table = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert table["sphere.obj"].endswith(" !") and not table[Path(face).name].endswith("!")
    assert "! sphere.obj: unlike the training faces" in out
    assert "1 scan(s) unlike the training faces" in out
    assert (tmp_path / "sphere.png").is_file()


@pytest.mark.slow
def test_demo_face_comparison_classifies_as_explain_does(static):
    predictor = build.load_predictor(static[0])
    faces = [scanner.demo_face("anger", 4, seed=k) for k in range(2)]
    quick = demo_faces.classify(predictor, faces)  # (2, K), without the saliency
    for face, row in zip(faces, quick):
        torch.testing.assert_close(row, explain.explain(predictor, face).probabilities)
    variants = {"demo": demo_faces.VARIANTS["typical crop, on its bounding box (demo_face)"]}
    result = demo_faces.compare(predictor, people=2, variants=variants)["demo"]
    assert result["per_class"]["anger"] == float((quick.argmax(-1) == 0).float().mean())
    assert set(result["per_class"]) == set(EMOTIONS) and 0 <= result["flagged"] <= 1
    assert result["accuracy"] == pytest.approx(np.mean(list(result["per_class"].values())))


@pytest.mark.slow
def test_saliency_adds_up_to_the_rise_in_log_probability(static):
    """Integrated gradients' completeness: the attributions sum to log p(x) - log p(mean face),
    where p(x) is of the face as read (with --mirror_test the reported probability is the mean
    with its mirror image's: the model without the mirror gives the same endpoint)."""
    predictor = build.load_predictor(static[0])
    prediction = explain.explain(predictor, scanner.demo_face("happiness", 4, seed=2))
    rise = prediction.saliency_endpoint - prediction.saliency_reference
    plain = dataclasses.replace(predictor, config=dataclasses.replace(predictor.config,
                                                                      mirror_test=False))
    alone = explain.explain(plain, scanner.demo_face("happiness", 4, seed=2), saliency=False)
    k = int(prediction.probabilities.argmax())
    assert prediction.saliency_endpoint == pytest.approx(alone.probabilities[k].log().item(),
                                                         abs=1e-5)
    assert prediction.saliency.sum().item() == pytest.approx(rise, rel=0.05, abs=1e-3)
    # pixels that equal the mean face (the background every view shares) get nothing
    reference = predictor.model.pixel_mean[:3]
    same = (prediction.views[0].float() / 255 - reference).abs().amax(dim=1) < 1e-6  # (V, H, W)
    assert prediction.saliency[0][same].abs().max().item() < 1e-6 if same.any() else True


@pytest.mark.slow
def test_errors_name_the_file_and_the_reason(static, tmp_path):
    ckpt, _ = static
    predictor = build.load_predictor(ckpt)
    bad = tmp_path / "broken.obj"
    bad.write_text("v 1 2\nf 1 2 3\n")
    with pytest.raises(ValueError, match="broken.obj"):
        explain.explain(predictor, bad)
    flat = tmp_path / "flat.obj"  # collinear corners: a triangle of no area, a blank render
    flat.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"flat.obj: renders to an \(almost\) empty image"):
        explain.explain(predictor, flat)
    with pytest.raises(ValueError, match=r"none of the 2 scans could be predicted:\n  .*flat.obj"):
        evaluate.main(["--ckpt", str(ckpt), str(flat), str(bad), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="a sequence with no frames"):
        explain.explain(predictor, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere.wrl"):
        explain.explain(predictor, tmp_path / "nowhere.wrl")
    head = FacetVLM(FacetConfig(image_size=16, vocab_size=predictor.tokenizer.vocab_size,
                                text_head=False, num_classes=6))
    linear = dataclasses.replace(predictor, model=head)
    with pytest.raises(ValueError, match="cannot classify new class names"):
        explain.explain(linear, scanner.demo_face(), classes=["a frown"])
    # checkpoints of another kind, unreadable files, a missing one
    clip = tmp_path / "clip.pt"
    torch.save({"state_dict": {"logit_scale": torch.zeros(())}, "merges": []}, clip)
    with pytest.raises(ValueError, match="clip.pt: not a loadable CLIP ViT checkpoint"):
        build.load_predictor(clip)
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"model": {}})
    missing = (r"other.pt: not a facet checkpoint of this version: "
               r"no \[.config., .classes., .merges.\]")
    with pytest.raises(ValueError, match=missing):
        build.load_predictor(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not readable as checkpoint"):
        build.load_predictor(junk)
    with pytest.raises(FileNotFoundError, match="none.pt"):
        build.load_predictor(tmp_path / "none.pt")
    # the CLI: scans and dataset options do not mix; a missing scan is named before loading
    with pytest.raises(ValueError, match="use one or the other"):
        evaluate.main(["--ckpt", str(ckpt), str(bad), "--split", "all"])
    with pytest.raises(FileNotFoundError, match="nowhere.wrl"):
        evaluate.main(["--ckpt", str(ckpt), str(tmp_path / "nowhere.wrl"),
                       "--out", str(tmp_path / "o")])


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_uploads_become_scans_or_one_sequence(tmp_path):
    mesh = b"#VRML V2.0 utf8\n"
    one = uploads.save_uploads([("face.wrl", mesh), ("face.bnd", b"1 2 3")], tmp_path / "a")
    assert one.scans == [tmp_path / "a" / "face.wrl"] and one.refused == []
    # several meshes are several scans, unless they are said to be one sequence's frames
    two = uploads.save_uploads([("2.wrl", mesh), ("10.wrl", mesh), ("notes.txt", b"hi")],
                               tmp_path / "b")
    assert two.scans == [tmp_path / "b" / "2.wrl", tmp_path / "b" / "10.wrl"]
    assert [name for name, _ in two.refused] == ["notes.txt"]
    assert "not a scan: .txt suffix" in two.refused[0][1]
    seq = uploads.save_uploads([("2.wrl", mesh), ("10.wrl", mesh)], tmp_path / "c", sequence=True)
    assert seq.scans == [tmp_path / "c"]
    archive = zipped({"clip/000.wrl": mesh, "clip/001.wrl": mesh, "__MACOSX/clip/._000.wrl": b"x",
                      "clip/.hidden.wrl": b"x"})
    folder = uploads.save_uploads([("clip.zip", archive)], tmp_path / "d", sequence=True).scans
    assert folder == [tmp_path / "d" / "clip" / "clip"]
    assert [p.name for p in explain.sequence_frames(folder[0])] == ["000.wrl", "001.wrl"]
    frames = uploads.save_uploads([("clip.zip", archive)], tmp_path / "e").scans
    assert [p.name for p in frames] == ["000.wrl", "001.wrl"]  # not chosen: each on its own
    # an uploaded name is a name, never a path
    assert uploads.save_uploads([("../../x.wrl", mesh)], tmp_path / "f").scans == [
        tmp_path / "f" / "x.wrl"]
    with pytest.raises(ValueError, match="3 scans, more than the 2 predicted at once"):
        uploads.save_uploads([(f"{i}.wrl", mesh) for i in range(3)], tmp_path / "g", max_scans=2)


def zipped_raw(members: list[tuple[str, bytes]], encrypted: bool = False) -> bytes:
    """A zip whose members may repeat a name, or carry the encrypted flag (zipfile writes no
    encryption: the flag is set in the local and central headers afterwards, and the flag alone
    is what makes a reader ask for a password)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            with warnings.catch_warnings():  # "Duplicate name": the point of the case
                warnings.simplefilter("ignore")
                archive.writestr(name, data)
    raw = bytearray(buffer.getvalue())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)) if encrypted else ():
        start = raw.find(signature)
        while start >= 0:
            raw[start + flags_at] |= 0x1
            start = raw.find(signature, start + 4)
    return bytes(raw)


@pytest.mark.parametrize("files, message", [
    ([], "nothing uploaded"),
    ([("clash.zip", zipped({"a": b"x", "a/b.wrl": b"y"}))],
     r"clash.zip: member 'a/b.wrl' collides with another member"),
    ([("twice.zip", zipped_raw([("f.wrl", b"x"), ("f.wrl", b"y")]))],
     r"twice.zip: member 'f.wrl' collides with another member"),
    ([("locked.zip", zipped_raw([("f.wrl", b"x")], encrypted=True))],
     r"locked.zip: member 'f.wrl' is encrypted"),
    ([("notes.txt", b"hello")], r"no mesh among the uploads \(notes.txt\)"),
    ([("big.wrl", b"x" * (2**20 + 1))], "the upload is 1.0 MB, more than the 1 MB allowed"),
    ([("bad.zip", b"PK not really")], "bad.zip: not a readable zip file"),
    ([("evil.zip", zipped({"../../evil.wrl": b"x"}))], "refused member '../../evil.wrl'"),
    ([("abs.zip", zipped({"/etc/evil.wrl": b"x"}))], "refused member '/etc/evil.wrl'"),
    ([("bomb.zip", zipped({"a.wrl": bytes(3 * 2**20)}))], "bomb.zip: unpacks to more than 2 MB"),
    ([("a.zip", zipped({"x/1.wrl": b"x", "y/1.wrl": b"x"}))], "meshes in several folders"),
])
def test_bad_uploads_are_refused_with_the_reason(files, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        uploads.save_uploads(files, tmp_path, sequence=True, max_mb=1, max_unpacked_mb=2)
    assert not (tmp_path.parent / "evil.wrl").exists() and not Path("/etc/evil.wrl").exists()


@pytest.mark.slow
def test_a_pretrained_clip_classifies_zero_shot_like_evaluate(static, tmp_path):
    """CLIP weights in OpenAI's layout (clip.pt, with merges and how they were rendered) are a
    predictor of their own kind: evaluate.py scores every sample of a dataset with the prompt
    ensembles (a pretrained CLIP saw none of its people), and one scan gets the same numbers."""
    ckpt, cache = static
    trained = build.load_predictor(ckpt)  # borrow a tiny CLIP and its BPE
    weights = tmp_path / "clip.pt"
    save_openai(weights, trained.model.clip, trained.tokenizer.merges,
                render={"views": trained.config.views, "image_size": 16, "mode": "normals"})
    predictor = build.load_predictor(weights)
    assert predictor.kind == "clip" and predictor.classes == tuple(EMOTIONS)
    assert predictor.settings == trained.settings
    metrics = evaluate.main(["--ckpt", str(weights), "--data", trained.config.data,
                             "--cache", str(cache), "--out", str(tmp_path / "zs")])
    assert metrics["n"] == 24  # --split=all: both subjects
    reported = {p["path"]: p["probabilities"] for p in metrics["predictions"]}
    path = sorted(reported)[0]
    torch.testing.assert_close(explain.explain(predictor, path).probabilities,
                               torch.tensor(reported[path]))
    with pytest.raises(ValueError, match="--split=test needs"):
        evaluate.main(["--ckpt", str(weights), "--split", "test", "--out", str(tmp_path / "x")])
    # zero-shot by description: the dataset's labels, each prompted by a sentence of its own
    described = evaluate.main(["--ckpt", str(weights), "--data", trained.config.data,
                               "--cache", str(cache), "--out", str(tmp_path / "described"),
                               "--zero-shot", "happiness=a face with the lip corners pulled up,"
                               " surprise=a face with the jaw dropped and brows raised"])
    assert described["n"] == 8 and set(described["per_class"]) == {"happiness", "surprise"}
    stored = json.loads((tmp_path / "described" / "metrics.json").read_text())
    assert stored["class_prompts"] == ["a face with the lip corners pulled up",
                                       "a face with the jaw dropped and brows raised"]
    for bad in ("happiness=,sadness", "happiness,,sadness", "joy,joy"):
        with pytest.raises(ValueError, match="--zero-shot"):
            evaluate.zero_shot_classes(bad)



@pytest.mark.slow
def test_a_batch_with_a_bad_scan_exits_1_and_names_it(static, tmp_path):
    ckpt, _ = static
    good = tmp_path / "face.wrl"
    save_wrl(scanner.demo_face("surprise", 4, seed=3), good)
    empty = tmp_path / "empty.obj"
    empty.write_text("")
    proc = subprocess.run([sys.executable, "evaluate.py", "--ckpt", str(ckpt), str(good),
                           str(empty), "--out", str(tmp_path / "pred")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"skipped {empty}: {empty}: empty file" in proc.stderr
    saved = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    assert [p["name"] for p in saved["predictions"]] == ["face.wrl"]


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> build.Predictor:
    """An untrained 16-px checkpoint in train.py's format, loaded as a predictor (the pictures,
    not the accuracy, are under test)."""
    from facet.config import parse_args, to_dict

    config = parse_args(["--image_size=16", "--pretrained="])
    tokenizer = build.build_tokenizer(config)
    model = build.build_model(config, tokenizer, len(EMOTIONS))
    path = tmp_path_factory.mktemp("untrained") / "ckpt.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(config),
                           "classes": list(EMOTIONS),
                           "merges": [list(m) for m in tokenizer.merges]})
    return build.load_predictor(path)


def test_saliency_can_be_skipped_and_the_sheet_draws_either(untrained, tmp_path):
    face = scanner.demo_face("happiness", 4, seed=0)
    quick = explain.explain(untrained, face, saliency=False)
    assert quick.saliency is None and quick.saliency_reference is None
    assert quick.to_json()["saliency"] is None
    full = explain.explain(untrained, face)
    torch.testing.assert_close(quick.probabilities, full.probabilities)  # the same prediction
    assert full.saliency.shape == full.views.shape[:2] + full.views.shape[-2:]  # (T, V, H, W)
    patch = explain.patch_pixels(untrained)
    assert patch == untrained.model.clip.visual.patch_size  # 16-px views, 16-px CLIP input
    for p, name in ((quick, "quick.png"), (full, "full.png")):
        sheet = explain.save_sheet(p, tmp_path / name, truth="happiness", patch=patch)
        assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_overlay_and_its_colour_scale_share_one_map():
    """The colour bar is `saliency_colours` from -scale to +scale; the overlay must use the same
    map and saturate at the scale, the 99th percentile of |saliency|."""
    views = torch.full((1, 3, 4, 100), 153, dtype=torch.uint8)  # one grey view (0.6)
    saliency = torch.linspace(-2, 2, 400).view(1, 4, 100)  # (V, H, W)
    scale = explain.saliency_scale(saliency)
    assert scale == pytest.approx(float(saliency.abs().flatten().quantile(0.99)))
    image = torch.from_numpy(explain.overlay(views, saliency)).float() / 255  # (V, H, W, 3)
    expected = explain.saliency_colours(saliency / scale, torch.full((1, 4, 100), 0.6))
    torch.testing.assert_close(image, expected, atol=1 / 255, rtol=0)
    red, blue = explain.saliency_colours(torch.tensor([1.0, -1.0]), torch.tensor([0.6, 0.6]))
    assert red[0] > 0.8 > red[2] and blue[2] > 0.8 > blue[0]  # red raises, blue lowers
    grey = explain.saliency_colours(torch.tensor([0.0]), torch.tensor([0.6]))[0]
    assert torch.allclose(grey, torch.full((3,), 0.35 + 0.5 * 0.6))  # no attribution: grey


def test_a_scan_read_against_its_neutral_renders_as_the_cache_does(tmp_path):
    """A model trained on 3D scans with --onset needs the person's neutral scan: without it the
    scan is refused (saying what to give); with it the views are the cache's pair (the oracle:
    `render_frames` of (neutral, scan)), the scan repeated T times after the reference."""
    from facet.data.view_cache import render_frames
    from facet.render import RenderSettings

    settings = RenderSettings(image_size=16)
    neutral, smile = tmp_path / "neutral.wrl", tmp_path / "smile.wrl"
    save_wrl(scanner.demo_face("neutral", seed=3), neutral)
    save_wrl(scanner.demo_face("happiness", 4, seed=3), smile)
    with pytest.raises(ValueError, match="--neutral FILE"):
        explain.render_scan(smile, settings, onset="magnified")
    views, names = explain.render_scan(smile, settings, frames=2, onset="magnified",
                                       neutral=neutral)
    pair, _ = render_frames([neutral, smile], settings)
    assert names == ["neutral.wrl", "smile.wrl", "smile.wrl"]
    assert torch.equal(views, torch.from_numpy(pair[[0, 1, 1]]))
