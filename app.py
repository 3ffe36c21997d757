"""facet's interactive page: drop in a face, see what FACET-VLM sees, predicts, and why.

    python -m pip install -r requirements-app.txt && streamlit run app.py

A thin page over `facet.app.explain`, the functions `python evaluate.py --ckpt CKPT SCAN` uses:
pick a checkpoint found under a folder (default out/), a built-in face (emotion, intensity and a
person: a seed of the face model) or uploads, and optionally your own class names or
descriptions (zero-shot). Every uploaded scan gets its own prediction; the files are the frames
of one 4D sequence only when the sequence box says so. A checkpoint may also be CLIP weights
with their merges (facet's pretrained CLIP, `clip.pt`): the CLIP alone classifies by its prompts.
Uploads and built-in faces are written to a temporary folder that is removed when the
predictions are done, and "clear the uploads" empties the upload box; the page writes nothing
else. Every error is shown on the page with the file and the reason.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import facet  # noqa: F401 -- first: sets OpenMP's passive wait before torch loads

import numpy as np
import streamlit as st

from facet import build
from facet.app import explain
from facet.app.preview import preview_png
from facet.app.uploads import MAX_SCANS, MAX_UPLOAD_MB, save_uploads
from facet.data.layouts import EMOTIONS, NEUTRAL
from facet.data.meshio import MESH_SUFFIXES, load_mesh, save_wrl
from facet.faces import scanner

ZOOM = 4  # views are 64 px: shown 4x larger, pixel for pixel
INTRODUCTION = (
    "FACET-VLM reads the facial expression of a 3D face scan (or a 4D sequence of scans): it "
    "renders the scan from several viewpoints, encodes each view with a CLIP-style image "
    "transformer, fuses the views guided by emotion prompts, and picks the closest prompt.  \n"
    "Choose a checkpoint and a face in the sidebar: the page shows the face, the views as the "
    "model saw them, its prediction, and which pixels raised or lowered it (saliency).")


@st.cache_resource(max_entries=4, show_spinner="loading the checkpoint")
def load(path: str, mtime_ns: int) -> explain.Predictor:
    """The checkpoint, loaded once per file version (`mtime_ns` is the cache key)."""
    return build.load_predictor(path)


@st.cache_data(max_entries=16, show_spinner=False)
def built_in_face(emotion: str, intensity: int, person: int) -> bytes:
    """A built-in face as a VRML file's bytes, made once per choice. Written as VRML and read
    back, it is centred and rendered like the dataset's scans (in memory it carries a nose-tip
    landmark that a file does not)."""
    with tempfile.TemporaryDirectory(prefix="facet-app-") as folder:
        scan = Path(folder) / "face.wrl"
        save_wrl(scanner.demo_face(emotion, intensity, person), scan)
        return scan.read_bytes()


def sidebar() -> dict:
    """The inputs, as {"ckpt": Path or None, "face": (emotion, intensity, person) or None,
    "uploads": uploaded files or None, "sequence": bool, "classes": str, "saliency": bool}."""
    root = st.text_input("checkpoints under", "out", key="root")
    found = explain.find_checkpoints(root)
    chosen = {"ckpt": st.selectbox("checkpoint", found, key="checkpoint") if found else None,
              "face": None, "uploads": None, "sequence": False}
    source = st.radio("face", ("built-in", "upload"), horizontal=True, key="source")
    if source == "built-in":
        chosen["face"] = (
            st.selectbox("emotion", (*EMOTIONS, NEUTRAL), index=3, key="emotion"),
            st.slider("intensity", 1, 4, 4, key="intensity"),
            st.number_input("person", 0, 9999, 0, key="person",
                            help="a seed: every number is a new person made by the face model "
                                 "(ICT-FaceKit), not a subject of a dataset"))
    else:
        # every suffix is accepted here and checked by save_uploads, so a file that is not a
        # scan is named on the page with the reason instead of a bare red icon
        round_ = st.session_state.setdefault("upload_round", 0)
        chosen["uploads"] = st.file_uploader(
            f"scans ({', '.join(MESH_SUFFIXES)}, with their .bnd/.lm3 landmarks or texture), or "
            f"zips of them; at most {MAX_UPLOAD_MB} MB", accept_multiple_files=True,
            key=f"uploads-{round_}", max_upload_size=MAX_UPLOAD_MB)
        chosen["sequence"] = st.checkbox(
            "the files are the frames of one 4D sequence", key="sequence",
            help="off: one prediction per scan. On: one prediction for all the frames, in the "
                 "natural order of their names")
        if st.button("clear the uploads", key="clear"):
            st.session_state["upload_round"] = round_ + 1  # a new, empty upload box
            st.rerun()
    chosen["classes"] = st.text_input(
        "your own classes, comma-separated (empty: the checkpoint's)", key="classes")
    chosen["saliency"] = st.toggle("saliency", value=True, key="saliency",
                                   help="integrated gradients: most of a prediction's time; "
                                        "off is several times faster")
    return chosen


def upload_name(scan: Path, folder: Path) -> str:
    """How the page calls an uploaded scan: its path among the uploads; a sequence by its
    folder and frame count."""
    where = scan.relative_to(folder).as_posix()
    if not scan.is_dir():
        return where
    frames = len(explain.sequence_frames(scan))
    return f"sequence {where if where != '.' else 'of the uploads'} ({frames} frames)"


def predict(predictor: explain.Predictor, chosen: dict, folder: Path
            ) -> list[tuple[explain.Prediction, str | None, Path]]:
    """Every chosen face through facet.app.explain: [(prediction, known class or None, the scan
    file or folder)]. Uploads that are no scan are named in a warning; a scan that cannot be
    predicted is named in an error, and the others are still predicted."""
    names = [c for c in chosen["classes"].split(",") if c.strip()] or None
    if chosen["face"] is not None:
        emotion, intensity, person = chosen["face"]
        scan = folder / f"{emotion}-{intensity}-person{person}.wrl"
        scan.write_bytes(built_in_face(emotion, intensity, int(person)))
        jobs = [(scan, f"built-in {emotion} {intensity}, person {person}", emotion)]
    else:
        uploaded = save_uploads([(f.name, f.getvalue()) for f in chosen["uploads"]], folder,
                                sequence=chosen["sequence"])
        for name, why in uploaded.refused:
            st.warning(f"{name}: {why}")
        jobs = [(scan, upload_name(scan, folder), None) for scan in uploaded.scans]
    done = []
    for scan, name, truth in jobs:
        try:
            p = explain.explain(predictor, scan, names, name=name, saliency=chosen["saliency"])
        except (ValueError, OSError) as err:  # name the file, not the temporary folder
            st.error(str(err).replace(f"{folder}/", ""))
            continue
        done.append((p, truth if truth in p.classes else None, scan))
    return done


def zoom(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (ZOOM H, ZOOM W, 3), nearest neighbour: what the model saw, pixel for pixel."""
    return image.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)


