"""The familiarity flag's test set: faces it must pass, and things it must flag.

Our addition, to calibrate and check `facet.faces.familiarity` (README: the rates it measured):

- "face": built-in scans of people in no dataset and not in the reference (`PROBE_SEED`),
  made as `facet.faces.familiarity.reference_faces` makes the reference's;
- "clean face": `facet.faces.scanner.demo_face` of new people (no scanner effects);
- "non-face": icospheres, boxes, tori, cylinders, random blobs and wavy sheets, each at a
  random size and orientation;
- "mis-oriented": the "face" scans upside down, facing away, on either side, with z up (a
  Blender-style mesh) and with y down (mirrored: a y-down file read as y up).

    python -m facet.faces.probes                 # flag rates at the default render settings
    python -m facet.faces.probes --image_size=16 # at other settings
    python -m facet.faces.probes --files data/synth/bu3dfe-60subjects/*/*0[34]??_F3D.wrl
                                                 # and how many of these scans it flags

Shapes: N vertices, F triangles.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import trimesh

from facet.data.layouts import EMOTIONS
from facet.data.meshio import load_mesh
from facet.faces import familiarity
from facet.faces.scanner import demo_face, rotation
from facet.mesh import Mesh
from facet.render import TRAINING_RENDER, RenderSettings

PROBE_SEED = 2027  # people of the probes: neither a dataset's nor the reference's
SHAPES = ("icosphere", "box", "torus", "cylinder", "blob", "sheet")
# How a face file goes wrong, as the linear map applied to a correct one (x, y, z columns).
MISTAKES = {"upside down": rotation(0, 0, 180), "facing away": rotation(180, 0, 0),
            "on its side": rotation(0, 0, 90), "on its other side": rotation(0, 0, -90),
            "z up": rotation(0, -90, 0), "y down": np.diag([1.0, -1.0, 1.0])}


@dataclass(frozen=True)
class Probe:
    """One test mesh and what the flag should say about it."""

    name: str  # e.g. "torus 3", "face 2 (upside down)"
    kind: str  # "face", "clean face", "non-face", "mis-oriented"; "file": one given by name
    mesh: Mesh
    detail: str = ""  # the shape of a non-face, the mistake of a mis-oriented face

    @property
    def should_flag(self) -> bool:
        return self.kind in ("non-face", "mis-oriented")


def shape(kind: str, rng: np.random.Generator) -> Mesh:
    """A non-face of `kind` (one of SHAPES), its size, proportions and orientation drawn from
    `rng`, about 100 units across (a face's size in mm)."""
    if kind == "icosphere":
        made = trimesh.creation.icosphere(subdivisions=3)
    elif kind == "box":
        made = trimesh.creation.box(rng.uniform(0.3, 1.5, 3))
    elif kind == "torus":
        made = trimesh.creation.torus(1.0, rng.uniform(0.2, 0.5))
    elif kind == "cylinder":
        made = trimesh.creation.cylinder(rng.uniform(0.3, 1.0), rng.uniform(0.5, 2.0),
                                         sections=48)
    elif kind == "blob":  # an icosphere with its radius bent by five random waves
        made = trimesh.creation.icosphere(subdivisions=4)
        points = np.asarray(made.vertices)
        radius = 1 + sum(rng.normal(0, 0.15) * np.sin(rng.uniform(1, 4) * points
                                                      @ rng.normal(size=3) + rng.uniform(0, 6))
                         for _ in range(5))
        made = trimesh.Trimesh(points * radius[:, None], made.faces, process=False)
    elif kind == "sheet":  # an open surface, as a scan is, with waves instead of a face
        side = np.linspace(-1, 1, 40)
        x, y = np.meshgrid(side, side)  # (40, 40) each
        z = 0.2 * np.sin(rng.uniform(1, 4) * x) * np.cos(rng.uniform(1, 4) * y)
        grid = np.arange(40 * 40).reshape(40, 40)
        a, b, c, d = (grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel(), grid[1:, :-1].ravel(),
                      grid[1:, 1:].ravel())
        made = trimesh.Trimesh(np.c_[x.ravel(), y.ravel(), z.ravel()],
                               np.r_[np.c_[a, b, d], np.c_[a, d, c]], process=False)
    else:
        raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPES}")
    turn = rotation(*rng.uniform(-180, 180, 3))
    return Mesh(50 * np.asarray(made.vertices) @ turn.T, np.asarray(made.faces),
                source=kind)


def probe_set(people: int = 10, shapes_each: int = 10, seed: int = PROBE_SEED) -> list[Probe]:
    """The flag's test set (module docstring): 13 * `people` faces (neutral, and each emotion at
    intensities 3 and 4) and as many mis-oriented ones, 6 * `people` clean faces (intensity 4),
    6 * `shapes_each` non-faces."""
    probes = []
    for _, mesh in familiarity.reference_faces(people, seed):
        probes.append(Probe(f"face {len(probes)}", "face", mesh))
    for i, face in enumerate(list(probes)):  # each face with one mistake, in turn
        mistake = list(MISTAKES)[i % len(MISTAKES)]
        probes.append(Probe(f"{face.name} ({mistake})", "mis-oriented",
                            replace(face.mesh, verts=face.mesh.verts @ MISTAKES[mistake].T),
                            mistake))
    for k in range(people):
        for emotion in EMOTIONS:
            mesh = replace(demo_face(emotion, 4, seed=seed + k), landmarks={})
            probes.append(Probe(f"clean face {k} {emotion}", "clean face", mesh))
    rng = np.random.default_rng(seed)
    for i in range(shapes_each):
        for kind in SHAPES:
            probes.append(Probe(f"{kind} {i}", "non-face", shape(kind, rng), kind))
    return probes


def flag_rates(reference: familiarity.Reference, probes: list[Probe]
               ) -> dict[str, tuple[int, int]]:
    """How many probes of each kind, and of each kind and detail, are flagged:
    "kind" or "kind: detail" -> (flagged, total)."""
    rates: dict[str, list[int]] = {}
    for probe in probes:
        flagged = int(familiarity.judge(reference, probe.mesh).unfamiliar)
        for key in [probe.kind] + ([f"{probe.kind}: {probe.detail}"] if probe.detail else []):
            counts = rates.setdefault(key, [0, 0])
            counts[0], counts[1] = counts[0] + flagged, counts[1] + 1
    return {key: (flagged, total) for key, (flagged, total) in rates.items()}


def main(argv: list[str] | None = None) -> str:
    """`python -m facet.faces.probes`: the flag rates per kind of probe, as the text `__main__`
    prints (library code stays silent)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_size", type=int, default=TRAINING_RENDER.image_size)
    parser.add_argument("--mode", default=TRAINING_RENDER.mode)
    parser.add_argument("--people", type=int, default=10, help="probe people")
    parser.add_argument("--files", nargs="*", default=[], metavar="SCAN",
                        help="also judge these scans (kind 'file'), e.g. a dataset's")
    args = parser.parse_args(argv)
    settings = RenderSettings(image_size=args.image_size, mode=args.mode)
    reference = familiarity.build_reference(settings)
    files = [Probe(Path(path).name, "file", load_mesh(path)) for path in args.files]
    rates = flag_rates(reference, probe_set(args.people) + files)
    lines = [f"threshold {reference.threshold:.3f} ({settings.mode}, {settings.image_size} px)"]
    lines += [f"{key:<32} flagged {flagged:>3} of {total:>3} ({100 * flagged / total:5.1f} %)"
              for key, (flagged, total) in rates.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
