"""facet's interactive page: drop in a face, see what FACET-VLM sees, predicts, and why.

    python -m pip install -r requirements-app.txt && streamlit run app.py

A thin page over `facet.app.explain`, the functions `python evaluate.py --ckpt CKPT SCAN` uses:
pick a checkpoint found under a folder (default out/), a built-in face (subject, emotion,
intensity) or an upload (a mesh, the frames of a sequence, or a zip of either), and optionally
your own class names or descriptions (zero-shot). A checkpoint may also be CLIP weights with
their merges (facet's pretrained CLIP, `clip.pt`): the CLIP alone classifies by its prompts.
Uploads and built-in faces are written to a temporary folder that is removed when the
prediction is done; the page writes nothing else. Every error is shown on the page with the
file and the reason.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import facet  # noqa: F401 -- first: sets OpenMP's passive wait before torch loads

import numpy as np
import streamlit as st

from facet import build
from facet.app import explain
from facet.app.uploads import MAX_UPLOAD_MB, save_uploads
from facet.data.layouts import EMOTIONS, NEUTRAL
from facet.data.meshio import MESH_SUFFIXES, save_wrl
from facet.faces import scanner

UPLOAD_TYPES = [s.lstrip(".") for s in MESH_SUFFIXES] + ["zip", "bnd", "lm3", "bmp", "png",
                                                          "jpg", "jpeg"]  # + landmarks, textures
ZOOM = 4  # views are 64 px: shown 4x larger, pixel for pixel


@st.cache_resource(max_entries=4, show_spinner="loading the checkpoint")
def load(path: str, mtime_ns: int) -> explain.Predictor:
    """The checkpoint, loaded once per file version (`mtime_ns` is the cache key)."""
    return build.load_predictor(path)


def sidebar():
    """The inputs: (checkpoint or None, built-in face (emotion, intensity, subject) or None,
    uploaded files or None, the zero-shot classes as typed)."""
    root = st.text_input("checkpoints under", "out", key="root")
    found = explain.find_checkpoints(root)
    ckpt = st.selectbox("checkpoint", found, key="checkpoint") if found else None
    source = st.radio("face", ("built-in", "upload"), horizontal=True, key="source")
    face = uploads = None
    if source == "built-in":
        face = (st.selectbox("emotion", (*EMOTIONS, NEUTRAL), index=3, key="emotion"),
                st.slider("intensity", 1, 4, 4, key="intensity"),
                st.number_input("subject", 0, 9999, 0, key="subject"))
    else:
        uploads = st.file_uploader(
            f"a scan, the frames of a sequence, or a zip (at most {MAX_UPLOAD_MB} MB)",
            type=UPLOAD_TYPES, accept_multiple_files=True, key="uploads",
            max_upload_size=MAX_UPLOAD_MB)
    classes = st.text_input("your own classes, comma-separated (empty: the checkpoint's)",
                            key="classes")
    return ckpt, face, uploads, classes


def predict(ckpt: Path, face, uploads, classes: str) -> explain.Prediction | None:
    """Run facet.app.explain on the chosen face; None (with a note) when nothing is chosen yet.

    A built-in face is written as a VRML file and read back, so it is centred and rendered like
    the dataset's scans (in memory it carries a nose-tip landmark that a file does not).
    """
    predictor = load(str(ckpt), ckpt.stat().st_mtime_ns)
    names = [c for c in classes.split(",") if c.strip()] or None
    if face is None and not uploads:
        st.info("Upload a scan (" + ", ".join(MESH_SUFFIXES) + "), several frames, or a zip.")
        return None
    with tempfile.TemporaryDirectory(prefix="facet-app-") as folder:
        try:
            if face is not None:
                emotion, intensity, subject = face
                scan = Path(folder) / f"{emotion}-{intensity}-subject{subject}.wrl"
                save_wrl(scanner.demo_face(emotion, intensity, int(subject)), scan)
                name = f"built-in {emotion} {intensity}, subject {subject}"
            else:
                scan = save_uploads([(f.name, f.getvalue()) for f in uploads], folder)
                name = ", ".join(f.name for f in uploads)
            return explain.explain(predictor, scan, names, name=name)
        except (ValueError, OSError) as err:  # name the file, not the temporary folder
            raise ValueError(str(err).replace(f"{folder}/", "")) from None


def zoom(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (ZOOM H, ZOOM W, 3), nearest neighbour: what the model saw, pixel for pixel."""
    return image.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)


def show(p: explain.Prediction) -> None:
    """The views with saliency (a tab per frame), probabilities, view weights, the prompts."""
    st.subheader(f"{p.name}: {p.predicted} ({p.probabilities.max():.0%})")
    tiles = explain.overlay(p.views, p.saliency)  # (T, V, H, W, 3)
    frames = st.tabs([f"{f + 1}: {name}" for f, name in enumerate(p.frames)]) \
        if len(p.frames) > 1 else [st.container()]
    for f, tab in enumerate(frames):
        weight = "" if p.frame_weights is None else f"frame weight {p.frame_weights[f]:.2f}. "
        tab.caption(f"{weight}Top: the views exactly as the model sees them. Bottom: "
                    f"saliency, red raises and blue lowers p({p.predicted}).")
        for j, column in enumerate(tab.columns(len(p.view_names))):
            alone = p.classes[int(p.view_probabilities[f, j].argmax())]
            column.image(zoom(p.views[f, j].permute(1, 2, 0).numpy()),
                         caption=f"{p.view_names[j]}: weight {p.view_weights[f, j]:.2f}, "
                                 f"alone: {alone}")
            column.image(zoom(tiles[f, j]))
    left, right = st.columns(2)
    left.markdown("**Class probabilities** (cosine to the class's prompt ensemble)")
    for c, q, s in zip(p.classes, p.probabilities.tolist(), p.similarities.tolist()):
        left.progress(q, text=f"{c}: {q:.1%} (cosine {s:+.3f})")
    right.markdown("**View weights** (MTGF, averaged over frames; uniform = "
                   f"{1 / len(p.view_names):.2f})")
    for name, w in zip(p.view_names, p.view_weights.mean(dim=0).tolist()):
        right.progress(w, text=f"{name}: {w:.2f}")
    if p.prompts is not None:
        with st.expander("Prompt ensemble: every prompt's cosine to this face"):
            for c, texts, sims in zip(p.classes, p.prompts, p.prompt_similarities.tolist()):
                st.markdown(f"**{c}**")
                st.table({"prompt": texts, "cosine": [f"{s:+.3f}" for s in sims]})
    st.caption(f"{p.seconds:.2f} s on this machine, saliency included.")


st.set_page_config(page_title="facet: FACET-VLM on one face", layout="wide")
st.title("FACET-VLM on one face")
with st.sidebar:
    ckpt, face, uploads, classes = sidebar()
if ckpt is None:
    st.info("No checkpoint found: train one with `python train.py` (it writes out/cpu/ckpt.pt), "
            "or name the folder that holds yours in the sidebar.")
else:
    try:
        prediction = predict(ckpt, face, uploads, classes)
    except (ValueError, OSError) as err:
        st.error(str(err))
    except Exception as err:  # the page must survive any input: say what broke, keep running
        st.error(f"unexpected {type(err).__name__}: {err}")
    else:
        if prediction is not None:
            show(prediction)