def verdict(p: explain.Prediction, truth: str | None, emotion: str | None) -> None:
    """The correct / wrong mark of a built-in face, whose expression is known."""
    if truth is not None:
        st.markdown(f":green[**✓ correct**]: the face shows {truth}" if truth == p.predicted
                    else f":red[**✗ wrong**]: the face shows {truth}, not {p.predicted}")
    elif emotion is not None:
        st.caption(f"No mark: the face shows {emotion}, which is not among the classes scored.")


def sheet_png(p: explain.Prediction, truth: str | None, patch: float) -> bytes:
    """The prediction's sheet (`facet.app.explain.save_sheet`) as PNG bytes, drawn when the
    download button asks for it."""
    with tempfile.TemporaryDirectory(prefix="facet-app-") as folder:
        return explain.save_sheet(p, Path(folder) / "sheet.png", truth, patch).read_bytes()


def show(p: explain.Prediction, truth: str | None, emotion: str | None, scan: Path,
         patch: float, key: str) -> None:
    """One prediction: the mark, a 3D preview, the probabilities and view weights, the views
    with saliency (a tab per frame), the prompts, and downloads of the JSON and the sheet.
    `patch`: the ViT's patch side in view pixels; `key`: unique per prediction on the page."""
    st.subheader(f"{p.name}: {p.predicted} ({p.probabilities.max():.0%})")
    verdict(p, truth, emotion)
    familiar = f"familiarity {p.familiarity:+.3f}, threshold {p.familiarity_threshold:+.3f}"
    if p.unfamiliar:  # the prediction of a scan unlike any training face is not to be trusted
        st.warning("Unlike the training faces, so do not trust this prediction: "
                   + "; ".join(p.unfamiliar_reasons) + f" ({familiar}).")
    else:
        st.caption(f"Like the training faces ({familiar}).")
    face, left, right = st.columns([1, 1.3, 1.3])
    first = explain.sequence_frames(scan)[0] if scan.is_dir() else scan
    try:
        picture, drawn = preview_png(load_mesh(first))
        face.image(picture, caption=f"the mesh{' (first frame)' if scan.is_dir() else ''}, "
                                    f"{drawn} triangles after decimation")
    except ValueError as err:  # the views were drawn, so this is unlikely; say it and go on
        face.caption(f"no 3D preview: {err}")
    left.markdown("**Class probabilities** (cosine to the class's prompt ensemble)")
    for c, q, s in zip(p.classes, p.probabilities.tolist(), p.similarities.tolist()):
        left.progress(q, text=f"{c}: {q:.1%} (cosine {s:+.3f})"
                              + (" -- the face's class" if c == truth else ""))
    right.markdown("**View weights** (MTGF, averaged over frames; uniform = "
                   f"{1 / len(p.view_names):.2f})")
    for name, w in zip(p.view_names, p.view_weights.mean(dim=0).tolist()):
        right.progress(w, text=f"{name}: {w:.3f}")

    scale = None if p.saliency is None else explain.saliency_scale(p.saliency)
    tiles = None if p.saliency is None else explain.overlay(p.views, p.saliency, scale)
    frames = st.tabs([f"{f + 1}: {name}" for f, name in enumerate(p.frames)]) \
        if len(p.frames) > 1 else [st.container()]
    for f, tab in enumerate(frames):
        weight = "" if p.frame_weights is None else f"frame weight {p.frame_weights[f]:.2f}. "
        tab.caption(f"{weight}Top: the views exactly as the model sees them. " + (
            "Saliency off." if tiles is None else
            f"Bottom: saliency, red raises and blue lowers log p({p.predicted}), full colour "
            f"from {scale:.2g} per pixel; {explain.token_grid_note(patch)}."))
        for j, column in enumerate(tab.columns(len(p.view_names))):
            alone = p.classes[int(p.view_probabilities[f, j].argmax())]
            column.image(zoom(p.views[f, j].permute(1, 2, 0).numpy()),
                         caption=f"{p.view_names[j]}: weight {p.view_weights[f, j]:.2f}, "
                                 f"alone: {alone}")
            if tiles is not None:
                column.image(zoom(tiles[f, j]))
    if p.prompts is not None:
        with st.expander("Prompt ensemble: every prompt's cosine to this face"):
            for c, texts, sims in zip(p.classes, p.prompts, p.prompt_similarities.tolist()):
                st.markdown(f"**{c}**")
                st.table({"prompt": texts, "cosine": [f"{s:+.3f}" for s in sims]})
    stem = Path(p.name).stem.replace(" ", "-").replace(",", "") or "prediction"
    down_json, down_sheet, timing = st.columns([1, 1, 2])
    down_json.download_button("prediction.json", lambda: json.dumps(p.to_json()), f"{stem}.json",
                              "application/json", key=f"json-{key}", on_click="ignore")
    down_sheet.download_button("the sheet (PNG)", lambda: sheet_png(p, truth, patch),
                               f"{stem}.png", "image/png",
                               key=f"sheet-{key}", on_click="ignore")
    timing.caption(f"{p.seconds:.2f} s on this machine, "
                   + ("saliency included." if p.saliency is not None else "without saliency."))


