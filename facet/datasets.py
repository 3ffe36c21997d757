"""The torch Dataset: cached views of a sample, T frames of it, as floats in [0, 1].

The last data stage before the model: `FaceViewsDataset[i]` reads one entry of the view cache (`facet.view_cache`) and returns
`(views (T, V, 3, H, W) float32 in [0, 1], label index, meta)`. A static scan has one frame and
repeats it T times; a sequence contributes T of its frames:

- "uniform": T frames spread over the whole sequence. Evaluation takes evenly spaced frames;
  training draws one frame at random inside each of T equal segments (TSN-style), so each epoch
  sees other frames of the same expression.
- "apex": T consecutive frames centred on the apex: the annotated one where the dataset has it
  (`Sample.apex`, 4DME), else the frame of largest mean displacement from the first frame
  (computed from the meshes at cache time). Training shifts the window start by up to T // 2
  frames either way.

Random choices come from a generator seeded by (seed, epoch, index), not from global state, so
the batches do not depend on the number of DataLoader workers and a resumed run draws the same
frames; each item also carries such a seed for its view augmentation (`facet.augment`). Call `set_epoch` each epoch, as with DistributedSampler (non-persistent workers get the
updated copy). The dataset holds only paths, samples and small per-entry metadata: no open file
or memory map survives `__getitem__`, so it pickles into worker processes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from facet.layouts import Sample
from facet.protocols import class_names
from facet.view_cache import ViewCache

SAMPLING = ("uniform", "apex")


def sample_frames(length: int, count: int, sampling: str = "uniform", apex: int = 0,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Pick `count` frame indices from a sequence of `length` frames.

    Args:
        length: frames available (>= 1).
        count: frames wanted, T; may exceed `length` (frames then repeat).
        sampling: "uniform" or "apex" (see the module docstring).
        apex: apex frame index, for "apex".
        rng: random jitter for training; None = deterministic (evaluation).
    Returns:
        (T,) int64 indices in [0, length), non-decreasing.
    """
    if sampling not in SAMPLING:
        raise ValueError(f"unknown frame sampling {sampling!r}; choose one of {SAMPLING}")
    if length < 1 or count < 1:
        raise ValueError(f"need length >= 1 and count >= 1, got {length} and {count}")
    if sampling == "uniform":
        if rng is None:  # evenly spaced, first and last frame included
            return np.linspace(0, length - 1, count).round().astype(np.int64)
        offsets = rng.random(count)  # one random position inside each of T equal segments
        return np.minimum(((np.arange(count) + offsets) * length / count).astype(np.int64),
                          length - 1)
    start = apex - count // 2  # window [start, start + T) around the apex
    if rng is not None:
        start += int(rng.integers(-(count // 2), count // 2 + 1))
    start = min(max(start, 0), max(length - count, 0))
    return np.minimum(np.arange(start, start + count), length - 1).astype(np.int64)


class FaceViewsDataset(Dataset):
    """Cached multiview renders of samples, for a DataLoader.

    Args:
        samples: indexed samples, each with a label in `classes` and an entry in `cache`.
        cache: a filled `ViewCache`.
        frames: T, frames per item (1 for static scans).
        sampling: "uniform" or "apex" (4D frame sampling, see `sample_frames`).
        train: draw random frames (seeded by seed, epoch and index) instead of fixed ones.
        seed: base seed of the random frame choice.
        classes: class names; label = position in this tuple. Default: `class_names(samples)`;
            pass the same tuple to the train and test sets.
    Item:
        views (T, V, 3, H, W) float32 in [0, 1], label int, meta dict with subject (str),
        intensity (int, -1 if none), sex, age_group, ethnicity, path (str) -- all collatable.
    Raises:
        ValueError: a sample whose label is not in `classes`, or an unknown `sampling`.
        FileNotFoundError: a sample missing from the cache (naming it).
    """

    def __init__(self, samples: Sequence[Sample], cache: ViewCache, frames: int = 1,
                 sampling: str = "uniform", train: bool = False, seed: int = 0,
                 classes: Sequence[str] | None = None):
        if sampling not in SAMPLING:
            raise ValueError(f"unknown frame sampling {sampling!r}; choose one of {SAMPLING}")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.samples, self.cache = list(samples), cache
        self.frames, self.sampling, self.train, self.seed = frames, sampling, train, seed
        self.classes = tuple(classes) if classes is not None else class_names(self.samples)
        self.epoch = 0
        unknown = {str(s.label) for s in self.samples} - set(self.classes)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not in classes {self.classes}; "
                             "filter the samples (facet.protocols.filter_samples) first")
        metadata = [cache.metadata(s) for s in self.samples]  # raises naming a missing sample
        self.lengths = [m["shape"][0] for m in metadata]
        # an annotated apex (4DME labels.csv) wins over the displacement estimate of the cache
        self.apexes = [s.apex if s.apex >= 0 else m["apex"] for s, m in zip(self.samples, metadata)]

    def set_epoch(self, epoch: int) -> None:
        """Change the random frame choice of the next epoch (training only)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, dict]:
        sample = self.samples[i]
        rng = np.random.default_rng((self.seed, self.epoch, i)) if self.train else None
        picks = sample_frames(self.lengths[i], self.frames, self.sampling, self.apexes[i], rng)
        pixels = torch.from_numpy(self.cache.load(sample, picks))  # (T, V, C, H, W) uint8
        views = pixels.float().div_(255)
        if views.shape[2] == 1:  # grey entry stored with one channel
            views = views.expand(-1, -1, 3, -1, -1).contiguous()  # (T, V, 3, H, W)
        # the sample's own augmentation seed: the same draw in any batch, on any DDP rank
        seed = int(np.random.default_rng((self.seed, self.epoch, i, 1)).integers(2 ** 62))
        meta = {"subject": sample.subject, "intensity": sample.intensity, "sex": sample.sex,
                "age_group": sample.age_group, "ethnicity": sample.ethnicity, "path": sample.path,
                "seed": seed if self.train else 0}
        return views, self.classes.index(sample.label), meta


def view_statistics(dataset: Sequence) -> tuple[torch.Tensor, float]:
    """Mean rendering per view slot and the global pixel std around it, in one streaming pass.

    Used to standardise a from-scratch model's inputs (FacetVLM.set_input_statistics).

    Args:
        dataset: items (views (T, V, 3, H, W) float in [0, 1], label, meta).
    Returns:
        (mean (V, 3, H, W) float32, std float): std**2 = mean over pixels of E[x^2] - E[x]^2.
    """
    if len(dataset) == 0:
        raise ValueError("view_statistics: empty dataset")
    total = squares = None
    count = 0
    for i in range(len(dataset)):
        views = dataset[i][0].double()  # (T, V, 3, H, W); float64: sums of many squares
        total = views.sum(0) if total is None else total + views.sum(0)
        squares = (views**2).sum(0) if squares is None else squares + (views**2).sum(0)
        count += views.shape[0]
    mean = total / count  # (V, 3, H, W)
    variance = (squares / count - mean**2).clamp_min(0).mean()
    return mean.float(), float(variance.sqrt())


def collate(items: list) -> dict:
    """FaceViewsDataset items -> a batch dict, the one format `facet.loop` reads.

    Returns:
        {"views": (B, T, V, 3, H, W) float32, "label": (B,) int64, "intensity": (B,) int64
        (-1 = unknown), "seed": (B,) int64 augmentation seeds, "meta": B metadata dicts
        (subject, sex, age_group, ethnicity, path)}.
    """
    views, labels, metas = zip(*items)
    return {"views": torch.stack(views),  # (B, T, V, 3, H, W)
            "label": torch.tensor(labels, dtype=torch.long),
            "intensity": torch.tensor([m["intensity"] for m in metas], dtype=torch.long),
            "seed": torch.tensor([m["seed"] for m in metas], dtype=torch.long),
            "meta": list(metas)}


class CaptionedViews(Dataset):
    """CLIP pretraining pairs: one view of a scan and a caption of it (`facet.captions`).

    Args:
        views: (N, V, C, H, W) uint8 renders of N scans (C = 1 grey or 3).
        truths: N dicts the captions are written from: "aus" {au: [left, right]}, "emotion",
            "intensity", "person" {"sex", "age_group"}.
        yaws: the V views' yaw in degrees (captions may say the side).
        train: a random view and a freshly drawn caption per epoch; else view `v` = the middle
            (frontal) one and a fixed caption.
        seed: base of the per-item random choices (seeded by seed, epoch and index).
    Item:
        image (3, H, W) float32 in [0, 1], caption str, {"seed": augmentation seed}.
    """

    def __init__(self, views: np.ndarray, truths: Sequence[dict], yaws: Sequence[float],
                 train: bool = True, seed: int = 0):
        if len(views) != len(truths) or views.ndim != 5 or views.shape[1] != len(yaws):
            raise ValueError(f"{len(truths)} captions for views of shape {views.shape} and "
                             f"{len(yaws)} view angles")
        self.views, self.truths, self.yaws = views, list(truths), list(yaws)
        self.train, self.seed, self.epoch = train, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.truths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, dict]:
        from facet.captions import caption

        rng = np.random.default_rng((self.seed, self.epoch if self.train else 0, i))
        v = int(rng.integers(len(self.yaws))) if self.train else len(self.yaws) // 2
        image = torch.from_numpy(self.views[i, v]).float().div(255)  # (C, H, W)
        truth = self.truths[i]
        aus = {int(au): tuple(sides) for au, sides in truth["aus"].items()}
        text = caption(aus, rng, truth.get("emotion"), truth.get("intensity"),
                       truth.get("person"), self.yaws[v])
        return image.expand(3, -1, -1), text, {"seed": int(rng.integers(2 ** 62))}


def collate_captions(items: list) -> dict:
    """CaptionedViews items -> {"views": (B, 1, 1, 3, H, W) float32, "captions": B strings,
    "label": (B,) int64 = arange(B) (image i goes with caption i), "seed": (B,) int64}."""
    images, captions, metas = zip(*items)
    return {"views": torch.stack(images)[:, None, None],  # (B, T=1, V=1, 3, H, W)
            "captions": list(captions), "label": torch.arange(len(images)),
            "seed": torch.tensor([m["seed"] for m in metas], dtype=torch.long)}
