"""The Streamlit page, run headless with Streamlit's own testing API (skipped without streamlit:
`python -m pip install -r requirements-app.txt`). A tiny untrained 16-px checkpoint stands in
for a trained one: the page, not the accuracy, is under test."""
from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit", reason="the app's dependencies are optional: "
                                         "python -m pip install -r requirements-app.txt")
from streamlit.runtime.media_file_manager import MediaFileManager  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from facet import build  # noqa: E402
from facet.checkpoint import save_checkpoint, save_openai  # noqa: E402
from facet.config import parse_args, to_dict  # noqa: E402
from facet.data.layouts import EMOTIONS  # noqa: E402
from facet.data.meshio import save_wrl  # noqa: E402
from facet.faces import scanner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
VIEWS = 3  # the default render settings' views


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A folder with one untrained 16-px checkpoint in train.py's format."""
    root = tmp_path_factory.mktemp("out")
    config = parse_args(["--image_size=16", "--pretrained="])
    tokenizer = build.build_tokenizer(config)
    model = build.build_model(config, tokenizer, len(EMOTIONS))
    save_checkpoint(root / "tiny" / "ckpt.pt", {
        "model": model.state_dict(), "config": to_dict(config), "classes": list(EMOTIONS),
        "merges": [list(m) for m in tokenizer.merges]})
    return root


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, bytes]:
    """Two built-in faces as VRML files, as a person would upload them."""
    folder = tmp_path_factory.mktemp("scans")
    files = {}
    for name, emotion in (("happy.wrl", "happiness"), ("surprised.wrl", "surprise")):
        save_wrl(scanner.demo_face(emotion, 4, 0), folder / name)
        files[name] = (folder / name).read_bytes()
    return files


