"""A vectorised z-buffer rasterizer in PyTorch: triangles in clip space -> fragments per pixel.

This is the step that turns a 3D face into the 2D views FACET-VLM looks at (the paper renders
views of each scan; the renderer is ours). It is organised like PyTorch3D: `rasterize` produces
`Fragments` (which face covers each pixel, its depth, its barycentric coordinates), and shading
(`facet.render`) works on fragments only. `rasterize_reference` computes them as tinyrenderer
does -- edge functions, a z-buffer, perspective-correct barycentrics -- one triangle at a time:
read it first. `rasterize` computes the same for all views and triangles at once, as follows.

Conventions (used by all of facet's rendering):
- Right-handed world; the camera looks down -z (`facet.camera`). Clip space is OpenGL's: a point
  is visible when -w <= x, y, z <= w; NDC = clip / w has x to the right, y up, z = -1 near.
- Pixel (row i, column j) has its centre at x = j + 0.5, y = i + 0.5 in screen units, with row 0
  at the TOP of the image: NDC y = +1 is the top edge, so screen y = (1 - y_ndc) * H / 2.
- Counter-clockwise in NDC (seen from the camera) = front face. Both sides are drawn by default:
  scans are open surfaces and at wide yaw one sees the inside of lips, nostrils and the scan
  border; pass `cull_backfaces=True` to drop faces seen from behind.

Algorithm:
1. Per (view, face) ("entry" v * F + f): divide by w, snap screen coordinates to a 1/16 pixel
   grid (as GPUs do), and compute the three edge functions E_i as affine functions of the pixel
   position. Snapped coordinates make E_i integers, exact in float32 for triangles smaller than
   ~180 pixels, so a pixel centre on an edge shared by two triangles goes to exactly one of them
   (the top-left rule), and meshes are watertight: no holes, no pixel drawn twice by one
   surface. Entries that cannot cover a pixel (culled, empty box, zero area, back faces when
   asked) are dropped here, before any per-pixel work.
2. Each face's pixel bounding box is enumerated as a gh x gw grid of candidate pixels, with
   sides 1, 2, 3, 4, 6, 8, 12, 16, ... (the smallest that holds the box, at most 1.5x its
   side): faces are sorted by this size class, so the many one-pixel triangles of a dense scan
   do not pay for the few big ones. A call per class would cost more than the candidates of the
   many small classes, so neighbouring classes share a grid while the padding costs less than a
   call (`_plan_chunks`), and a chunk holds at most `CANDIDATE_BUDGET` candidates (bounded
   memory at 100k faces).
3. A candidate is inside when all E_i >= 0 (E_i > 0 on non-top-left edges); as the E_i are
   whole numbers, adding 4 |min(E_i, 0)| to its depth lifts an outside one above every drawn
   depth without a boolean mask. Its depth and its row r = entry + 1 are packed into one int64
   key (float bits of the depth in the high half, r in the low half, each written in place
   through a 32-bit view) and `scatter_reduce(amin)` keeps the nearest; equal depths go to the
   lower face id, so the result is deterministic on every device. An empty pixel keeps the key
   of row 0.
4. For the winning face of each pixel, screen barycentrics b_i = E_i / 2A are made
   perspective-correct: beta_i = (b_i / w_i) / sum_j (b_j / w_j), both affine in the pixel
   position, so each entry stores three planes in its column of a table, and a covered pixel
   evaluates its winner's when shading asks (`Fragments.covered_bary`; `facet.render` may
   combine a face's corner attributes into planes of their own first). The covered pixels are
   handed out as a list (`Fragments.covered`): shading reads and writes those only, and no
   dense (V, H, W, 3) array is filled unless someone asks for `Fragments.bary`.

Memory layout, for speed on CPU (one core, eager PyTorch: every operation is a pass over memory,
and a call costs ~2-8 us before it touches any):
per-vertex and per-face quantities are rows of (C, K) tables, so a gather or an elementwise kernel
runs along one contiguous row; per-pixel outputs are stored channel-major, (C, Q) for the Q covered
pixels or (C, V, H, W), and handed out as (V, H, W, C) views (`bary`, `facet.render.interpolate`),
since with C = 3 innermost each kernel would loop over rows of three numbers and run several times
slower. This holds for the reads per pixel from a table indexed by face too: a gather per
coefficient row gives a contiguous (Q,) row to compute with, where gathering whole (Q, 9) records
(fewer, larger reads) leaves the arithmetic strided, and that ran ~10x slower. Only the covered
pixels (a third to two thirds of a face's views) read at all, and no per-pixel step divides
integers (it does not vectorise): each view's covered pixels are one run of the ascending list,
and their columns and rows come from a cached grid.

Culling (never produces NaN or inf): a triangle is drawn only if all three vertices have w > 0
and lie between the near and far planes (-w <= z <= w) and inside a guard band |x|, |y| <=
GUARD_BAND * w; triangles crossing the near plane are dropped, not clipped. Zero-area triangles
cover nothing.

Shapes: V views, N vertices, F faces, H x W image.
"""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

