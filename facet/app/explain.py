"""Try a trained model on one scan or sequence: the prediction, and why (CLI and app).

What `python evaluate.py --ckpt CKPT SCAN` and `streamlit run app.py` share. A `Predictor` is a
checkpoint rebuilt as `evaluate.py` rebuilds it; `explain` runs it on one face:

    scan (mesh file, folder of frames, or Mesh) -> T frames (the checkpoint's frames/sampling)
      -> render_views at the training settings -> uint8 (as the view cache stores them) -> / 255
      -> FacetVLM with the class-prompt ensemble encoded once (as `facet.loop.evaluate`)
      -> probabilities (K,) (with --mirror_test the mean with the mirror image's, as
         evaluation scores), per-view predictions (T, V, K), MTGF view weights (T, V),
         temporal weights (T,), saliency (T, V, H, W), per-prompt similarities (K, P)
    and, beside the model, the first frame's familiarity (`facet.faces.familiarity`): whether
    the scan looks like the built-in faces at all, or looks turned, so an answer about a sphere
    or an upside-down face says that it is one

so a scan from a dataset gets the probabilities evaluate.py reports for it (to float32
rounding). A lone scan has no subject metadata: checkpoints trained with metadata prompts are
scored with the plain prompt ensemble; the apex of a sequence comes from the displacement of its
frames (no annotation).

Saliency: integrated gradients (Sundararajan et al. 2017) of the predicted class's
log-probability, from the model's own reference image -- the image it subtracts from its
inputs (`FacetVLM.pixel_mean`: the training set's mean face per view slot from scratch, CLIP's
mean colour with pretrained towers) -- to the views, summed over colour channels. Attributions
add up to log p(class | views) - log p(class | reference) (the JSON reports both sides of that
sum), so red pixels are where this face departs from the reference in a way that raises the
class, blue where it lowers it. Why not attention rollout: the `tiny` ViTs make 4 x 4 tokens
of a 64-px view, so rollout can only say "this sixteenth of the face", it is the
same for every class, and it stops at the image tower, while MTGF and CVSA decide too. Gradients
see the whole model, per class and at full resolution; integrating along the path (64 steps,
batched) avoids the saturation of a single gradient x input at a confident prediction.

Shapes: T frames, V views, K classes, P prompts per class, E embedding, H x W view pixels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facet import reports
from facet.atomic import atomic_file
from facet.build import Predictor
from facet.data.datasets import model_input, sample_frames
from facet.data.layouts import natural_key
from facet.data.meshio import MESH_SUFFIXES, load_mesh
from facet.data.view_cache import render_frames
from facet.faces.familiarity import build_reference, judge
from facet.loop import autocast, class_probabilities
from facet.mesh import Mesh
from facet.model import FacetVLM
from facet.prompts import build_prompts, ensemble_embeddings, tokenize_grid
from facet.render import RenderSettings
from facet.runtime import amp_dtype

import matplotlib

matplotlib.use("Agg")  # headless: must happen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

SALIENCY_STEPS = 64  # integrated-gradient steps (midpoint rule); the JSON shows how closely
# the attributions sum to the log-probability rise (README: measured per step count)
IMAGES_PER_PASS = 192  # views per forward/backward pass of the saliency path

# What `explain` and `render_scan` accept as one face: a mesh file, a folder of frames (a 4D
# sequence), a Mesh, or Meshes (frames). Not `facet.faces.scanner.Scan`, a generated scan.
ScanInput = str | Path | Mesh | Sequence[Mesh]


def find_checkpoints(root: str | Path = "out") -> list[Path]:
    """Every `*.pt` under `root`, newest first (training checkpoints and CLIP weights alike)."""
    root = Path(root)
    found = [p for p in root.rglob("*.pt") if p.is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


# --- scans -> views ---------------------------------------------------------------------------

def sequence_frames(folder: str | Path) -> list[Path]:
    """The mesh files of a folder in natural order ("9.wrl" before "10.wrl").

    Raises:
        ValueError: the folder holds no mesh file (naming it and the formats read).
    """
    folder = Path(folder)
    frames = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                     and p.suffix.lower() in MESH_SUFFIXES), key=lambda p: natural_key(p.name))
    if not frames:
        raise ValueError(f"{folder}: a sequence with no frames (no {', '.join(MESH_SUFFIXES)} "
                         "file in it)")
    return frames


def _frames_of(scan: ScanInput) -> list[Path | Mesh]:
    if isinstance(scan, Mesh):
        return [scan]
    if isinstance(scan, (str, Path)):
        path = Path(scan)
        if path.is_dir():
            return list(sequence_frames(path))
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        return [path]
    if len(scan) == 0:
        raise ValueError("a sequence with no frames")
    return list(scan)


def render_scan(scan: ScanInput, settings: RenderSettings, frames: int = 1,
                sampling: str = "uniform", onset: str = "none",
                neutral: str | Path | Mesh | None = None) -> tuple[torch.Tensor, list[str]]:
    """The views a model trained with these settings sees, exactly as the view cache stores
    them (`facet.data.view_cache.render_frames`: uint8, the same renderer and settings).

    Args:
        scan: a mesh file, a folder of frames (a 4D sequence, natural order), a Mesh, or a list
            of Meshes (frames). A Mesh is rendered as given: a "nose_tip" landmark centres it
            (`facet.mesh.normalize`), which the same face read from a .wrl file has not.
        settings: the run's render settings (`facet.build.render_settings`).
        frames, sampling: T and "uniform" / "apex" / "expressive"
            (`facet.data.datasets.sample_frames`, evaluation mode); a static scan is repeated
            T times, as in the dataset.
        onset: not "none": the first frame is prepended, the reference of the others; a
            static scan needs `neutral` then (a model trained on 3D scans with --onset).
        neutral: a neutral scan of the same person: rendered first, the scan aligned to it,
            as the view cache renders a scan with its reference (`Sample.reference`).
    Returns:
        (views (T', V, C, H, W) uint8, the T' frames' names; T' = T, or T + 1 with an onset).
    Raises:
        FileNotFoundError / ValueError naming the file (`facet.data.meshio.load_mesh`).
    """
    items = _frames_of(scan)
    if onset != "none" and len(items) == 1 and neutral is None:
        raise ValueError(f"this model (--onset={onset}) reads a scan as its change from a neutral "
                         "scan of the same person: give that scan too (evaluate.py --neutral "
                         "FILE), or a sequence whose first frame is neutral")
    if neutral is not None:
        if len(items) != 1:
            raise ValueError("a neutral reference goes with one static scan, not a sequence "
                             "(a sequence's first frame is its reference)")
        items = _frames_of(neutral) + items
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensor ops: faster on one thread (see facet.data.view_cache)
    try:
        pixels, displacement = render_frames(items, settings)  # (T_all, V, C, H, W)
    finally:
        torch.set_num_threads(threads)
    if neutral is not None:  # (neutral, scan): the scan, T times, as the dataset picks it
        picks = [1] * frames
    else:
        picks = sample_frames(len(items), frames, sampling, int(displacement.argmax()),
                              displacement=displacement).tolist()
    picks = ([0] if onset != "none" else []) + picks
    names = [item.name if isinstance(item, Path) else (item.source or f"frame {i}")
             for i, item in enumerate(items)]
    return torch.from_numpy(pixels[picks]), [names[i] for i in picks]


# --- the prediction ---------------------------------------------------------------------------

@dataclass
class Prediction:
    """One face through the model, with what explains the result (CPU tensors)."""

    name: str  # the scan's file or folder name, or a description of an in-memory face
    classes: tuple[str, ...]  # K
    frames: list[str]  # the T frames used
    view_names: list[str]  # V, e.g. "yaw -20"
    views: torch.Tensor  # (T, V, 3, H, W) uint8: what the model saw (divided by 255)
    probabilities: torch.Tensor  # (K,)
    similarities: torch.Tensor  # (K,) cosine of the face embedding to each class embedding
    view_probabilities: torch.Tensor  # (T, V, K) each view's own classification
    view_weights: torch.Tensor  # (T, V) MTGF's (or CVSA's) weights, sum 1 per frame
    frame_weights: torch.Tensor | None  # (T,) temporal fusion's weights; None for T = 1 models
    saliency: torch.Tensor | None  # (T, V, H, W) attribution to log p(predicted class); None:
    # not computed (`explain(..., saliency=False)`)
    saliency_reference: float | None  # log p(predicted | reference): attributions sum to the rise
    saliency_endpoint: float | None  # ... to log p(predicted | the views as read, unmirrored)
    prompts: list[list[str]] | None  # K x P prompt texts (None: learned head)
    prompt_similarities: torch.Tensor | None  # (K, P) cosine of the face to every prompt
    familiarity: float  # how like built-in faces the (first) frame looks (facet.faces.familiarity)
    familiarity_threshold: float  # below it: unlike the training faces
    unfamiliar_reasons: tuple[str, ...]  # why the scan is flagged; empty when it is not
    seconds: float  # wall time of `explain`

    @property
    def predicted(self) -> str:
        return self.classes[int(self.probabilities.argmax())]

    @property
    def unfamiliar(self) -> bool:
        """The scan is unlike the training faces (or looks turned): read the answer with care."""
        return bool(self.unfamiliar_reasons)

    def to_json(self) -> dict:
        """Every number, as plain JSON values (saliency maps rounded to 4 significant digits)."""
        per_class = lambda values: {c: round(float(v), 6) for c, v in zip(self.classes, values)}
        maps = None if self.saliency is None else self.saliency.numpy()
        return {
            "name": self.name, "frames": self.frames, "predicted": self.predicted,
            "probabilities": per_class(self.probabilities),
            "similarities": per_class(self.similarities),
            "views": self.view_names,
            "view_weights": self.view_weights.tolist(),
            "view_predictions": [[{"predicted": self.classes[int(p.argmax())],
                                   "probabilities": per_class(p)} for p in frame]
                                  for frame in self.view_probabilities],
            "frame_weights": None if self.frame_weights is None else self.frame_weights.tolist(),
            "saliency": None if maps is None else {
                "method": "integrated gradients of log p(predicted class), from the model's "
                          f"reference image to the views, {SALIENCY_STEPS} steps",
                "target": self.predicted,
                "log_prob": self.saliency_endpoint,  # of the views as read (not mirrored)
                "log_prob_mean_face": self.saliency_reference,
                "sum": float(maps.sum()),
                "per_view": maps.sum(axis=(2, 3)).tolist(),  # (T, V) each view's share of the sum
                "maps": np.vectorize(lambda x: float(f"{x:.4g}"))(maps).tolist()},  # (T, V, H, W)
            "prompts": None if self.prompts is None else {
                c: [{"prompt": text, "similarity": round(float(s), 6)}
                    for text, s in zip(texts, sims)]
                for c, texts, sims in zip(self.classes, self.prompts, self.prompt_similarities)},
            "familiarity": {"score": round(self.familiarity, 4),
                            "threshold": round(self.familiarity_threshold, 4),
                            "unfamiliar": self.unfamiliar,
                            "reasons": list(self.unfamiliar_reasons)},
            "seconds": round(self.seconds, 3)}


def encode_prompts(predictor: Predictor, classes: Sequence[str]
                   ) -> tuple[list[list[str]], torch.Tensor]:
    """Every prompt of every class and its unit-norm embedding: (K x P texts, (K, P, E)).

    `facet.prompts.ensemble_embeddings` of the result is `FacetVLM.encode_classes` of the
    same prompts (the class embeddings evaluation uses); keeping the single prompts as well
    shows which phrasing the face matches.
    """
    model = predictor.model
    texts = build_prompts(classes)  # K x P
    tokens = tokenize_grid(predictor.tokenizer, texts, model.clip.config.context_length)
    with torch.no_grad(), autocast(predictor.device, amp_dtype(predictor.config.amp,
                                                                 predictor.device)):
        each = model.clip.encode_text(tokens.flatten(0, 1).to(predictor.device))  # (K*P, E)
    return texts, F.normalize(each.float(), dim=-1).view(*tokens.shape[:2], -1)  # (K, P, E)


def integrated_gradients(model: FacetVLM, views: torch.Tensor, target: int,
                         prompts: torch.Tensor | None, steps: int = SALIENCY_STEPS
                         ) -> tuple[torch.Tensor, float]:
    """Attribution of log p(target) to every pixel, from the model's reference image (module
    docstring).

    Args:
        model: the FacetVLM (eval mode). views: (1, T, V, 3, H, W) float in [0, 1].
        target: the class index. prompts: class embeddings (K, E), or None (learned head).
        steps: points on the straight path from the reference to the views (midpoint rule).
    Returns:
        (attributions (T, V, H, W) summed over colour channels, log p(target | reference),
        log p(target | views)): the attributions add up to the difference of the two.
    """
    _, t, v, c, h, w = views.shape
    reference = model.resized(model.pixel_mean[:v].float(), (h, w))  # what the model subtracts
    reference = reference.expand(1, t, v, c, h, w)  # (1, T, V, 3, H, W)
    alphas = ((torch.arange(steps) + 0.5) / steps).view(-1, 1, 1, 1, 1, 1).to(views)
    grad = torch.zeros_like(views[0])  # (T, V, 3, H, W), summed over the path
    for chunk in alphas.split(max(1, IMAGES_PER_PASS // (t * v))):  # bounded memory
        path = (reference + chunk * (views - reference)).requires_grad_(True)  # (n, T, V, 3, H, W)
        with torch.enable_grad():
            logits = model(path, class_embeddings=prompts).logits.float()  # (n, K)
            grad += torch.autograd.grad(logits.log_softmax(-1)[:, target].sum(), path)[0].sum(0)
    with torch.no_grad():
        base = model(reference, class_embeddings=prompts).logits.float().log_softmax(-1)
        end = model(views, class_embeddings=prompts).logits.float().log_softmax(-1)
    attribution = (views - reference)[0] * grad / steps  # (T, V, 3, H, W)
    return attribution.sum(dim=2), float(base[0, target]), float(end[0, target])


def explain(predictor: Predictor, scan: ScanInput, classes: Sequence[str] | None = None,
            name: str | None = None, saliency: bool = True,
            neutral: str | Path | Mesh | None = None) -> Prediction:
    """Classify one scan or sequence and explain the result (module docstring).

    Args:
        predictor: from `facet.build.load_predictor`.
        scan: a mesh file, a folder of frames, a Mesh or a list of Meshes.
        classes: class names or descriptions to score instead of the checkpoint's (zero-shot;
            they also guide MTGF). None: the checkpoint's classes.
        name: how to call the scan in reports; default: its file or folder name.
        saliency: compute the integrated gradients (SALIENCY_STEPS forward and backward passes,
            most of the time a prediction takes); False leaves `Prediction.saliency` None.
        neutral: a neutral scan of the same person, for a model trained on static scans with
            --onset (`render_scan`).
    Returns:
        Prediction.
    Raises:
        FileNotFoundError / ValueError naming the file; ValueError for zero-shot classes with a
        learned-head checkpoint.
    """
    start = time.perf_counter()
    model, config, device = predictor.model.eval(), predictor.config, predictor.device
    classes = tuple(c.strip() for c in classes if c.strip()) if classes else predictor.classes
    if not classes:
        raise ValueError("no class names given")
    if model.class_head is not None and classes != predictor.classes:
        raise ValueError(f"{predictor.source}: a linear-head model (text_head=False) cannot "
                         "classify new class names; zero-shot needs the prompt head")
    pixels, frames = render_scan(scan, predictor.settings, config.frames, config.frame_sampling,
                                 config.onset, neutral)
    first = _frames_of(scan)[0]  # read again: the judgement renders it turned as well
    judgement = judge(build_reference(predictor.settings),
                      first if isinstance(first, Mesh) else load_mesh(first))
    if config.onset != "none":
        frames = frames[1:]  # the first is the reference, not an input
    views = model_input(pixels, config.onset, config.magnify, config.change_rms,
                        config.onset_common)  # (T, V, 3, H, W)
    views = views.to(device)[None]  # (1, T, V, 3, H, W)
    shown = (views[0] * 255).round().to(torch.uint8).cpu()  # what the model saw, as uint8
    texts = each = prompts = None
    if model.class_head is None:
        texts, each = encode_prompts(predictor, classes)  # K x P, (K, P, E)
        prompts = ensemble_embeddings(each)  # (K, E), as evaluation encodes the classes
    with torch.no_grad(), autocast(device, amp_dtype(config.amp, device)):
        output = model(views, class_embeddings=prompts)
        # scored as evaluation scores (with --mirror_test: the mean with its mirror image's)
        probabilities = class_probabilities(model, views, config, class_embeddings=prompts)[0][0]
    target = int(probabilities.argmax())
    # the saliency explains the face as read: with --mirror_test, not its mirror image's share
    maps, reference, endpoint = integrated_gradients(model, views, target, prompts) \
        if saliency else (None, None, None)
    face = output.embedding.float()[0]  # (E,) unit norm
    similarity = None if each is None else each @ face  # (K, P)
    if isinstance(scan, (str, Path)):
        name = name or Path(scan).name
    view_names = [f"yaw {yaw:+g}" + (f" pitch {pitch:+g}" if pitch else "")
                  for yaw, pitch in predictor.settings.views]
    return Prediction(
        name=name or "face", classes=classes, frames=frames, view_names=view_names,
        views=shown, probabilities=probabilities.cpu(),
        similarities=(output.logits.float()[0] / output.logit_scale.float()).cpu(),
        # a view alone: its image embedding z against the prompts, the term of the face
        # embedding f_t = mean_v z + gamma unit(...) each view contributes
        view_probabilities=output.image_logits.float()[0].softmax(-1).cpu(),
        view_weights=output.view_weights.float()[0].cpu(),
        frame_weights=None if output.frame_weights is None
        else output.frame_weights.float()[0].cpu(),
        saliency=None if maps is None else maps.cpu(), saliency_reference=reference,
        saliency_endpoint=endpoint,
        prompts=texts,
        prompt_similarities=None if similarity is None else similarity.cpu(),
        familiarity=judgement.familiarity, familiarity_threshold=judgement.threshold,
        unfamiliar_reasons=judgement.reasons, seconds=time.perf_counter() - start)


# --- pictures and tables ----------------------------------------------------------------------

def patch_pixels(predictor: Predictor) -> float:
    """The side of one ViT token's patch in view pixels: the grid drawn over the saliency.

    The image tower makes one token of each P x P patch of a view (resized to its input side
    S); everything after sees tokens, not pixels. With OpenAI's patch embedding (one linear map,
    `visual.conv1`, the `tiny` preset) how strongly the prediction depends on a pixel changes at
    patch borders: on 64-px views with 16-px patches the saliency is a 4 x 4 mosaic. With a
    convolutional stem (`tiny-stem`, the default) the first layers are 3x3 convolutions of
    stride 2, and the saliency takes their fine checkerboard grain instead. Either is a faithful
    picture of the model, not an artefact of the method or the renderer.
    """
    visual = predictor.model.clip.visual
    return visual.patch_size * predictor.settings.image_size / visual.image_size


def token_grid_note(patch: float) -> str:
    """What the grid over a saliency map shows, for a patch side from `patch_pixels` (the
    sheet's title and the app's caption say it in these words)."""
    return (f"the grid marks the ViT's {patch:g}-px tokens: after its first layers the model "
            "sees tokens, not pixels")


def saliency_scale(saliency: torch.Tensor) -> float:
    """Where the overlay saturates: the 99th percentile of |saliency| over all views and frames
    (one scale for all, so views compare)."""
    return float(saliency.abs().flatten().float().quantile(0.99).clamp_min(1e-12))


def saliency_colours(strength: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
    """The overlay's colour map: red = raises the class, blue = lowers it, blended onto grey.

    Args:
        strength: (...,) attribution / scale, clamped to [-1, 1]. grey: (...,) render in [0, 1].
    Returns:
        (..., 3) float RGB in [0, 1].
    """
    strength = strength.clamp(-1, 1).unsqueeze(-1)  # (..., 1)
    red, blue = torch.tensor([1.0, 0.1, 0.0]), torch.tensor([0.0, 0.3, 1.0])
    colour = torch.where(strength > 0, red, blue)
    alpha = strength.abs() * 0.85
    return ((0.35 + 0.5 * grey.unsqueeze(-1)) * (1 - alpha) + colour * alpha).clamp(0, 1)


def overlay(views: torch.Tensor, saliency: torch.Tensor, scale: float | None = None
            ) -> np.ndarray:
    """Saliency over the renders (`saliency_colours`).

    Args:
        views: (..., 3, H, W) uint8 renders. saliency: (..., H, W) attributions.
        scale: the attribution that saturates; default `saliency_scale(saliency)`.
    Returns:
        (..., H, W, 3) uint8 images.
    """
    grey = views.float().mean(dim=-3).div(255)  # (..., H, W)
    scale = saliency_scale(saliency) if scale is None else scale
    image = saliency_colours(saliency.float() / scale, grey)  # (..., H, W, 3)
    return (image * 255).round().to(torch.uint8).numpy()


def _draw_saliency_scale(ax, scale: float, target: str) -> None:
    """A colour bar of the overlay's map (on the mid grey of a face), -scale .. +scale."""
    strength = torch.linspace(1, -1, 256)[:, None].expand(256, 8)  # (256, 8), top = +1
    bar = saliency_colours(strength, torch.full((256, 8), 0.6)).numpy()  # (256, 8, 3)
    ax.imshow(bar, aspect="auto", extent=(0, 1, -scale, scale))
    ax.set_xticks([])
    ax.yaxis.tick_right()
    ax.set_yticks([-scale, 0, scale], [f"{-scale:.2g}", "0", f"{scale:.2g}"], fontsize=7)
    ax.yaxis.set_label_position("right")
    ax.set_ylabel(f"attribution to log p({target[:20]}) per pixel\n(saturates beyond: the "
                  "99th percentile)", fontsize=7)