def page(root: Path, saliency: bool = False) -> AppTest:
    """The page on a built-in face with the checkpoints under `root` (saliency off: fast)."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.sidebar.text_input(key="root").set_value(str(root))
    at.sidebar.toggle(key="saliency").set_value(saliency)
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def progress_texts(at: AppTest) -> str:
    return "\n".join(e.proto.text for e in at.get("progress"))


def images(at: AppTest) -> list:
    """Every picture on the page: the 3D preview, each view, each saliency map."""
    return [image for element in at.get("image") for image in element.proto.imgs]


def upload(at: AppTest, files: list[tuple[str, bytes]], sequence: bool = False) -> AppTest:
    at.sidebar.radio(key="source").set_value("upload")
    at.run()
    at.sidebar.checkbox(key="sequence").set_value(sequence)
    at.sidebar.get("file_uploader")[0].set_value([(n, data, "model/vrml") for n, data in files])
    return at.run()


def test_the_page_explains_itself_and_sends_no_usage_statistics():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    intro = at.markdown[0].value.split("\n")
    assert len(intro) == 2 and "FACET-VLM" in intro[0] and "sidebar" in intro[1]


def test_built_in_face_person_preview_saliency_and_downloads(checkpoints, monkeypatch):
    downloads = {}  # file name -> the callable the download button calls on a click
    add = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        downloads[file_name] = data_callable
        return add(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    files = sorted(checkpoints.rglob("*"))
    at = page(checkpoints, saliency=True)
    assert not at.exception and not at.error, texts(at.error)
    # a built-in face is one of the face model's people, chosen by a seed: not a dataset subject
    assert at.sidebar.number_input(key="person").label == "person"
    assert "subject" not in " ".join(w.label for w in at.sidebar.number_input)
    assert "built-in happiness 4, person 0" in texts(at.subheader)
    pictures = images(at)
    assert "triangles after decimation" in pictures[0].caption  # the 3D preview first
    assert len(pictures) == 1 + 2 * VIEWS  # then each view as seen and with saliency
    assert all(name in progress_texts(at) for name in EMOTIONS)  # probability bars
    assert "saliency included" in texts(at.caption)

    at.sidebar.toggle(key="saliency").set_value(False)
    at.run()
    assert not at.exception and len(images(at)) == 1 + VIEWS  # no saliency maps
    assert "without saliency" in texts(at.caption)

    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["prediction.json", "the sheet (PNG)"]
    record_json = json.loads(downloads["built-in-happiness-4-person-0.json"]())
    assert record_json["predicted"] in EMOTIONS and record_json["saliency"] is None
    assert downloads["built-in-happiness-4-person-0.png"]()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(checkpoints.rglob("*")) == files  # the page wrote nothing beside them


def test_built_in_faces_are_marked_correct_or_wrong(checkpoints):
    at = page(checkpoints)
    marks = []
    for emotion in ("anger", "happiness", "surprise"):
        at.sidebar.selectbox(key="emotion").set_value(emotion)
        at.run()
        assert not at.exception and not at.error, texts(at.error)
        predicted = at.subheader[0].value.split(": ")[1].split(" (")[0]
        mark = texts(at.markdown)
        expected = "✓ correct" if predicted == emotion else "✗ wrong"
        assert expected in mark, (emotion, predicted, mark)
        marks.append(expected)
    assert "✗ wrong" in marks  # an untrained model is no perfect classifier
    # one class to choose from cannot be wrong; a class the face does not show gets no mark
    at.sidebar.selectbox(key="emotion").set_value("happiness")
    at.sidebar.text_input(key="classes").set_value("happiness")
    at.run()
    assert "✓ correct" in texts(at.markdown)
    at.sidebar.text_input(key="classes").set_value("happiness, a wide open mouth")
    at.sidebar.selectbox(key="emotion").set_value("surprise")
    at.run()
    assert not at.exception and "a wide open mouth:" in progress_texts(at)
    assert "correct" not in texts(at.markdown) and "No mark" in texts(at.caption)


def test_one_prediction_per_upload_unless_a_sequence_is_chosen(checkpoints, scans):
    leftovers = set(Path(tempfile.gettempdir()).glob("facet-app-*"))
    files = list(scans.items())
    at = upload(page(checkpoints), files)
    assert not at.exception and not at.error, texts(at.error)
    assert [s.value.split(":")[0] for s in at.subheader] == ["happy.wrl", "surprised.wrl"]
    assert len(at.get("download_button")) == 2 * 2  # each prediction has its own downloads
    at.sidebar.checkbox(key="sequence").set_value(True)
    at.run()
    assert not at.exception and not at.error, texts(at.error)
    assert [s.value.split(":")[0] for s in at.subheader] == ["sequence of the uploads (2 frames)"]
    assert set(Path(tempfile.gettempdir()).glob("facet-app-*")) == leftovers  # removed again
    # "clear the uploads" empties the upload box: nothing piles up from one try to the next
    at.sidebar.button(key="clear").click()
    at.run()
    assert not at.exception and "Upload a scan" in texts(at.info)
    assert not at.subheader and not at.sidebar.get("file_uploader")[0].value


def test_a_scan_unlike_the_training_faces_is_flagged_on_the_page(checkpoints, scans, tmp_path):
    """A sphere gets the warning with its reason; a built-in face is said to be like them."""
    import numpy as np

    from facet.faces.probes import shape
    save_wrl(shape("icosphere", np.random.default_rng(0)), tmp_path / "ball.wrl")
    at = upload(page(checkpoints), [("ball.wrl", (tmp_path / "ball.wrl").read_bytes()),
                                    ("happy.wrl", scans["happy.wrl"])])
    assert not at.exception and not at.error, texts(at.error)
    warning = texts(at.warning)
    assert warning.startswith("Unlike the training faces") and "threshold" in warning, warning
    assert len(at.warning) == 1 and "Like the training faces" in texts(at.caption)


def test_rejected_and_broken_files_are_named_with_the_reason(checkpoints, scans):
    at = upload(page(checkpoints), [("notes.txt", b"hello"), ("broken.wrl", b"#VRML V2.0 utf8\n"
                                    b"Shape { garbage"), ("happy.wrl", scans["happy.wrl"])])
    assert not at.exception
    warning = texts(at.warning)
    assert warning.startswith("notes.txt: not a scan: .txt suffix"), warning
    error = texts(at.error)
    assert error.startswith("broken.wrl:") and "facet-app-" not in error, error
    assert [s.value.split(":")[0] for s in at.subheader] == ["happy.wrl"]  # the rest still runs

    at = upload(page(checkpoints), [("notes.txt", b"hello")])
    assert not at.exception and "no mesh among the uploads (notes.txt)" in texts(at.error)
    at = upload(page(checkpoints), [("frames.zip", b"PK\x03\x04 cut")])
    assert not at.exception and "frames.zip: not a readable zip file" in texts(at.error)


def test_clip_weights_wrong_files_and_no_checkpoint(checkpoints, tmp_path):
    torch.save({"state_dict": {}, "merges": []}, checkpoints / "clip.pt")
    try:
        at = page(checkpoints)
        at.sidebar.selectbox(key="checkpoint").set_value(checkpoints / "clip.pt")
        at.run()
        assert not at.exception and "not a loadable CLIP ViT checkpoint" in texts(at.error)
        # real CLIP weights with their merges: the CLIP alone, zero-shot by its prompts
        config = parse_args(["--image_size=16", "--pretrained="])
        tokenizer = build.build_tokenizer(config)
        clip = build.build_clip(config, tokenizer)
        save_openai(checkpoints / "clip.pt", clip, tokenizer.merges,
                    render={"views": config.views, "image_size": 16, "mode": config.mode})
        at.run()
        assert not at.exception and not at.error, texts(at.error)
        assert all(name in progress_texts(at) for name in EMOTIONS)
    finally:
        (checkpoints / "clip.pt").unlink()

    empty = page(tmp_path)  # no checkpoint at all
    assert not empty.exception and "No checkpoint found" in texts(empty.info)