SUBPIXEL = 16  # fixed-point steps per pixel (4 bits): exact integer edge functions in float32
GUARD_BAND = 64.0  # |x_ndc|, |y_ndc| limit; keeps snapped coordinates far below float32 overflow
# What a `_scatter_bucket` call costs beyond its candidates, in candidates: ~0.1 ms of fixed
# cost at ~7-12 ns a candidate (AMD EPYC, one thread); 2^13 to 2^15 timed alike, within noise.
CHUNK_COST = 1 << 13
CANDIDATE_BUDGET = 1 << 17  # (face, pixel) candidates per chunk: temporaries of 0.5-2 MB
# An empty pixel's depth in its key, above any drawn z_ndc + 2 <= 3; an outside candidate's
# depth gains as much per unit of its most negative E'.
_MISS_DEPTH = 4.0
_MISS = 0x40800000 << 32  # an empty pixel's key: float32 bits of 4.0 high, row 0 (no face) low
MAX_IMAGE_SIDE = 1 << 14
# Candidate grids have sides 1, 2, 3, 4, 6, 8, 12, 16, ...: 2^k and 3 * 2^(k-2), the smallest
# that holds the box, so a grid side is at most 1.5x its box's (33 % waste; powers of two alone
# waste up to 100 %, and the typical 3- and 5-pixel boxes of a dense scan would pay it).
# Code c names side 2^(c/2) (c even) or 3 * 2^((c-3)/2) (c odd); a size class is
# N_SIDES * code(height) + code(width), plus CUT_CLASSES for boxes the image's edge cut (their
# grids need masks, `_scatter_bucket`), an int16.
N_SIDES = 2 * 14 + 1  # codes 0..28: sides up to 2^14 = MAX_IMAGE_SIDE
CUT_CLASSES = N_SIDES * N_SIDES
NOT_DRAWN = 2 * CUT_CLASSES  # size class of culled and empty faces: sorts after every other
# Which 32-bit half of an int64 key holds its low bits (the row): the first in memory on a
# little-endian machine.
_LOW_HALF = 0 if sys.byteorder == "little" else 1


