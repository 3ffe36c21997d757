"""The Streamlit page, run headless with Streamlit's own testing API (skipped without streamlit:
`python -m pip install -r requirements-app.txt`)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit", reason="the app's dependencies are optional: "
                                         "python -m pip install -r requirements-app.txt")
from streamlit.testing.v1 import AppTest  # noqa: E402

from facet import build  # noqa: E402
from facet.checkpoint import save_checkpoint, save_openai  # noqa: E402
from facet.config import parse_args, to_dict  # noqa: E402
from facet.data.layouts import EMOTIONS  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app.py"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A folder with one untrained 16-px checkpoint in train.py's format (the page, not the
    accuracy, is under test here)."""
    root = tmp_path_factory.mktemp("out")
    config = parse_args(["--image_size=16", "--pretrained="])
    tokenizer = build.build_tokenizer(config)
    model = build.build_model(config, tokenizer, len(EMOTIONS))
    save_checkpoint(root / "tiny" / "ckpt.pt", {
        "model": model.state_dict(), "config": to_dict(config), "classes": list(EMOTIONS),
        "merges": [list(m) for m in tokenizer.merges]})
    return root


def page(root: Path) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    at.sidebar.text_input(key="root").set_value(str(root))
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def progress_texts(at: AppTest) -> str:
    return "\n".join(e.proto.text for e in at.get("progress"))


@pytest.mark.slow
def test_built_in_face_prediction_and_zero_shot(checkpoints):
    files = sorted(checkpoints.rglob("*"))
    at = page(checkpoints)
    assert not at.exception and not at.error, texts(at.error)
    assert "built-in happiness 4, subject 0" in texts(at.subheader)
    assert len(at.get("image")) == 2 * 3  # 3 views, each as seen and with saliency
    assert all(name in progress_texts(at) for name in EMOTIONS)  # probability bars
    at.sidebar.selectbox(key="emotion").set_value("surprise")
    at.sidebar.slider(key="intensity").set_value(2)
    at.sidebar.number_input(key="subject").set_value(5)
    at.run()
    assert not at.exception and "built-in surprise 2, subject 5" in texts(at.subheader)
    at.sidebar.text_input(key="classes").set_value("happiness, a wide open mouth")
    at.run()
    assert not at.exception and not at.error
    bars = progress_texts(at)
    assert "a wide open mouth:" in bars and "anger" not in bars
    assert sorted(checkpoints.rglob("*")) == files  # the page wrote nothing beside them


@pytest.mark.slow
def test_bad_inputs_are_shown_not_raised(checkpoints, tmp_path):
    at = page(checkpoints)
    at.sidebar.radio(key="source").set_value("upload")
    at.run()
    assert not at.exception and "Upload a scan" in texts(at.info)
    leftovers = set(Path(tempfile.gettempdir()).glob("facet-app-*"))
    at.sidebar.get("file_uploader")[0].set_value(
        ("broken.wrl", b"#VRML V2.0 utf8\nShape { garbage", "model/vrml"))
    at.run()
    assert not at.exception
    error = texts(at.error)
    assert error.startswith("broken.wrl:") and "facet-app-" not in error, error
    assert set(Path(tempfile.gettempdir()).glob("facet-app-*")) == leftovers  # removed again

    cut_zip = ("frames.zip", b"PK\x03\x04 cut", "application/zip")
    at.sidebar.get("file_uploader")[0].set_value(cut_zip)
    at.run()
    assert not at.exception and "frames.zip: not a readable zip file" in texts(at.error)

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
