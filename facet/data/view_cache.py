"""The view cache: render every frame of every sample once, keep the pixels as uint8 on disk.

Rendering a scan costs far more than a training step needs to spend on reading it, and the views
of a scan never change for fixed render settings. So `ViewCache.fill` loads each sample's meshes,
renders all frames with `facet.render.render_views`, and stores per sample

- `<entry>.npy`: uint8 (T_all, V, C, H, W), T_all = every frame of the sequence (a 4D sampler
  picks from them later; a static scan with a neutral reference (`Sample.reference`) is the
  pair reference, scan), C = 1 when the three colour channels are identical (grey shaded, depth:
  a third of the disk) else 3;
- `<entry>.json`: the key it was made from, the array shape, a CRC-32 of the array bytes, and the
  per-frame displacement from the first frame (the head's rigid motion taken out) with the apex
  (its argmax) -- renders alone do not know how far the face moved, so this is computed from
  the meshes while they are loaded.

Keys. The folder `<root>/<mode>-<size>px-<V>v-<hash>` is named by a hash of the render settings
(with `settings.json` beside the entries), so changing a setting starts a fresh folder and never
mixes renders. An entry's file name hashes its frame paths; its `.json` stores each frame's
(size, mtime_ns). We chose file stats over content hashes: a stat is O(1) while hashing BU-4DFE
(~60k frames, tens of GB) would dominate every run; any rewrite of a file changes mtime_ns, and
a false "changed" (a copy without timestamps) only costs a re-render, never a stale view. An
entry whose files are missing, unreadable, of the wrong shape or failing the CRC is re-rendered.
Writes are atomic (temp file + os.replace; the .json last), so an interrupted fill never leaves
an entry that looks complete.

Parallelism: `fill(workers=2)` renders samples in 2 processes of one torch thread each; with
workers=1 it renders in this process, also single-threaded (see `init_render_worker`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from facet.atomic import atomic_file, write_atomic
from facet.data.layouts import Sample, index_dataset
from facet.data.meshio import load_mesh
from facet.mesh import Mesh, Similarity, normalize
from facet.render import (MIN_FOREGROUND, TRAINING_RENDER, RenderSettings, render_views,
                          vertex_normals)
from facet.runtime import exit_with_parent, keep_freed_memory

CACHE_FORMAT = 5  # bump when an entry's contents change: old folders are then ignored
# (2: displacement without the head's rigid motion; 3: frames rendered aligned to the first;
# 4: ICP fitted to the closest matches only, `ICP_KEPT`; 5: ICP matches found in float32)

# ICP (`align_to`, scans of differing topology) refits on this fraction of the nearest-neighbour
# matches, the closest: where two scans differ -- the expression, each scan's own crop -- the
# matches are far and would pull the fit (a trimmed ICP, Chetverikov et al. 2002). On the
# built-in BU-3DFE-like scans aligned to their person's neutral scan, a ridge probe of the
# difference scores 92.8 % (10 folds) with 70 % kept over 20 steps, 91.9 % with 50 %, 89.0 %
# with all matches over 8
ICP_KEPT = 0.7
ICP_STEPS = 20

# the motion is smoothed over this radius (% of the face's size, ~4 mm on a face) before it is
# magnified: scanner noise differs from vertex to vertex and frame to frame, and a gain of 10
# would turn 0.05 mm of it into a visible speckle; an action unit moves the skin coherently over
# a centimetre or more, which survives
MOTION_SMOOTHING = 2.0


# render settings added after CACHE_FORMAT 3's folders were made: hashed only when they differ
# from their default, so those folders, which hold exactly the default's pixels, stay valid
ADDED_SETTINGS = ("apex_motion", "align_frames")


def settings_key(settings: RenderSettings) -> str:
    """Short stable hash of the render settings and the cache format: the folder's name."""
    fields = {k: v for k, v in asdict(settings).items()
              if k not in ADDED_SETTINGS or v != getattr(RenderSettings, k)}
    if settings.apex_motion:  # the smoothing of the magnified motion changes those pixels too
        fields["motion_smoothing"] = MOTION_SMOOTHING
    text = json.dumps({**fields, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class FillReport:
    """What `ViewCache.fill` did."""

    rendered: int = 0  # entries rendered in this call
    reused: int = 0  # entries already valid
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def summary(self) -> str:
        return f"{self.rendered} rendered, {self.reused} reused, {len(self.failed)} failed"


def default_cache_root() -> Path:
    """`$FACET_CACHE`, else the git-ignored `cache/views` folder of the repository."""
    default = Path(__file__).resolve().parents[2] / "cache" / "views"
    return Path(os.environ.get("FACET_CACHE", default))


def _abs_frames(sample: Sample) -> list[str]:
    """The sample's frame paths made absolute: a root given as a relative path (the CLI) and the
    same root given absolutely (training) must name the same entry."""
    return [os.path.abspath(f) for f in sample.rendered]


def _stats(sample: Sample) -> list[list[int]]:
    return [[st.st_size, st.st_mtime_ns] for st in map(os.stat, sample.rendered)]


def _rigid_fit(source: torch.Tensor, target: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation R (3, 3) and translation t (3,) with `source @ R + t` closest to the
    corresponding `target` points (N, 3) in the least-squares sense (Kabsch 1976; no scaling)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    u, _, vt = torch.linalg.svd((source - mu_s).T @ (target - mu_t))  # (3, 3) covariance
    d = torch.sign(torch.linalg.det(u @ vt))  # -1: the best orthogonal map is a reflection
    rotation = u @ torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d])) @ vt
    return rotation, mu_t - mu_s @ rotation