@dataclass
class Fragments:
    """What the rasterizer knows about each pixel of each view (the input of shading).

    Attributes:
        shape: (V, H, W).
        covered: (Q,) int64 flat indices into the (V*H*W) pixels of the Q pixels some face
            covers, ascending.
        planes: (9, R) float32 perspective-correct barycentric planes, a column per record:
            rows a_0..a_2, g_0..g_2, k_0..k_2, with b_i / w_i = a_i + g_i col + k_i row at pixel
            (row, col) of a view (module docstring, step 4); column 0 is zeros (no face).
        record_face: (R,) int64 the face of each record, -1 for column 0.
        covered_record: (Q,) int32 or int64 the record of each covered pixel.
        faces_per_view: F when the records are the (view, face) entries, v * F + f + 1
            (`rasterize`); 0 when they are the covered pixels (`from_dense`).
        unpack: makes the dense maps `pix_to_face` and `zbuf` (below) when first asked for.

    Shading works on the covered pixels only (often a third of the image), so the rasterizer
    hands them out compactly, with their barycentrics as planes to evaluate: `covered_bary`
    does, on first use. The dense maps are made on first use too: `pix_to_face` (V, H, W) int64,
    the nearest face covering each pixel, -1 if none; `zbuf` (V, H, W) float32, its NDC depth
    z/w in [-1, 1], 1 (the far plane, like a cleared OpenGL depth buffer) where no face covers
    the pixel; `bary` (V, H, W, 3), the barycentrics of every pixel.
    """

    shape: tuple[int, int, int]
    covered: torch.Tensor
    planes: torch.Tensor
    record_face: torch.Tensor
    covered_record: torch.Tensor
    faces_per_view: int
    unpack: Callable[[], tuple[torch.Tensor, torch.Tensor]] = field(repr=False)

    @classmethod
    def from_dense(cls, pix_to_face: torch.Tensor, zbuf: torch.Tensor,
                   bary: torch.Tensor) -> Fragments:
        """Fragments from (V, H, W) pix_to_face and zbuf and (V, H, W, 3) barycentrics: a
        constant plane per covered pixel."""
        covered = (pix_to_face.reshape(-1) >= 0).nonzero().view(-1)  # (Q,)
        planes = bary.new_zeros(9, len(covered) + 1)
        planes[:3, 1:] = bary.reshape(-1, 3).index_select(0, covered).t()
        record_face = torch.cat([covered.new_full((1,), -1),
                                 pix_to_face.reshape(-1).index_select(0, covered)])
        return cls(tuple(pix_to_face.shape), covered, planes, record_face,
                   torch.arange(1, len(covered) + 1, device=covered.device), 0,
                   lambda: (pix_to_face, zbuf))

    @functools.cached_property
    def _dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pix_to_face, zbuf), made once."""
        return self.unpack()

    @property
    def pix_to_face(self) -> torch.Tensor:
        """(V, H, W) int64 index of the nearest face covering each pixel, -1 if none."""
        return self._dense[0]

    @property
    def zbuf(self) -> torch.Tensor:
        """(V, H, W) float32 NDC depth of that face, 1 where no face covers the pixel."""
        return self._dense[1]

    @functools.cached_property
    def view_spans(self) -> list[slice]:
        """Where each view's pixels lie in `covered`: as it ascends, view v's are one run."""
        n_views, h, w = self.shape
        bounds = _view_bounds(self.covered, n_views, h * w)
        return [slice(first, end) for first, end in zip(bounds[:-1], bounds[1:])]

    @functools.cached_property
    def covered_xy(self) -> torch.Tensor:
        """(2, Q) float32 column and row of each covered pixel in its view: one gather from a
        cached grid of every pixel's, so that no pixel pays an integer division (which does not
        vectorise)."""
        return _pixel_grid(*self.shape, self.covered.device).index_select(1, self.covered)

    def evaluate(self, table: torch.Tensor) -> torch.Tensor:
        """(C, Q) values at the covered pixels of C affine functions given per record, as a
        (3C, R) table like `planes`: C rows of values at pixel (0, 0), C of steps per column,
        C of steps per row. One coefficient row at a time, so that each gather yields a
        contiguous row and each sum runs along contiguous memory (module docstring)."""
        n_functions = len(table) // 3
        col, line = self.covered_xy  # (Q,) each
        values = table.new_empty(n_functions, len(self.covered))  # (C, Q)
        for c in range(n_functions):  # a + g col + k row
            a, g, k = (table[c + n_functions * j].index_select(0, self.covered_record)
                       for j in range(3))
            torch.addcmul(a, g, col, out=values[c])
            values[c].addcmul_(k, line)
        return values

    @functools.cached_property
    def covered_bary(self) -> torch.Tensor:
        """(3, Q) float32 perspective-correct barycentric coordinates of the covered pixels'
        centres in their faces (non-negative, summing to 1), one row per corner."""
        bary = self.evaluate(self.planes)  # b_i / w_i
        bary.clamp_(min=0)
        bary /= bary[0] + bary[1] + bary[2]  # > 0: the pixel is inside the face
        return bary

    @functools.cached_property
    def bary(self) -> torch.Tensor:
        """(V, H, W, 3) float32 barycentrics of every pixel, 0 where no face covers it; stored
        channel-major (module docstring). Built on first use: shading never needs it."""
        n_views, h, w = self.shape
        dense = self.covered_bary.new_zeros(3, n_views * h * w)  # (3, V*H*W)
        dense.index_copy_(1, self.covered, self.covered_bary)
        return dense.view(3, n_views, h, w).permute(1, 2, 3, 0)


def _view_bounds(covered: torch.Tensor, n_views: int, view_pixels: int) -> list[int]:
    """V + 1 positions in the ascending (Q,) flat pixel indices `covered` where each view's
    pixels start (and the last ends), for views of `view_pixels` pixels each."""
    starts = torch.arange(n_views + 1, device=covered.device) * view_pixels
    return torch.searchsorted(covered, starts).tolist()


def _image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if not (1 <= int(h) <= MAX_IMAGE_SIDE and 1 <= int(w) <= MAX_IMAGE_SIDE):
        raise ValueError(f"image_size must be between 1 and {MAX_IMAGE_SIDE}, got {image_size}")
    return int(h), int(w)


def _check_inputs(verts_clip: torch.Tensor, faces: torch.Tensor) -> None:
    if verts_clip.ndim != 3 or verts_clip.shape[-1] != 4:
        raise ValueError(f"rasterize: verts_clip must be (V, N, 4), got {tuple(verts_clip.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.dtype.is_floating_point:
        raise ValueError(f"rasterize: faces must be (F, 3) integer, got {tuple(faces.shape)} "
                         f"{faces.dtype}")
    # The sum is finite unless a value is NaN or infinite (or the sum overflows: then look at
    # each value), and costs a fraction of an elementwise test.
    if not torch.isfinite(verts_clip.sum()) and not torch.isfinite(verts_clip).all():
        bad = int((~torch.isfinite(verts_clip)).any(-1).sum())
        raise ValueError(f"rasterize: {bad} clip-space vertices are NaN or infinite")
    if len(faces) and (faces.min() < 0 or faces.max() >= verts_clip.shape[1]):
        raise ValueError(f"rasterize: face indices out of range [0, {verts_clip.shape[1]})")


def _project_vertices(verts_clip: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Cull, divide by w and snap every vertex of every view to the fixed-point screen grid.

    Returns:
        (5, V*N) float32, one row per quantity (so that gathering a quantity at the corners of
        faces reads one contiguous row): sx, sy (snapped screen coordinates in 1/SUBPIXEL pixel
        units, integers), z_ndc, 1/w, and 1.0 where the vertex is inside the culling volume,
        else 0.0.
    """
    x, y, z, cw = verts_clip.reshape(-1, 4).t()  # (V*N,) each
    band = GUARD_BAND * cw
    inside = (cw > 0) & (z.abs() <= cw) & (x.abs() <= band) & (y.abs() <= band)  # (V*N,)
    inv_w = 1.0 / torch.where(inside, cw, 1.0)  # culled vertices get harmless numbers, never 1/0
    x, y, z = (torch.where(inside, c * inv_w, 0.0) for c in (x, y, z))
    return torch.stack([torch.round((x + 1) * (w * SUBPIXEL / 2)),
                        torch.round((1 - y) * (h * SUBPIXEL / 2)),  # row 0 at the top
                        z, inv_w, inside.float()])


