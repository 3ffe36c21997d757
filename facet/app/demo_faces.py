"""How a checkpoint does on the demo faces, and what about a face changes that (README: Results).

`facet.faces.scanner.demo_face` is the face the README, the app and the tests show a model.
`compare` classifies the same people and emotions made several ways, each one change away from
the next, so the accuracy lost between two rows is what that change costs:

    python -m facet.app.demo_faces --ckpt out/cpu/ckpt.pt              # 50 people x 6 emotions
    python -m facet.app.demo_faces --ckpt out/cpu/ckpt.pt --intensity=3

Rows (`VARIANTS`): ICT's whole face area centred on its nose tip (what `demo_face` was), the same
centred on its bounding box (as its .wrl is), the crop of a typical scan centred on the nose
tip, that crop on its bounding box (`demo_face` now), and the scanner's own crop, pose, noise
and holes with the exact prototype and with the person's style (as the training scans).
Each row also says how many faces the familiarity flag marks (`facet.faces.familiarity`).

Shapes: M meshes, K classes.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from facet.app.explain import encode_prompts, render_scan
from facet.build import Predictor, load_predictor
from facet.data.datasets import model_input
from facet.data.layouts import EMOTIONS
from facet.faces.expressions import expression_aus, sample_style
from facet.faces.face_model import NOSE_TIP, load_face_model, sample_subject
from facet.faces.familiarity import build_reference, familiarity
from facet.faces.scanner import demo_face, face_mesh, scan, typical_crop
from facet.loop import autocast, class_probabilities
from facet.mesh import Mesh
from facet.prompts import ensemble_embeddings
from facet.runtime import amp_dtype

Maker = Callable[[str, int, int], Mesh]  # (emotion, intensity, person) -> a face


def _centred_on_nose(mesh: Mesh) -> Mesh:
    """The mesh with a "nose_tip" landmark, which `facet.mesh.normalize` centres on."""
    return replace(mesh, landmarks={**mesh.landmarks, "nose_tip": mesh.landmarks["bnd"][NOSE_TIP]})


def _on_its_box(mesh: Mesh) -> Mesh:
    """The mesh without landmarks: `facet.mesh.normalize` centres its bounding box."""
    return replace(mesh, landmarks={})


def _whole(emotion: str, intensity: int, k: int) -> Mesh:
    """ICT's narrow face area (forehead to neck), frontal, the exact prototype."""
    return face_mesh(sample_subject(np.random.default_rng(k)), expression_aus(emotion, intensity),
                     texture_size=0)


def _cropped(emotion: str, intensity: int, k: int) -> Mesh:
    model = load_face_model()
    return face_mesh(sample_subject(np.random.default_rng(k)), expression_aus(emotion, intensity),
                     texture_size=0, model=model, keep=typical_crop(model))


def _scanned(emotion: str, intensity: int, k: int, styled: bool) -> Mesh:
    """A scan with the scanner's own crop, pose, noise and holes, of demo person k."""
    rng = np.random.default_rng([k, intensity, 11])
    aus = (expression_aus(emotion, intensity, rng, sample_style(np.random.default_rng([k, 12])))
           if styled else expression_aus(emotion, intensity))
    return _on_its_box(scan(sample_subject(np.random.default_rng(k)), aus, rng,
                            texture_size=0).mesh)


VARIANTS: dict[str, Maker] = {
    "whole face area, on its nose tip (before)": lambda e, i, k: _centred_on_nose(_whole(e, i, k)),
    "whole face area, on its bounding box": lambda e, i, k: _on_its_box(_whole(e, i, k)),
    "typical crop, on its nose tip": lambda e, i, k: _centred_on_nose(_cropped(e, i, k)),
    "typical crop, on its bounding box (demo_face)": lambda e, i, k: demo_face(e, i, seed=k),
    "scanner crop, pose, noise, holes": lambda e, i, k: _scanned(e, i, k, styled=False),
    "the same with the person's style": lambda e, i, k: _scanned(e, i, k, styled=True),
}


def classify(predictor: Predictor, meshes: list[Mesh]) -> torch.Tensor:
    """Class probabilities (M, K) of static faces, as `facet.app.explain.explain` computes them
    (the same renders and prompt ensemble), without the saliency."""
    _, each = encode_prompts(predictor, predictor.classes)  # (K, P, E)
    views = torch.stack([model_input(render_scan(mesh, predictor.settings)[0])
                         for mesh in meshes])  # (M, 1, V, 3, H, W)
    device = predictor.device
    with torch.no_grad(), autocast(device, amp_dtype(predictor.config.amp, device)):
        return class_probabilities(predictor.model, views.to(device), predictor.config,
                                   class_embeddings=ensemble_embeddings(each))[0]


def compare(predictor: Predictor, people: int = 50, intensity: int = 4,
            variants: dict[str, Maker] = VARIANTS) -> dict[str, dict]:
    """Accuracy of each variant over `people` demo people x the six emotions.

    Returns:
        name -> {"accuracy", "per_class" (emotion -> accuracy), "flagged" (fraction the
        familiarity flag marks)}.
    Raises:
        ValueError: a checkpoint whose classes are not the six emotions.
    """
    if tuple(predictor.classes) != EMOTIONS:
        raise ValueError(f"{predictor.source}: classes {predictor.classes}, not the six emotions "
                         "the demo faces show")
    reference = build_reference(predictor.settings)
    results = {}
    for name, make in variants.items():
        hits, flagged = [], []
        for k in range(people):
            faces = [make(emotion, intensity, k) for emotion in EMOTIONS]
            hits.append((classify(predictor, faces).argmax(-1) == torch.arange(6)).numpy())
            flagged += (familiarity(reference, faces) < reference.threshold).tolist()
        correct = np.stack(hits)  # (people, 6)
        results[name] = {"accuracy": float(correct.mean()),
                         "per_class": dict(zip(EMOTIONS, correct.mean(axis=0).tolist())),
                         "flagged": float(np.mean(flagged))}
    return results


def main(argv: list[str] | None = None) -> str:
    """`python -m facet.app.demo_faces --ckpt CKPT`: the comparison as the table `__main__`
    prints (library code stays silent)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a train.py checkpoint of the six emotions")
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--intensity", type=int, default=4, choices=(1, 2, 3, 4))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = compare(load_predictor(args.ckpt), args.people, args.intensity)
    lines = [f"{args.people} people x 6 emotions at intensity {args.intensity}, {args.ckpt}",
             f"{'face':<48} {'acc %':>6} {'flagged %':>9}  "
             + " ".join(f"{e[:5]:>5}" for e in EMOTIONS)]
    lines += [f"{name:<48} {100 * row['accuracy']:>6.1f} {100 * row['flagged']:>9.1f}  "
              + " ".join(f"{100 * a:>5.0f}" for a in row["per_class"].values())
              for name, row in results.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