def align_to(verts: np.ndarray, first: np.ndarray, icp_steps: int = ICP_STEPS
             ) -> tuple[np.ndarray, float]:
    """A frame's vertices with the head's rigid motion since the first frame taken out, and how
    far the face itself moved: (aligned (N, 3) float32, mean distance in file units).

    Without the rigid fit a sequence in which the head drifts (every BU-4DFE subject does)
    moves "most" at its last frame, not at its apex, and two frames differ mostly by the pose.
    With vertex correspondence (same vertex count: synthetic data, registered scans) the fit is
    one Kabsch step and the distance the mean per-vertex displacement; otherwise (raw scans of
    varying topology) up to 2,000 evenly picked vertices of each are matched to their nearest
    neighbours and refitted on the closest `ICP_KEPT` of the matches (up to `icp_steps` of
    trimmed ICP, after Besl & McKay 1992; it stops early when the matches repeat, as the same
    matches give the same fit), and the distance is that to the nearest neighbour. The matches
    are searched in float32: half the time of float64 (the search is most of ICP's cost, ~0.2 s
    a frame), and fits within 0.04 degrees (mean 0.003) of float64's on frames scanned apart;
    the fits themselves run in float64.
    """
    points, reference = torch.from_numpy(verts).double(), torch.from_numpy(first).double()
    if len(verts) == len(first):
        rotation, shift = _rigid_fit(points, reference)
        aligned = points @ rotation + shift
        return aligned.float().numpy(), float((aligned - reference).norm(dim=1).mean())
    pick = lambda v: v[np.linspace(0, len(v) - 1, min(len(v), 2000)).astype(int)]  # (<= 2000, 3)
    source, target = pick(points), pick(reference)
    target32 = target.float()
    rotation, shift = torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    previous = None
    for _ in range(icp_steps):
        moved = source @ rotation + shift
        distance, nearest = torch.cdist(moved.float(), target32).min(dim=1)  # (n,) each
        kept = distance <= distance.quantile(ICP_KEPT)  # (n,) the closest matches
        matches = torch.where(kept, nearest, -1)  # (n,) what the fit reads: -1 = not used
        if previous is not None and torch.equal(matches, previous):
            break  # converged: the same matches would give the same fit
        previous = matches
        rotation, shift = _rigid_fit(source[kept], target[nearest[kept]])
    moved = source @ rotation + shift
    distance = float(torch.cdist(moved.float(), target32).min(dim=1).values.mean())
    return (points @ rotation + shift).float().numpy(), distance