def rasterize_reference(verts_clip: torch.Tensor, faces: torch.Tensor,
                        image_size: int | tuple[int, int],
                        cull_backfaces: bool = False) -> Fragments:
    """What `rasterize` computes, the tinyrenderer way: for each view, for each triangle, test
    the pixels of its bounding box and keep the nearest in a z-buffer.

    For reading and as the tests' oracle, not for speed (numpy float64 over one box at a time).
    Arguments, result and errors as `rasterize`. Corners are snapped and culled by the same
    `_project_vertices`, so both cover the same pixels (for triangles under ~180 pixels, where
    `rasterize`'s float32 edge functions are exact), with depths and barycentrics equal up to
    float32 rounding.
    """
    h, w = _image_hw(image_size)
    _check_inputs(verts_clip, faces)
    n_views, n_verts = verts_clip.shape[:2]
    records = _project_vertices(verts_clip.float(), h, w).t().double().cpu().numpy()
    records = records.reshape(n_views, n_verts, 5)  # (V, N, 5): sx, sy, z_ndc, 1/w, inside
    pix_to_face = np.full((n_views, h, w), -1, dtype=np.int64)
    zbuf, bary = np.full((n_views, h, w), np.inf), np.zeros((n_views, h, w, 3))
    half = SUBPIXEL // 2
    for v in range(n_views):
        for f, corners in enumerate(faces.long().cpu().numpy()):
            sx, sy, z, inv_w, inside = records[v, corners].T  # (3,) each

            def edge(i: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
                """E_i: twice the signed area of (v_{i+1}, v_{i+2}, (x, y)); 0 on edge i."""
                a, b = (i + 1) % 3, (i + 2) % 3
                return (sx[b] - sx[a]) * (y - sy[a]) - (sy[b] - sy[a]) * (x - sx[a])

            area = edge(0, sx[0], sy[0])  # 2A; < 0 for a front face (screen y points down)
            # Culled: a corner with w <= 0 or beyond the near plane, the far plane or the guard
            # band; a zero-area triangle (it covers nothing); a back face if asked.
            if not inside.all() or area == 0 or (cull_backfaces and area > 0):
                continue
            # The pixels whose centres (j S + S/2 on the snapped grid) lie in the triangle's box.
            col0, row0 = (max(math.ceil((c.min() - half) / SUBPIXEL), 0) for c in (sx, sy))
            col1, row1 = (min(math.floor((c.max() - half) / SUBPIXEL), n - 1)
                          for c, n in ((sx, w), (sy, h)))
            x = np.arange(col0, col1 + 1) * SUBPIXEL + half  # (bw,)
            y = np.arange(row0, row1 + 1)[:, None] * SUBPIXEL + half  # (bh, 1)
            # Integer coordinates: every E_i is an exact integer, so a centre on an edge shared
            # by two triangles is on it for both, and the top-left rule gives it to one.
            e = np.stack([edge(i, x, y) for i in range(3)], axis=-1)  # (bh, bw, 3)
            sign = np.sign(area)  # orients every E_i so that the inside is positive
            owned = np.ones((len(y), len(x)), dtype=bool)  # (bh, bw)
            for i in range(3):
                # An edge owns the centres on it if it is a left edge (the oriented E_i grows to
                # the right) or a top edge (horizontal, the oriented E_i grows downward).
                grows_x, grows_y = edge(i, 1, 0) - edge(i, 0, 0), edge(i, 0, 1) - edge(i, 0, 0)
                top_left = sign * grows_x > 0 or (grows_x == 0 and sign * grows_y > 0)
                owned &= (sign * e[..., i] >= 0) if top_left else (sign * e[..., i] > 0)
            b = e / area  # (bh, bw, 3) screen barycentrics b_i = E_i / 2A
            # z_ndc is affine on the screen: z = sum_i b_i z_i. Summing the products E_i z_i
            # (exact in float64) before dividing gives a triangle, in practice, the same depth
            # whichever corner comes first, so that equal depths compare equal.
            depth = (e @ z) / area  # (bh, bw)
            box = (v, slice(row0, row1 + 1), slice(col0, col1 + 1))  # views of the buffers
            nearer = owned & (depth < zbuf[box])  # strict: on equal depths the lower face stays
            zbuf[box][nearer], pix_to_face[box][nearer] = depth[nearer], f
            b_over_w = b * inv_w  # (bh, bw, 3) perspective-correct: b_i / w_i, renormalised
            bary[box][nearer] = (b_over_w / b_over_w.sum(-1, keepdims=True))[nearer]
    zbuf = np.where(pix_to_face >= 0, zbuf, 1.0)  # the far plane where nothing is drawn
    return Fragments.from_dense(*(torch.from_numpy(t).to(verts_clip.device)
                                  for t in (pix_to_face, zbuf.astype(np.float32),
                                            bary.astype(np.float32))))


def _pixel_span(corners: torch.Tensor,
                size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First pixel and number of pixels (<= 0: none) whose centres j*S + S/2 lie between the
    smallest and largest of (3, E) snapped corner coordinates, within [0, size); and whether
    the image's far edge (size) cut the span short."""
    # Elementwise over the three corners: a reduction over a short outer dimension would not
    # vectorise.
    low = torch.minimum(torch.minimum(corners[0], corners[1]), corners[2])
    high = torch.maximum(torch.maximum(corners[0], corners[1]), corners[2])
    half = SUBPIXEL // 2
    first = torch.ceil((low - half) / SUBPIXEL).clamp(min=0)
    last = torch.floor((high - half) / SUBPIXEL)
    return first, last.clamp(max=size - 1) - first + 1, last > size - 1


def _pixel_boxes(sx: torch.Tensor, sy: torch.Tensor, h: int,
                 w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, E) rows (first column, first row, width, height) of the pixel centres in each
    triangle's bounding box, for (3, E) corner coordinates, empty boxes with width or height
    <= 0; and (E,) bool, True where the image's right or bottom edge cut the box."""
    col0, box_w, cut_x = _pixel_span(sx, w)
    row0, box_h, cut_y = _pixel_span(sy, h)
    return torch.stack([col0, row0, box_w, box_h]), cut_x | cut_y


def _doubled_area(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """(E,) twice the signed screen area of each triangle, for (3, E) snapped corners: E_0 at
    corner 0 (`rasterize_reference`'s `edge(0, sx[0], sy[0])`); < 0 for a front face."""
    return (sx[2] - sx[1]) * (sy[0] - sy[1]) - (sy[2] - sy[1]) * (sx[0] - sx[1])


def _side_code(side: torch.Tensor) -> torch.Tensor:
    """(E,) float code of the smallest grid side (1, 2, 3, 4, 6, 8, ...) holding (E,) box sides
    >= 1: 2k for 2^k, 2k - 1 for 3 * 2^(k-2), with k = ceil(log2 side)."""
    k = torch.ceil(torch.log2(side))
    return 2 * k - (side <= 0.75 * torch.exp2(k)).float()


def _grid_side(code: int) -> int:
    """The grid side that `_side_code` names."""
    return 2 ** (code // 2) if code % 2 == 0 else 3 * 2 ** ((code - 3) // 2)


@functools.lru_cache(maxsize=4)
def _side_codes(device: torch.device) -> torch.Tensor:
    """(MAX_IMAGE_SIDE + 1,) int16 `_side_code` of every box side (0 for an empty box): a
    lookup per box costs less than the logarithms. Cached per device."""
    sides = torch.arange(MAX_IMAGE_SIDE + 1, device=device).float().clamp(min=1)
    return _side_code(sides).to(torch.int16)


def _size_class(box: torch.Tensor, cut: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """(E,) int16 bucket of each box: N_SIDES code(height) + code(width), plus CUT_CLASSES if
    the image's edge cut it, or NOT_DRAWN."""
    codes = _side_codes(box.device)
    code_w, code_h = (codes.index_select(0, side.clamp(min=0).long()) for side in box[2:4])
    size_class = code_h * N_SIDES + code_w + cut * CUT_CLASSES
    return torch.where(drawn, size_class, NOT_DRAWN).to(torch.int16)


def _plan_chunks(counts: list[int], h: int,
                 w: int) -> list[tuple[int, int, int, int, bool]]:
    """Cut the size-sorted entries into chunks that `_scatter_bucket` tests on one grid each.

    counts[c] is the number of entries of size class c, which come sorted by class. A chunk is
    a range of consecutive entries and its grid (gh, gw) holds all their boxes. Neighbouring
    classes share a chunk while padding them to a common grid costs fewer candidates than
    CHUNK_COST (what a call costs beyond its candidates), never mixing boxes the image's edge
    cut with others; a chunk holds at most CANDIDATE_BUDGET candidates. Returns (first, end,
    gh, gw, cut) per chunk.
    """
    classes = []  # (first, end, gh, gw, cut) of each non-empty class, in order
    first = 0
    for size_class, count in enumerate(counts):
        if count:
            code_h, code_w = divmod(size_class % CUT_CLASSES, N_SIDES)
            classes.append((first, first + count, min(_grid_side(code_h), h),
                            min(_grid_side(code_w), w), size_class >= CUT_CLASSES))
            first += count
    merged = []
    for first, end, gh, gw, cut in classes:
        if merged and merged[-1][4] == cut:
            m_first, m_end, m_gh, m_gw, _ = merged[-1]
            both_h, both_w = max(m_gh, gh), max(m_gw, gw)
            cells = (end - m_first) * both_h * both_w
            padding = cells - (m_end - m_first) * m_gh * m_gw - (end - first) * gh * gw
            if padding < CHUNK_COST and cells <= CANDIDATE_BUDGET:
                merged[-1] = (m_first, end, both_h, both_w, cut)
                continue
        merged.append((first, end, gh, gw, cut))
    chunks = []
    for first, end, gh, gw, cut in merged:
        step = max(1, CANDIDATE_BUDGET // (gh * gw))
        chunks += [(at, min(at + step, end), gh, gw, cut) for at in range(first, end, step)]
    return chunks


def rasterize(verts_clip: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
              cull_backfaces: bool = False) -> Fragments:
    """Rasterize one triangle mesh seen by V cameras (conventions in the module docstring).

    Computes what `rasterize_reference` computes, without its Python loops (the module
    docstring's steps): each triangle's set-up (culling, box, orientation, top-left rule, depth
    and barycentric planes) runs on all (view, face) pairs at once, where the reference runs it
    per triangle; boxes sorted by size are enumerated as equal grids, a chunk of triangles at a
    time, where the reference loops over one box; the z-test is one scatter-min of (depth, row)
    keys, ties to the lower face like the reference's strict <; barycentrics come from float32
    planes, evaluated at the covered pixels only, where the reference divides float64 edge
    functions. Same pixels as the reference for triangles under ~180 pixels (integer edge
    functions); depths and barycentrics equal up to float32 rounding.

    Args:
        verts_clip: (V, N, 4) float32 clip-space vertices, e.g. `Cameras.transform(verts)`.
        faces: (F, 3) int64 vertex indices, counter-clockwise = front.
        image_size: H = W, or (H, W), at most MAX_IMAGE_SIDE.
        cull_backfaces: drop faces whose front points away from the camera.
    Returns:
        `Fragments`: the covered pixels with their faces' barycentric planes, and on demand the
        (V, H, W) pix_to_face and zbuf and the (V, H, W, 3) bary.
    Raises:
        ValueError: wrong shapes, NaN/inf vertices, out-of-range face indices, bad image size.
    """
    h, w = _image_hw(image_size)
    _check_inputs(verts_clip, faces)
    verts_clip, faces = verts_clip.float(), faces.long()
    device, (n_views, n_verts), n_faces = verts_clip.device, verts_clip.shape[:2], faces.shape[0]
    n_entries = n_views * n_faces
    if n_faces == 0:
        return _nothing_drawn(n_views, h, w, device)

    # 1. Every (view, face) pair ("entry" v * F + f): its corners on the screen, its pixel box,
    #    its signed area; culled, empty, zero-area (and, if asked, back-facing) entries dropped.
    vertex_records = _project_vertices(verts_clip, h, w)  # (5, V*N)
    offsets = torch.arange(n_views, device=device)[:, None] * n_verts  # (V, 1)
    # reshape, not view: with one face (F = 1) torch may lay the broadcast sum out
    # non-contiguously
    corner_index = (faces.t().contiguous()[:, None, :] + offsets).reshape(3, -1)  # (3, V*F)

    def corners_of(index: torch.Tensor, channel: int) -> torch.Tensor:
        """(3, E) one vertex quantity at the corners of the entries whose (3, E) rows these are."""
        return vertex_records[channel].index_select(0, index.reshape(-1)).view(3, -1)

    sx, sy, z, inside = (corners_of(corner_index, c) for c in (0, 1, 2, 4))  # (3, V*F) each
    box, cut = _pixel_boxes(sx, sy, h, w)  # (4, V*F), (V*F,)
    area = _doubled_area(sx, sy)  # (V*F,)
    drawn = (inside[0] * inside[1] * inside[2] > 0) & (box[2] > 0) & (box[3] > 0) & (area != 0)
    if cull_backfaces:
        drawn &= area < 0
    # The barycentric planes step 4 reads, in entry order: column entry + 1 of the table.
    plane_table = _barycentric_planes(sx, sy, corners_of(corner_index, 3), area)  # (9, V*F + 1)

    # 2. Sort the drawn entries by size class (a two-byte key: a fast radix sort), so that each
    #    class is a contiguous range of columns, and gather their corners again in that order.
    size_class, entry = torch.sort(_size_class(box, cut, drawn), stable=True)  # (V*F,) each
    counts = torch.bincount(size_class, minlength=NOT_DRAWN + 1).tolist()
    entry = entry[: len(entry) - counts[NOT_DRAWN]]  # (K,) drawn entries, bucket by bucket
    if len(entry) == 0:
        return _nothing_drawn(n_views, h, w, device)
    sx, sy, z, box = (t.index_select(1, entry) for t in (sx, sy, z, box))  # (3 or 4, K)
    area = area.index_select(0, entry)  # (K,)
    view = entry // n_faces  # (K,)

    # 3. Edge functions and depth planes per entry, then the z-buffer: one int64 key per pixel.
    planes, base = _setup_triangles(sx, sy, z, area, box, view, h, w)  # (3, 4, K), (K,)
    keys = torch.full((n_views * h * w + h * w,), _MISS, dtype=torch.int64, device=device)
    row = (entry + 1).int()  # (K,) row of each entry in the entry-indexed tables below; 0: none
    for first, end, gh, gw, masked in _plan_chunks(counts[:NOT_DRAWN], h, w):
        _scatter_bucket(keys, planes[..., first:end], box[2, first:end], box[3, first:end],
                        row[first:end], base[first:end], gh, gw, w, masked)

    # 4. Resolve: the covered pixels and their winners; a winner's row (entry + 1) indexes the
    #    tables of faces and barycentric planes, so that a pixel no face won (low half 0) reads
    #    row 0: no face, zeros. Barycentrics are evaluated when shading asks for them, the
    #    dense maps (pix_to_face, zbuf) when someone asks for them.
    face_of_row = torch.empty(n_entries + 1, dtype=torch.int64, device=device)  # (V*F + 1,)
    face_of_row[0] = -1
    face_of_row[1:].view(n_views, n_faces).copy_(torch.arange(n_faces, device=device))
    keys = keys[: n_views * h * w]  # (P,) without the padding
    row = _key_rows(keys)  # (P,)
    covered = row.nonzero().view(-1)  # (Q,) flat indices of the pixels some face won
    shape = (n_views, h, w)
    return Fragments(shape, covered, plane_table, face_of_row, row.index_select(0, covered),
                     n_faces, functools.partial(_unpack_keys, keys, face_of_row, shape))


def _nothing_drawn(n_views: int, h: int, w: int, device: torch.device) -> Fragments:
    """The fragments of V empty images: no face, the far plane, no covered pixel."""
    pix_to_face = torch.full((n_views, h, w), -1, dtype=torch.int64, device=device)
    zbuf = torch.ones(n_views, h, w, device=device)
    nothing = torch.zeros(0, dtype=torch.int64, device=device)
    return Fragments((n_views, h, w), nothing, torch.zeros(9, 1, device=device),
                     torch.full((1,), -1, device=device), nothing, 0, lambda: (pix_to_face, zbuf))


def _edges(sx: torch.Tensor,
           sy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge i of each triangle runs from corner i + 1 to corner i + 2 (mod 3): for (3, E) corner
    coordinates, (3, E) each of its start a_x, a_y and its vector edge_x, edge_y."""
    x2, y2 = torch.cat([sx, sx]), torch.cat([sy, sy])  # (6, E): rows i + 1, i + 2 as slices
    a_x, a_y = x2[1:4], y2[1:4]
    return a_x, a_y, x2[2:5] - a_x, y2[2:5] - a_y


def _setup_triangles(sx: torch.Tensor, sy: torch.Tensor, z: torch.Tensor, area: torch.Tensor,
                     box: torch.Tensor, view: torch.Tensor, h: int,
                     w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge functions and depth planes of K triangles on the fixed-point grid.

    Args:
        sx, sy, z: (3, K) snapped screen corners and z_ndc of each corner.
        area: (K,) twice the signed area (`_doubled_area`), never 0.
        box: (4, K) first column, first row, width, height (not empty).
        view: (K,) the view of each triangle.
    Returns:
        planes: (3, 4, K) what `_scatter_bucket` reads: the value at the box's first pixel, its
            step per column and its step per row (first index) of four affine functions
            (second index): E'_0, E'_1, E'_2 (E_i, less 1 on edges that are not top-left, so
            that E' >= 0 inside) and depth + 2.
        base: (K,) int64 index of the box's first pixel in the (V*H*W) image stack.
    """
    half = SUBPIXEL // 2
    col0, row0 = box[0], box[1]
    a_x, a_y, edge_x, edge_y = _edges(sx, sy)  # (3, K) each
    planes = sx.new_empty(3, 4, len(area))  # filled in place, row by row
    at_first, step_x, step_y = planes[:, :3]  # (3, K) each: the edge functions' rows
    # E_i(P) = edge_x_i (P_y - a_y_i) - edge_y_i (P_x - a_x_i) at pixel centre P: twice the
    # signed area of (v_{i+1}, v_{i+2}, P). At the box's first pixel the coordinate differences
    # are small, so E_i is an exact integer there.
    origin = (edge_x * (row0 * SUBPIXEL + half - a_y)
              - edge_y * (col0 * SUBPIXEL + half - a_x))  # (3, K)
    # Screen y points down, so front faces have area < 0; make E >= 0 inside either way.
    orient = torch.sign(area)  # (K,)
    torch.mul(edge_y, -SUBPIXEL * orient, out=step_x)  # dE_i / column
    torch.mul(edge_x, SUBPIXEL * orient, out=step_y)  # dE_i / row
    # Top-left rule: a centre exactly on an edge belongs to the face only if the edge is a left
    # edge (inside lies to its right: step_x > 0) or a top edge (horizontal, inside below it).
    not_top_left = ~((step_x > 0) | ((step_x == 0) & (step_y > 0)))
    origin *= orient
    torch.sub(origin, not_top_left.float(), out=at_first)  # E' = E - 1 there: E' >= 0 inside
    # Depth is affine in screen space: z = sum_i E_i z_i / 2A, evaluated like the E_i; + 2, as
    # keys need depth > 0.
    z_weights = z / area.abs()  # (3, K)
    for row, edge_row in zip(planes, (origin, step_x, step_y)):
        torch.sum(edge_row * z_weights, 0, out=row[3])
    planes[0, 3] += 2.0
    base = view * (h * w) + row0.long() * w + col0.long()  # (K,)
    return planes, base


def _barycentric_planes(sx: torch.Tensor, sy: torch.Tensor, inv_w: torch.Tensor,
                        area: torch.Tensor) -> torch.Tensor:
    """The perspective-correct barycentric planes of E triangles, as the table `_resolve` reads.

    beta_i is proportional to b_i / w_i = E_i / (2A w_i), affine in the pixel's column and row:
    a_i + g_i col + k_i row, with a_i the value at pixel (0, 0) and g_i, k_i its steps.

    Args:
        sx, sy, inv_w: (3, E) snapped screen corners and 1/w of each corner.
        area: (E,) twice the signed area; entries with 0 are never drawn (harmless numbers).
    Returns:
        (9, E + 1) float32: rows a_0..a_2, g_0..g_2, k_0..k_2; column e + 1 for triangle e and
        column 0 zeros (the row of "no face"), so a pixel indexes it by its key's row.
    """
    half = SUBPIXEL // 2
    a_x, a_y, edge_x, edge_y = _edges(sx, sy)  # (3, E) each
    scale = inv_w / torch.where(area == 0, 1.0, area)  # (3, E) 1 / (2A w_i)
    table = sx.new_empty(9, sx.shape[1] + 1)
    table[:, 0] = 0.0
    torch.mul(edge_x * (half - a_y) - edge_y * (half - a_x), scale, out=table[0:3, 1:])
    torch.mul(edge_y, scale * -SUBPIXEL, out=table[3:6, 1:])
    torch.mul(edge_x, scale * SUBPIXEL, out=table[6:9, 1:])
    return table


@functools.lru_cache(maxsize=4)
def _pixel_grid(n_views: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(2, V*H*W) float32 column and row of each pixel of V views, in pixel order.

    Cached: every render of this shape reads it (`Fragments.covered_xy`), and computing it per
    call would cost two integer divisions per pixel (which do not vectorise) each time. A few
    MB (9 views of 224 x 224: 3.6 MB).
    """
    pixel = torch.arange(h * w, device=device)
    return torch.stack([pixel % w, pixel // w]).float().repeat(1, n_views)


def _key_rows(keys: torch.Tensor) -> torch.Tensor:
    """(P,) int32 view of the z-buffer keys' low halves: the row (entry + 1) of each pixel's
    winner, 0 where no face covers it. Read in place, through a 32-bit view of the keys."""
    return keys.view(torch.int32)[_LOW_HALF::2]


def _unpack_keys(keys: torch.Tensor, face_of_row: torch.Tensor,
                 shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense maps from the z-buffer keys (P = V*H*W,): pix_to_face and zbuf (V, H, W);
    face_of_row (V*F + 1,) holds each entry's face at its row, -1 at row 0 (no face)."""
    pix_to_face = face_of_row.index_select(0, _key_rows(keys))
    # The high halves are the float bits of depth + 2: in [1, 3] where a face is drawn and
    # _MISS_DEPTH elsewhere; clamped to 3, it is the far plane's 1 there.
    zbuf = keys.view(torch.float32)[1 - _LOW_HALF::2].clamp(max=3.0).sub_(2.0)
    return pix_to_face.view(shape), zbuf.view(shape)


@functools.lru_cache(maxsize=64)
def _grid_offsets(gh: int, gw: int, w: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (gh, gw) grid of candidate pixels: its rows (gh, 1) and columns (gw, 1) as float32,
    and each cell's offset from the grid's first pixel in an image W wide, (gh, gw, 1) int64.
    Cached: a render calls `_scatter_bucket` once per bucket with the same few grids."""
    dy = torch.arange(gh, device=device, dtype=torch.float32)[:, None]
    dx = torch.arange(gw, device=device, dtype=torch.float32)[:, None]
    offset = (torch.arange(gh, device=device)[:, None, None] * w
              + torch.arange(gw, device=device)[None, :, None])
    return dy, dx, offset


def _scatter_bucket(keys: torch.Tensor, planes: torch.Tensor, box_w: torch.Tensor,
                    box_h: torch.Tensor, row: torch.Tensor, base: torch.Tensor, gh: int, gw: int,
                    w: int, cut: bool) -> None:
    """Test a (gh, gw) grid of candidate pixels for each of Fb faces and scatter-min their keys.

    planes (3, 4, Fb): as from `_setup_triangles`; box_w, box_h, base (Fb,); row (Fb,) int32.
    All four affine functions are evaluated at once: each is a row term (gh, 1, Fb) plus a
    column term (1, gw, Fb), one broadcast add for the whole (4, gh, gw, Fb) block.

    A grid cell past a face's box lies past the triangle, so its E' reject it, except where the
    image's edge cut the box (`cut`): the triangle goes on there, and the cells, which wrap into
    the next row or view, get -1e30 in E'_0.
    """
    dy, dx, offset = _grid_offsets(gh, gw, w, keys.device)
    at_first, step_x, step_y = planes[:, :, None, :]  # (4, 1, Fb) each
    # Faces are the last (contiguous) dimension: broadcasting over a long inner dimension
    # vectorises, while a (Fb, 2, 2) layout would run elementwise kernels on rows of 2.
    rows = torch.addcmul(at_first, step_y, dy)  # (4, gh, Fb)
    cols = step_x * dx  # (4, gw, Fb)
    if cut:
        rows[0].masked_fill_(dy >= box_h, -1e30)  # outside the box: rejected
        cols[0].masked_fill_(dx >= box_w, -1e30)
    values = rows[:, :, None, :] + cols[:, None, :, :]  # (4, gh, gw, Fb)
    # E'_i are whole numbers (integer corners and steps), so a candidate is inside when the
    # smallest is >= 0 and outside when it is <= -1; 4 |E'_min| added to the depth of an outside
    # one lifts it to >= _MISS_DEPTH + 1, so it never beats an empty pixel's key, with
    # arithmetic only (a comparison and a select would each cost a pass over a boolean array).
    outside_by = values[:3].amin(0).clamp_(max=0)  # (gh, gw, Fb) <= 0
    # The key: depth bits in the high half, row (entry + 1) in the low half, written in place.
    # Positive floats order like their bit patterns; a rejected candidate's key is never below
    # the empty pixel's _MISS (row 0).
    key = torch.empty(gh, gw, len(row), dtype=torch.int64, device=keys.device)
    torch.sub(values[3], outside_by, alpha=_MISS_DEPTH,
              out=key.view(torch.float32)[..., 1 - _LOW_HALF::2])
    key.view(torch.int32)[..., _LOW_HALF::2] = row
    # Cells past the box may wrap into the next row; their key never wins, and `keys` has an
    # image's worth of padding so indices stay in range.
    keys.scatter_reduce_(0, (base + offset).view(-1), key.view(-1), reduce="amin")