st.set_page_config(page_title="facet: FACET-VLM on one face", layout="wide")
st.title("FACET-VLM on one face")
st.markdown(INTRODUCTION)
with st.sidebar:
    chosen = sidebar()
if chosen["ckpt"] is None:
    st.info("No checkpoint found: train one with `python train.py` (it writes out/cpu/ckpt.pt), "
            "or name the folder that holds yours in the sidebar.")
elif chosen["face"] is None and not chosen["uploads"]:
    st.info("Upload a scan (" + ", ".join(MESH_SUFFIXES) + f"), up to {MAX_SCANS} at once, the "
            "frames of a sequence, or a zip.")
else:
    emotion = chosen["face"][0] if chosen["face"] is not None else None
    with tempfile.TemporaryDirectory(prefix="facet-app-") as work:
        try:
            predictor = load(str(chosen["ckpt"]), chosen["ckpt"].stat().st_mtime_ns)
            patch = explain.patch_pixels(predictor)
            for i, (p, truth, scan) in enumerate(predict(predictor, chosen, Path(work))):
                show(p, truth, emotion, scan, patch, key=str(i))
        except (ValueError, OSError) as err:
            st.error(str(err).replace(f"{work}/", ""))
        except Exception as err:  # the page must survive any input: say what broke, keep running
            st.error(f"unexpected {type(err).__name__}: {err}")
