"""Is a scan like the built-in faces? The "unlike the training faces" flag of a prediction.

Our addition (the papers do not discuss inputs that are not faces). A model trained on faces
answers with one of its classes whatever it is shown, often confidently, so each prediction
also says how face-like its input looks to the renderer, before any model:

- **Reference.** `build_reference` renders built-in faces of people no dataset holds (the
  `REFERENCE_SEED` stream of `facet.faces.synth.person`: neutral and every emotion at the
  protocol's intensities 3 and 4 in the person's own style, with the scanner's crop, pose and
  noise, as the training scans) at the checkpoint's render settings, and keeps per view slot
  the mean image, its first `COMPONENTS` principal components (the ways faces differ: person,
  expression, crop, pose) and the typical distance of a face from that mean.
- **Familiarity.** A scan's views minus the mean image, with what those components explain
  taken out, leave a residual; familiarity = 1 - |residual| / typical distance, averaged over
  the views. A face of a new person keeps a small residual; a sphere, a box or an upside-down
  face leave most of their difference from the mean face unexplained.
- **Threshold.** Each reference person in turn is scored against a reference made of the
  others (leave one person out); the threshold is the `THRESHOLD_QUANTILE` of those scores, so
  about 2 % of faces like the training ones fall below it. Pixels, not the model's embedding:
  the same judgement for every checkpoint of these render settings (README: how the
  embedding's cosines compared).
- **Orientation.** Facet expects y up, the face looking down +z (toward the viewer), any unit
  (`facet.mesh.normalize` centres and scales every face). `judge` also scores the scan turned
  a quarter, a half and three quarters about z and turned to face the other way: a turn that
  makes it much more familiar (`TURN_MARGIN`) names the likely mistake ("upside down: is y
  down?"). The scan itself is never turned: geometry alone cannot tell up from down safely on
  a cropped scan (`facet.mesh.facing_rotation`).

Shapes: R reference faces, V views, D = C * H * W pixels of one view, Q components.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from facet.data.layouts import EMOTIONS, NEUTRAL
from facet.data.view_cache import render_frames
from facet.faces.expressions import expression_aus
from facet.faces.scanner import rotation, scan
from facet.faces.synth import person
from facet.mesh import Mesh
from facet.render import RenderSettings

REFERENCE_SEED = 2026  # people of the reference: a stream no built-in dataset draws from
REFERENCE_PEOPLE = 6  # x 13 expressions = 78 reference faces, about 10 s to make at 64 px
REFERENCE_INTENSITIES = (3, 4)  # the built-in protocol's (BU-3DFE's): the training faces' levels
COMPONENTS = 20  # principal components kept per view slot (of at most R - 1)
THRESHOLD_QUANTILE = 0.02  # of the leave-one-person-out familiarity of the reference faces
TURN_MARGIN = 0.1  # a turn must raise familiarity by this much to be named as the mistake
# The turns `judge` tries, as (yaw, pitch, roll) degrees (facet.faces.scanner.rotation), and
# what a user should check when one of them fits better than the scan as given.
TURNS = {"on its side (turned a quarter about z)": (0.0, 0.0, 90.0),
         "upside down (is y down?)": (0.0, 0.0, 180.0),
         "on its other side (turned a quarter about z)": (0.0, 0.0, -90.0),
         "facing away (is the face looking down -z?)": (180.0, 0.0, 0.0)}


@dataclass(frozen=True)
class Reference:
    """What the built-in faces look like at one set of render settings."""

    settings: RenderSettings
    mean: torch.Tensor  # (V, D) float64 mean view per slot, pixels in [0, 1]
    components: torch.Tensor  # (V, Q, D) orthonormal principal directions per slot
    spread: torch.Tensor  # (V,) mean distance of a reference face's view from the mean
    threshold: float  # familiarity below it: unlike the training faces


@dataclass(frozen=True)
class Judgement:
    """How familiar one scan looks, and what may be wrong with it."""

    familiarity: float  # 1 - residual / spread, mean over views (module docstring)
    threshold: float  # the reference's: below it the scan is unlike the training faces
    reasons: tuple[str, ...]  # why it is flagged, in words; empty when it is not

    @property
    def unfamiliar(self) -> bool:
        return bool(self.reasons)


def reference_faces(people: int = REFERENCE_PEOPLE, seed: int = REFERENCE_SEED,
                    intensities: tuple[int, ...] = REFERENCE_INTENSITIES
                    ) -> list[tuple[int, Mesh]]:
    """Built-in scans like the training ones, of people no dataset holds: per person neutral and
    each emotion at each of `intensities`, in the person's style, with the scanner's crop, pose,
    noise and triangulation, and no landmarks (as a .wrl read without its .bnd).

    Returns:
        (person index, mesh) for (1 + 6 * len(intensities)) * `people` faces, in millimetres,
        y up, looking down +z.
    """
    faces = []
    for k in range(people):
        subject, style = person(seed, k)
        rng = np.random.default_rng([seed, k, 9])
        for emotion, level in [(NEUTRAL, 0)] + [(e, i) for e in EMOTIONS for i in intensities]:
            mesh = scan(subject, expression_aus(emotion, level, rng, style), rng,
                        texture_size=0).mesh
            faces.append((k, replace(mesh, landmarks={})))
    return faces


def view_pixels(meshes: list[Mesh], settings: RenderSettings) -> torch.Tensor:
    """Each mesh rendered as the view cache renders it: (M, V, D) float64 in [0, 1]."""
    views = [torch.from_numpy(render_frames([mesh], settings)[0][0]) for mesh in meshes]
    return torch.stack(views).flatten(2).double() / 255  # (M, V, D)


def _fit(pixels: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor,
                                                         torch.Tensor]:
    """(mean (V, D), principal directions (V, Q, D), spread (V,)) of views (R, V, D)."""
    mean = pixels.mean(dim=0)  # (V, D)
    centred = (pixels - mean).transpose(0, 1)  # (V, R, D)
    _, _, directions = torch.linalg.svd(centred, full_matrices=False)  # (V, R, D) rows
    spread = centred.norm(dim=-1).mean(dim=-1)  # (V,)
    return mean, directions[:, :components], spread


def _familiarity(pixels: torch.Tensor, mean: torch.Tensor, components: torch.Tensor,
                 spread: torch.Tensor) -> torch.Tensor:
    """Familiarity (M,) of views (M, V, D): 1 - |unexplained part| / spread, mean over views."""
    centred = pixels - mean  # (M, V, D)
    explained = torch.einsum("mvq,vqd->mvd", torch.einsum("mvd,vqd->mvq", centred, components),
                             components)  # (M, V, D) projection on the components
    residual = (centred - explained).norm(dim=-1)  # (M, V)
    return 1 - (residual / spread).mean(dim=-1)  # (M,)


def fit_reference(pixels: torch.Tensor, people: np.ndarray, settings: RenderSettings,
                  components: int = COMPONENTS,
                  quantile: float = THRESHOLD_QUANTILE) -> Reference:
    """A reference from rendered faces: components, spread, and the threshold from scoring
    each person against the others (module docstring).

    Args:
        pixels: (R, V, D) views of the reference faces (`view_pixels`).
        people: (R,) which person each face is (at least two people).
        settings: the render settings the views were made with.
    """
    if len(np.unique(people)) < 2:
        raise ValueError("a reference needs faces of at least two people")
    held_out = torch.empty(len(pixels), dtype=torch.float64)
    for k in np.unique(people):
        mine = torch.from_numpy(people == k)
        held_out[mine] = _familiarity(pixels[mine], *_fit(pixels[~mine], components))
    mean, directions, spread = _fit(pixels, components)
    return Reference(settings, mean, directions, spread, float(held_out.quantile(quantile)))


@lru_cache(maxsize=4)
def build_reference(settings: RenderSettings, people: int = REFERENCE_PEOPLE) -> Reference:
    """The reference of built-in faces at these render settings (made once per process: about
    7 s at the default 64 px; the same every time, from `REFERENCE_SEED`)."""
    faces = reference_faces(people)
    pixels = view_pixels([mesh for _, mesh in faces], settings)
    return fit_reference(pixels, np.array([k for k, _ in faces]), settings)


def familiarity(reference: Reference, meshes: list[Mesh]) -> np.ndarray:
    """(M,) familiarity of each mesh at the reference's render settings."""
    pixels = view_pixels(meshes, reference.settings)
    return _familiarity(pixels, reference.mean, reference.components,
                        reference.spread).numpy()