def save_sheet(prediction: Prediction, path: str | Path, truth: str | None = None,
               patch: float | None = None) -> Path:
    """One PNG: per frame, the V views as the model saw them and with saliency (with its colour
    scale); then the class probabilities and the view weights (MTGF), each view titled with its
    own prediction.

    Args:
        prediction: from `explain`. path: the PNG to write.
        truth: the face's known class (a built-in face, a dataset scan), marked on the sheet
            with whether the prediction is correct; None when unknown.
        patch: the ViT's patch side in view pixels (`patch_pixels`), drawn as a grid over the
            saliency and named in the title; None: no grid.
    Returns:
        The path written.
    """
    p = prediction
    t, v = p.view_weights.shape
    h, w = p.views.shape[-2:]
    shown = p.saliency is not None  # views and saliency side by side, or the views alone
    scale = saliency_scale(p.saliency) if shown else None
    tiles = overlay(p.views, p.saliency, scale) if shown else None  # (T, V, H, W, 3)
    width = (4.6 if shown else 3.4) * v  # inches of the view columns
    fig = plt.figure(figsize=(width + 0.6, 2.5 * t + 2.6))
    grid = fig.add_gridspec(t + 1, 2 * v + 1, height_ratios=[2.5] * t + [2.0],
                            width_ratios=[1] * (2 * v) + [0.07], hspace=0.35, wspace=0.3)
    for f in range(t):
        for j in range(v):
            images = (p.views[f, j].permute(1, 2, 0).numpy(),) + ((tiles[f, j],) if shown else ())
            for k, image in enumerate(images):
                ax = fig.add_subplot(grid[f, j + k * v] if shown else grid[f, 2 * j: 2 * j + 2])
                ax.imshow(image, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                alone = p.classes[int(p.view_probabilities[f, j].argmax())]
                ax.set_title(f"{p.view_names[j]}: weight {p.view_weights[f, j]:.2f}\nalone: "
                             f"{alone[:20]}" if k == 0 else f"{p.view_names[j]}: saliency",
                             fontsize=8)
                if k == 1 and patch:  # the patch grid, between pixel centres
                    ax.set_xticks(np.arange(patch, w, patch) - 0.5, [])
                    ax.set_yticks(np.arange(patch, h, patch) - 0.5, [])
                    ax.tick_params(length=0)
                    ax.grid(color="0.3", linewidth=0.6, alpha=0.7)
                if j == 0 and k == 0 and t > 1:
                    weight = "" if p.frame_weights is None else f"\nweight {p.frame_weights[f]:.2f}"
                    ax.set_ylabel(f"{p.frames[f]}{weight}", fontsize=8)
    if shown:
        _draw_saliency_scale(fig.add_subplot(grid[:t, 2 * v]), scale, p.predicted)

    order = np.arange(len(p.classes))
    correct = None if truth is None else truth == p.predicted
    # the two lower panels, 1.3 inches apart: room for the weights' axis label beside the bars
    lower = grid[t, :2 * v].subgridspec(1, 2, wspace=1.3 / (width / 2 - 0.65))
    bars = fig.add_subplot(lower[0])
    colour = "C3" if correct is None or not correct else "C2"  # the predicted class's bar
    bars.barh(order, p.probabilities.numpy(), color=[colour if c == p.predicted else "C0"
                                                     for c in p.classes])
    for i, q in enumerate(p.probabilities.tolist()):  # beside the bar's end, never on it
        bars.text(q + 0.015, i, f"{q:.1%}", va="center", fontsize=7)
    names = [c[:24] + (" (true)" if c == truth else "") for c in p.classes]
    bars.set_yticks(order, names, fontsize=8)
    for label, c in zip(bars.get_yticklabels(), p.classes):
        label.set_fontweight("bold" if c == truth else "normal")
    bars.invert_yaxis()
    bars.set_xlim(0, 1.2)  # room for "100.0%" right of a full bar
    bars.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    bars.set_title("class probabilities", fontsize=9)
    weights = fig.add_subplot(lower[1])
    reports.draw_view_weights(weights, p.view_weights.mean(dim=0), p.view_names)  # over frames
    weights.set_title("view weights (dashed: uniform, every view trusted equally)", fontsize=9)

    verdict = "" if truth is None else \
        f"; true: {truth}, {'correct' if correct else 'WRONG'}"
    note = token_grid_note(patch) if patch else ""
    edges = f" {note[:1].upper()}{note[1:]}." if note else ""
    how = (f"Saliency: red raises, blue lowers log p({p.predicted}), relative to the model's "
           f"reference image.{edges}") if shown else "Saliency not computed."
    warnings = "".join(f"\nWARNING: {reason}" for reason in p.unfamiliar_reasons)
    fig.suptitle(f"{p.name}: predicted {p.predicted} ({p.probabilities.max():.1%}){verdict}\n"
                 f"{how}{warnings}", fontsize=10, y=0.99, va="bottom",  # above the views' titles
                 color="C3" if p.unfamiliar else "black")
    with atomic_file(path) as out:
        fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def prediction_table(predictions: Sequence[Prediction]) -> str:
    """One line per prediction: the scan, the predicted class, every probability in %, the
    familiarity ("!" when flagged); then, per flagged scan, why."""
    classes = predictions[0].classes
    width = max(12, *(len(p.name) for p in predictions))
    head = (f"{'scan':<{width}}  {'predicted':<12}" + "".join(f" {c[:9]:>9}" for c in classes)
            + "  familiarity")
    rows = [f"{p.name:<{width}}  {p.predicted[:12]:<12}"
            + "".join(f" {100 * float(q):>8.1f}%" for q in p.probabilities)
            + f"  {p.familiarity:>11.2f}" + (" !" if p.unfamiliar else "") for p in predictions]
    notes = [f"! {p.name}: {reason}" for p in predictions for reason in p.unfamiliar_reasons]
    return "\n".join([head, *rows, *notes])