def smooth_on_mesh(values: torch.Tensor, faces: np.ndarray, passes: int) -> torch.Tensor:
    """Per-vertex values (N, D) after `passes` of the umbrella average: each vertex replaced by
    the mean of itself and its 1-ring neighbours (a diffusion, whose reach grows as the square
    root of the passes: k passes smooth over about sqrt(k) edge lengths)."""
    edges = torch.from_numpy(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]],
                                             faces[:, [2, 0]]])).long()  # (3F, 2)
    edges = torch.cat([edges, edges.flip(1)])  # (6F, 2) both directions (shared ones twice)
    ones = torch.ones(len(edges), 1, dtype=values.dtype)
    count = torch.ones(len(values), 1, dtype=values.dtype).index_add_(0, edges[:, 0], ones)
    for _ in range(passes):
        values = values.clone().index_add_(0, edges[:, 0], values[edges[:, 1]]) / count
    return values


def magnify_motion(first: Mesh, frame: Mesh, gain: float, smoothing: float = 0.0) -> np.ndarray:
    """A frame's aligned vertices with their motion since the first frame scaled by `gain`:
    (N, 3) float32 (Lagrangian motion magnification: the geometry moves further, so the renders
    show it as the face would look, edges and shading alike).

    With vertex correspondence (same vertex count) each vertex moves to x_0 + gain d, d = x_t -
    x_0 its motion since the first frame. Without it (raw scans of varying topology) a vertex's
    own past place is unknown: only its offset along the surface normal of the nearest first-
    frame vertex p is scaled, x_t + (gain - 1) a n_p, a = (x_t - p) . n_p -- the part of the
    motion that changes the shape; sliding along the surface and the two scans' sampling are
    left as they are. The motion (d, or a) is first smoothed over the surface over about
    `smoothing` (the scan's length units; `smooth_on_mesh`) so that noise is not magnified.
    """
    start = torch.from_numpy(first.verts).double()
    moved = torch.from_numpy(frame.verts).double()

    def passes(mesh: Mesh, verts: torch.Tensor) -> int:  # sqrt(k) edge lengths ~ smoothing
        edge = float((verts[mesh.faces[:, 0]] - verts[mesh.faces[:, 1]]).norm(dim=1).mean())
        return min(int(np.ceil((smoothing / edge) ** 2)), 400) if smoothing > 0 else 0

    if len(frame.verts) == len(first.verts):
        motion = smooth_on_mesh(moved - start, first.faces, passes(first, start))  # (N, 3)
        return (start + gain * motion).float().numpy()
    normals = vertex_normals(start, torch.from_numpy(first.faces).long())  # (N_0, 3) unit
    nearest = torch.cat([torch.cdist(chunk, start).argmin(dim=1)  # chunks of 1,024 rows:
                         for chunk in moved.split(1024)])  # ~290 MB at 35k vertices; (N,)
    along = ((moved - start[nearest]) * normals[nearest]).sum(dim=1, keepdim=True)  # (N, 1)
    along = smooth_on_mesh(along, frame.faces, passes(frame, moved))
    return (moved + (gain - 1) * along * normals[nearest]).float().numpy()