def turned(mesh: Mesh, yaw: float, pitch: float, roll: float) -> Mesh:
    """The mesh rotated about its bounding-box centre ((yaw, pitch, roll) degrees, as
    `facet.faces.scanner.rotation`), landmarks with it."""
    verts = mesh.verts.astype(np.float64)
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    turn = rotation(yaw, pitch, roll)
    move = lambda points: ((np.asarray(points, np.float64) - centre) @ turn.T + centre
                           ).astype(np.float32)
    return replace(mesh, verts=move(verts),
                   landmarks={name: move(p) for name, p in mesh.landmarks.items()})


def judge(reference: Reference, mesh: Mesh) -> Judgement:
    """How familiar a scan looks (module docstring), and why it is flagged when it is: below the
    threshold, and a turn of it that looks much more like a face.

    Raises:
        ValueError: the mesh renders blank (as `facet.render.render_views` with MIN_FOREGROUND).
    """
    scores = familiarity(reference, [mesh] + [turned(mesh, *turn) for turn in TURNS.values()])
    own, best = float(scores[0]), int(scores[1:].argmax())
    reasons = []
    if own < reference.threshold:
        reasons.append(f"unlike the training faces: familiarity {own:.2f}, below "
                       f"{reference.threshold:.2f}")
    if scores[1 + best] > own + TURN_MARGIN:
        reasons.append(f"looks {list(TURNS)[best]}: turned, its familiarity would be "
                       f"{scores[1 + best]:.2f} (facet expects y up, the face looking down +z)")
    return Judgement(own, reference.threshold, tuple(reasons))