def render_frames(frames: Sequence[str | Path | Mesh], settings: RenderSettings
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Load and render every frame as the cache stores it: uint8 (T, V, C, H, W) views and the
    (T,) float32 displacement of each frame from the first (the apex is its argmax).

    Every frame is rigidly aligned to the first (`align_to`) and normalised as the first is
    (one centre and scale for the whole sequence), so the views of frame t differ from those
    of frame 0 only where the face moved: onset-relative inputs (`facet.data.datasets`) see the
    expression, not the head's drift or a per-frame re-crop. With `settings.apex_motion` > 0
    every frame's motion is then scaled by one gain per sequence (`magnify_motion`), so that
    its apex moves that percentage of the face's size: a faint micro-expression and a broad
    one reach the same, visible size, and the timing is kept. The displacement returned is the
    scanned one, measured after alignment either way: `settings.align_frames=False` (the
    alignment's ablation) changes the pixels only, rendering each frame with the head's rigid
    motion kept. Frames (files, or meshes already loaded) are loaded one at a time (a BU-4DFE
    sequence holds ~100 scans of ~35k vertices); to magnify, the aligned meshes are kept until
    the apex is known (~200 MB for such a sequence). Raises what `facet.data.meshio.load_mesh`
    raises, and ValueError for a frame that renders to an (almost) empty image (`facet.render`).
    """
    images, kept, displacement, first, frame_of_first = [], [], [], None, None
    for frame in frames:
        mesh = frame if isinstance(frame, Mesh) else load_mesh(frame)
        if first is None:  # the first frame sets the rigid reference and the normalisation
            first = mesh
            frame_of_first = normalize(mesh)[1]
            moved = 0.0
        else:  # the head put back where it was in the first frame: the change is the face's
            aligned, moved = align_to(mesh.verts, first.verts)
            if settings.align_frames:  # else rendered as scanned; the displacement, the same
                mesh = replace(mesh, verts=aligned)
        displacement.append(moved)
        if settings.apex_motion > 0:  # rendered below, once the apex's motion is known
            kept.append(mesh)
        else:
            images.append(_render_frame(mesh, frame_of_first, settings))
    if kept:
        apex_percent = 100 * max(displacement) * frame_of_first.scale  # of the face's size
        # a still sequence (under 0.01 % of the face) is rendered as scanned, not blown up
        gain = settings.apex_motion / apex_percent if apex_percent > 0.01 else 1.0
        smoothing = MOTION_SMOOTHING / 100 / frame_of_first.scale  # in the scan's units
        images = [_render_frame(mesh if t == 0 else replace(
                      mesh, verts=magnify_motion(first, mesh, gain, smoothing)),
                      frame_of_first, settings) for t, mesh in enumerate(kept)]
    pixels = np.stack(images)  # (T, V, 3, H, W)
    if (pixels[:, :, :1] == pixels[:, :, 1:]).all():
        pixels = pixels[:, :, :1]  # (T, V, 1, H, W): a grey image keeps one channel
    return np.ascontiguousarray(pixels), np.asarray(displacement, dtype=np.float32)


def _render_frame(mesh: Mesh, frame_of_first: Similarity, settings: RenderSettings
                  ) -> np.ndarray:
    """One aligned frame in the first frame's normalisation -> uint8 (V, 3, H, W)."""
    mesh = replace(mesh, verts=frame_of_first.apply(mesh.verts), landmarks={})
    views = render_views(mesh, settings.views, settings.image_size, settings.mode,
                         normalize=False, distance=settings.distance, fov_y=settings.fov_y,
                         min_foreground=MIN_FOREGROUND)  # (V, 3, H, W) float in [0, 1]
    return (views.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _write_entry(npy: Path, meta: dict, pixels: np.ndarray) -> None:
    npy.with_suffix(".json").unlink(missing_ok=True)  # an entry being rewritten is incomplete
    with atomic_file(npy) as f:
        np.save(f, pixels)
    write_atomic(npy.with_suffix(".json"), json.dumps(meta))  # last: marks the entry complete


def _why(err: OSError) -> str:
    """The system's words for an OSError ("No space left on device"), without its paths."""
    return os.strerror(err.errno) if err.errno else str(err)


def _fill_one(frames: tuple[str, ...], settings: RenderSettings, npy: str, stats: list
              ) -> str | None:
    """Render one sample into its entry; returns None or the reason it failed.

    Raises:
        OSError: the entry cannot be written (naming it): no sample after it could be either.
    """
    try:
        pixels, displacement = render_frames(frames, settings)
    except Exception as err:  # any unreadable or malformed mesh is reported, never fatal to a fill
        return f"{type(err).__name__}: {err}"
    meta = {"frames": [os.path.abspath(f) for f in frames], "stats": stats,
            "shape": list(pixels.shape),
            "crc32": zlib.crc32(pixels.tobytes()), "displacement": displacement.tolist(),
            "apex": int(displacement.argmax())}
    try:
        _write_entry(Path(npy), meta, pixels)
    except OSError as err:  # a full disk fails every sample after it: stop the fill, say why
        raise OSError(err.errno, f"view cache: cannot write {npy} ({_why(err)}); "
                                 "free space there, or pass --cache=DIR") from None
    return None


def init_render_worker() -> None:
    """Set up a rendering worker process (also used for the CLIP pretraining set)."""
    # One thread per process: a face is many small tensor ops, too small to split across
    # threads, and on a busy machine intra-op threads that wait for each other made rendering
    # 4-5x slower (0.15 vs 0.03 s per scan at 112 px, 2 shared cores). Parallelism goes across
    # samples instead; `bench.py --only cache` measures whether a second process helps.
    torch.set_num_threads(1)
    keep_freed_memory()  # inherited from the parent under fork; needed under spawn/forkserver
    exit_with_parent()  # a killed command must not leave its render workers running


class ViewCache:
    """Rendered views of samples on disk, keyed by file stats and render settings.

    Picklable (a path and settings): safe to hold in a Dataset used by DataLoader workers.
    """

    def __init__(self, root: str | Path | None = None, settings: RenderSettings | None = None):
        self.settings = settings or TRAINING_RENDER
        s = self.settings
        self.root = Path(root) if root is not None else default_cache_root()
        self.folder = self.root / f"{s.mode}-{s.image_size}px-{len(s.views)}v-{settings_key(s)}"

    def entry(self, sample: Sample) -> Path:
        """The `.npy` path of a sample's entry (its `.json` sits beside it)."""
        name = hashlib.sha1("\n".join(_abs_frames(sample)).encode())
        return self.folder / f"{name.hexdigest()[:20]}.npy"

    def metadata(self, sample: Sample) -> dict:
        """The entry's metadata (shape, apex, displacement, ...).

        Raises:
            FileNotFoundError: if the sample has no entry yet.
        """
        path = self.entry(sample).with_suffix(".json")
        if not path.is_file():
            raise FileNotFoundError(f"{sample.path} is not in the view cache {self.folder}; "
                                    "fill it with ViewCache.fill or `render_views.py ROOT --cache`")
        return json.loads(path.read_text())

    def load(self, sample: Sample, frames: Sequence[int] | None = None) -> np.ndarray:
        """uint8 (T, V, C, H, W) views of the chosen frame indices (all when None), memory-mapped
        so that only those frames are read."""
        views = np.load(self.entry(sample), mmap_mode="r")  # (T_all, V, C, H, W)
        return np.array(views if frames is None else views[np.asarray(frames)])

    def is_valid(self, sample: Sample, verify: bool = True) -> bool:
        """True when the entry exists, matches the files' current stats and (verify) its CRC."""
        try:
            meta = self.metadata(sample)
            if meta["frames"] != _abs_frames(sample) or meta["stats"] != _stats(sample):
                return False
            views = np.load(self.entry(sample), mmap_mode="r")
            if list(views.shape) != meta["shape"] or views.dtype != np.uint8:
                return False
            return not verify or zlib.crc32(np.ascontiguousarray(views).tobytes()) == meta["crc32"]
        except (OSError, ValueError, KeyError, TypeError):  # missing, truncated, unparsable
            return False

    def fill(self, samples: Sequence[Sample], workers: int = 2, progress: bool = True,
             strict: bool = False) -> FillReport:
        """Render every sample without a valid entry.

        Args:
            samples: samples to cache (all frames of each).
            workers: processes rendering in parallel (1 = in this process).
            progress: show a tqdm bar (only when stderr is a terminal).
            strict: raise on the first mesh that cannot be loaded or rendered.
        Returns:
            a `FillReport`; failed samples are listed as (file, reason) and have no entry.
        Raises:
            ValueError: with `strict`, naming the failing file and the reason.
        """
        report, todo = FillReport(), {}  # entry path -> (sample, stats)
        for sample in samples:
            if self.is_valid(sample):
                report.reused += 1
                continue
            try:
                todo[str(self.entry(sample))] = (sample, _stats(sample))
            except OSError as err:
                report.failed.append((sample.path, f"cannot stat: {err}"))
        if todo:  # a complete cache may be read-only; one with entries to render may not
            self._prepare_folder()
        with tqdm(total=len(todo), desc="rendering views", unit="sample",
                  disable=not progress or not os.isatty(2)) as bar:
            for npy, reason in self._render(todo, workers):
                bar.update()
                if reason is None:
                    report.rendered += 1
                elif strict:
                    raise ValueError(f"{todo[npy][0].path}: {reason}")
                else:
                    report.failed.append((todo[npy][0].path, reason))
        return report

    def _prepare_folder(self) -> None:
        """Create the settings' folder and its manifest, and check that entries can be written.

        Raises:
            OSError: naming the folder: read-only, not a folder, no permission.
        """
        manifest = self.folder / "settings.json"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not manifest.is_file():
                write_atomic(manifest, json.dumps({**asdict(self.settings),
                                                   "format": CACHE_FORMAT}))
            with tempfile.TemporaryFile(dir=self.folder):  # a probe: removed on close
                pass
        except OSError as err:
            raise OSError(err.errno, f"view cache {self.root}: cannot write there "
                                     f"({_why(err)}); pass --cache=DIR (or set "
                                     "FACET_CACHE) to a writable folder") from None

    def _render(self, todo: dict, workers: int):
        """Yield (entry path, failure reason or None) as samples finish rendering."""
        if workers <= 1 or len(todo) <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # see init_render_worker; restored for the caller afterwards
            try:
                for npy, (sample, stats) in todo.items():
                    yield npy, _fill_one(sample.rendered, self.settings, npy, stats)
            finally:
                torch.set_num_threads(threads)
            return
        pool = ProcessPoolExecutor(workers, initializer=init_render_worker)
        try:
            futures = {pool.submit(_fill_one, sample.rendered, self.settings, npy, stats): npy
                       for npy, (sample, stats) in todo.items()}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:  # also on strict errors and Ctrl-C: drop the queued work, do not wait for it
            pool.shutdown(wait=True, cancel_futures=True)


def fill_cache_cli(root: str | Path, kind: str = "auto", settings: RenderSettings | None = None,
                   cache_root: str | Path | None = None, workers: int = 2,
                   strict: bool = False, progress: bool = True) -> tuple[FillReport, str]:
    """Index a dataset root and fill its view cache (`render_views.py ROOT --cache`).

    Args:
        root, kind, strict: as `facet.data.layouts.index_dataset` (strict also stops on a mesh
            that does not load).
        settings, cache_root: as `ViewCache`; use the training run's views, size and mode.
        workers, progress: as `ViewCache.fill`.
    Returns:
        (the fill report, a few lines for the command line to print: index summary, cache
        folder and counts, then every skipped or failed file with its reason).
    """
    index = index_dataset(root, kind, strict=strict)
    cache = ViewCache(cache_root, settings)
    report = cache.fill(index.samples, workers=workers, progress=progress, strict=strict)
    lines = [index.summary(), f"view cache {cache.folder}: {report.summary()}"]
    lines += [f"  skipped {p}: {r}" for p, r in index.skipped]
    lines += [f"  failed {p}: {r}" for p, r in report.failed]
    return report, "\n".join(lines)
