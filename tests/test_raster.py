"""facet.raster: the reference rasterizer checked by hand, then as the fast one's oracle;
analytic cases and hostile input for both."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import facet.raster as raster
from facet.camera import Cameras, look_at, orthographic, parse_views, perspective, view_cameras
from facet.mesh import Mesh
from facet.raster import rasterize, rasterize_reference
from facet.render import interpolate, render_batch, render_views

S = raster.SUBPIXEL
RASTERIZERS = pytest.mark.parametrize("rasterizer", [rasterize, rasterize_reference],
                                     ids=["fast", "reference"])


def pixel_to_clip(points_px: list[tuple[float, float, float]], h: int, w: int) -> torch.Tensor:
    """Screen-pixel positions (x right, y down, z_ndc) -> (1, N, 4) clip vertices with w = 1."""
    p = torch.tensor(points_px, dtype=torch.float32)
    ndc_x, ndc_y = 2 * p[:, 0] / w - 1, 1 - 2 * p[:, 1] / h
    return torch.stack([ndc_x, ndc_y, p[:, 2], torch.ones(len(p))], 1)[None]  # (1, N, 4)


def test_reference_by_hand():
    # A front-facing right triangle on an 8 x 8 image, corners at pixel positions (1, 1) top
    # left, (1, 7) bottom left, (7, 1) top right, with z_ndc = 0, 0.6, -0.6 and w = 1, 2, 4.
    # At the centre (x, y) = (j + 1/2, i + 1/2) of pixel (row i, column j) the screen
    # barycentrics are b1 = (y - 1) / 6, b2 = (x - 1) / 6, b0 = 1 - b1 - b2.
    verts = pixel_to_clip([(1, 1, 0.0), (1, 7, 0.6), (7, 1, -0.6)], 8, 8)
    frags = rasterize_reference(verts * torch.tensor([1.0, 2.0, 4.0])[:, None],
                                torch.tensor([[0, 1, 2]]), 8)
    assert frags.pix_to_face.dtype == torch.int64 and frags.bary.shape == (1, 8, 8, 3)
    # Inside: i, j >= 1 and i + j <= 6 (5 + 4 + 3 + 2 + 1 pixels); the centres with i + j = 7
    # lie on the hypotenuse, a bottom-right edge, which does not own them.
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    inside = (i >= 1) & (j >= 1) & (i + j <= 6)
    assert torch.equal(frags.pix_to_face[0], torch.where(inside, 0, -1))
    assert (frags.zbuf[0][~inside] == 1).all() and (frags.bary[0][~inside] == 0).all()
    # Pixel (2, 1), centre (1.5, 2.5): b = (2/3, 1/4, 1/12), so z = 0.15 - 0.05 = 0.1, and
    # b_i / w_i = (2/3, 1/8, 1/48) = (32, 6, 1) / 48 -> perspective-correct (32, 6, 1) / 39.
    # Pixel (5, 1), centre (1.5, 5.5): b = (1/6, 3/4, 1/12), z = 0.45 - 0.05 = 0.4, and
    # b_i / w_i = (1/6, 3/8, 1/48) = (8, 18, 1) / 48 -> (8, 18, 1) / 27.
    assert frags.zbuf[0, 2, 1].item() == pytest.approx(0.1, abs=1e-6)
    assert frags.zbuf[0, 5, 1].item() == pytest.approx(0.4, abs=1e-6)
    torch.testing.assert_close(frags.bary[0, 2, 1], torch.tensor([32.0, 6.0, 1.0]) / 39)
    torch.testing.assert_close(frags.bary[0, 5, 1], torch.tensor([8.0, 18.0, 1.0]) / 27)


def _random_clip_mesh(seed: int, n_views: int = 2, n_verts: int = 24, n_faces: int = 20):
    """Random triangles in (V, N, 4) clip space with w in [0.5, 2], some crossing the border."""
    g = torch.Generator().manual_seed(seed)
    cw = 0.5 + 1.5 * torch.rand(n_views, n_verts, 1, generator=g)
    xyz = torch.cat([2.4 * torch.rand(n_views, n_verts, 2, generator=g) - 1.2,
                     1.8 * torch.rand(n_views, n_verts, 1, generator=g) - 0.9], -1)
    return torch.cat([xyz * cw, cw], -1), torch.randint(0, n_verts, (n_faces, 3), generator=g)


def _assert_agree(verts_clip: torch.Tensor, faces: torch.Tensor, size,
                  cull: bool) -> raster.Fragments:
    """The fast rasterizer against the reference: same coverage, winners, depths, barycentrics."""
    fast = rasterize(verts_clip, faces, size, cull)
    ref = rasterize_reference(verts_clip, faces, size, cull)
    pix, ref_pix = fast.pix_to_face.numpy(), ref.pix_to_face.numpy()
    assert ((pix >= 0) == (ref_pix >= 0)).all()  # integer edge functions: the same pixels
    # Where two faces lie at (almost) the same depth either may win: the fast path's winner
    # must cover the pixel, at the nearest depth.
    for v, i, j in np.argwhere(pix != ref_pix):
        alone = rasterize_reference(verts_clip[v: v + 1], faces[pix[v, i, j]][None], size)
        assert alone.pix_to_face[0, i, j] == 0
        assert abs(alone.zbuf[0, i, j] - ref.zbuf[v, i, j]) < 1e-5
    np.testing.assert_allclose(fast.zbuf.numpy(), ref.zbuf.numpy(), atol=1e-5)
    same = pix == ref_pix  # background included: zbuf 1 and bary 0 in both
    np.testing.assert_allclose(fast.bary.numpy()[same], ref.bary.numpy()[same], atol=1e-4)
    assert (fast.zbuf.numpy()[pix < 0] == 1).all() and (fast.bary.numpy()[pix < 0] == 0).all()
    covered = fast.bary.numpy()[pix >= 0]  # (Q, 3): a convex combination at every drawn pixel
    assert (covered >= 0).all() and np.allclose(covered.sum(-1), 1, rtol=0, atol=1e-6)
    assert fast.pix_to_face.dtype == ref.pix_to_face.dtype == torch.int64
    # The covered pixels as a list (what shading reads): the image's, in ascending order, with
    # the reference's barycentrics where both chose the same face.
    assert torch.equal(fast.covered, torch.from_numpy(np.flatnonzero(pix >= 0)))
    agree = same.reshape(-1)[fast.covered.numpy()]  # (Q,)
    np.testing.assert_allclose(fast.covered_bary.t().numpy()[agree],
                               ref.bary.numpy().reshape(-1, 3)[fast.covered.numpy()][agree],
                               atol=1e-4)
    return ref


@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_reference_on_random_meshes(seed, cull):
    ref = _assert_agree(*_random_clip_mesh(seed), (12, 15), cull)
    assert (ref.pix_to_face >= 0).sum() > 50  # the test looks at a well-covered image


def test_a_single_triangle_in_several_views_agrees_with_reference():
    """F = 1 is the shape where a broadcast sum is not laid out contiguously (it once raised)."""
    verts = torch.tensor([[-0.3, -0.3, 0.0], [0.3, -0.3, 0.0], [0.0, 0.3, 0.0]])
    cameras = view_cameras([(-20, 0), (0, 0), (20, 0)])
    ref = _assert_agree(cameras.transform(verts), torch.tensor([[0, 1, 2]]), (16, 16), cull=False)
    assert ((ref.pix_to_face >= 0).sum(dim=(1, 2)) > 20).all()


def test_agrees_with_reference_on_a_closed_mesh():
    # Many small triangles sharing edges, boxes of several size classes, three views.
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    verts, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    cameras = view_cameras([(-20, 0), (0, 0), (20, 10)])
    ref = _assert_agree(cameras.transform(verts), faces, (40, 48), cull=False)
    assert (ref.pix_to_face >= 0).sum() > 1500


def test_small_bucket_budget_gives_the_same_result(monkeypatch):
    g = torch.Generator().manual_seed(3)
    verts_clip = torch.cat([torch.rand(1, 60, 3, generator=g) * 2 - 1, torch.ones(1, 60, 1)], -1)
    faces = torch.randint(0, 60, (80, 3), generator=g)
    full = rasterize(verts_clip, faces, 32)
    monkeypatch.setattr(raster, "CANDIDATE_BUDGET", 64)  # many chunks per bucket
    chunked = rasterize(verts_clip, faces, 32)
    assert torch.equal(full.pix_to_face, chunked.pix_to_face)
    assert torch.equal(full.bary, chunked.bary)


@pytest.mark.parametrize("chunk_cost", [0, 1 << 30], ids=["a-call-per-class", "one-grid"])
def test_how_size_classes_share_chunks_does_not_change_the_result(monkeypatch, chunk_cost):
    # Boxes of many sizes (a triangle soup over a 40 px image) and a budget that splits classes.
    g = torch.Generator().manual_seed(4)
    verts_clip = torch.cat([torch.rand(2, 90, 3, generator=g) * 2 - 1, torch.ones(2, 90, 1)], -1)
    faces = torch.randint(0, 90, (150, 3), generator=g)
    default = rasterize(verts_clip, faces, 40)
    monkeypatch.setattr(raster, "CHUNK_COST", chunk_cost)
    monkeypatch.setattr(raster, "CANDIDATE_BUDGET", 4096)
    other = rasterize(verts_clip, faces, 40)
    assert torch.equal(default.pix_to_face, other.pix_to_face)
    assert torch.equal(default.zbuf, other.zbuf) and torch.equal(default.bary, other.bary)


def test_grid_sides_are_the_smallest_that_hold_the_box():
    sides = torch.arange(1, raster.MAX_IMAGE_SIDE + 1).float()
    codes = raster._side_code(sides).long().tolist()
    grid = torch.tensor([raster._grid_side(c) for c in codes])
    below = torch.tensor([raster._grid_side(c - 1) if c else 0 for c in codes])
    assert (grid >= sides).all() and (below < sides).all()  # holds the box; the next smaller not
    assert (grid <= 1.5 * sides).all() and max(codes) < raster.N_SIDES


def test_chunk_plan_covers_every_entry_once_on_a_grid_that_holds_it(monkeypatch):
    monkeypatch.setattr(raster, "CANDIDATE_BUDGET", 256)
    counts = [0] * raster.NOT_DRAWN
    sizes = {(1, 1): 500, (1, 2): 3, (2, 2): 40, (3, 4): 1, (8, 12): 9, (64, 64): 2}
    code = {side: raster._side_code(torch.tensor(float(side))).long().item()
            for side in (1, 2, 3, 4, 8, 12, 64)}
    for (gh, gw), count in sizes.items():
        counts[code[gh] * raster.N_SIDES + code[gw]] = count
    counts[raster.CUT_CLASSES + code[2] * raster.N_SIDES + code[2]] = 7  # cut by the edge
    chunks = raster._plan_chunks(counts, h=48, w=48)
    assert [c[0] for c in chunks] == [0] + [c[1] for c in chunks[:-1]]  # contiguous, in order
    assert chunks[-1][1] == sum(sizes.values()) + 7
    first = 0
    for (gh, gw), count in sizes.items():  # each class's entries lie in chunks whose grid holds
        for start, end, chunk_h, chunk_w, cut in chunks:  # its boxes (capped at the image)
            if start < first + count and end > first:
                assert chunk_h >= min(gh, 48) and chunk_w >= min(gw, 48) and not cut
        first += count
    assert [c[4] for c in chunks if c[0] >= first] == [True]  # the cut boxes: masked, alone
    # within budget, unless a single entry's grid exceeds it
    assert all((end - start) * gh * gw <= 256 or end - start == 1
               for start, end, gh, gw, _ in chunks)


@RASTERIZERS
def test_top_left_rule_splits_a_shared_diagonal(rasterizer):
    # Square [2, 6]^2 in pixels split along the diagonal through pixel centres (i+.5, i+.5).
    verts = pixel_to_clip([(2, 2, 0), (6, 2, 0), (6, 6, 0), (2, 6, 0)], 8, 8)
    halves = [rasterizer(verts, torch.tensor([tri]), 8).pix_to_face[0] >= 0
              for tri in ([0, 2, 1], [0, 3, 2])]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert not (halves[0] & halves[1]).any()  # no pixel drawn twice
    assert torch.equal(halves[0] | halves[1], expected)  # no hole, nothing outside
    assert halves[0].sum() + halves[1].sum() == 16


@RASTERIZERS
def test_jittered_grid_is_watertight(rasterizer):
    g = torch.Generator().manual_seed(0)
    n = 5  # 5 x 5 vertices over the whole screen, inner ones jittered
    u = torch.linspace(-1, 1, n)
    xy = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    inner = (xy.abs() < 1).all(-1, keepdim=True)
    xy = xy + inner * 0.2 * (torch.rand(xy.shape, generator=g) - 0.5)
    verts = torch.cat([xy, torch.zeros(n * n, 1), torch.ones(n * n, 1)], -1)[None]
    a = (torch.arange(n - 1)[:, None] * n + torch.arange(n - 1)).reshape(-1)
    faces = torch.cat([torch.stack([a, a + 1, a + n + 1], 1),
                       torch.stack([a, a + n + 1, a + n], 1)])
    count = sum((rasterizer(verts, faces[i: i + 1], 21).pix_to_face >= 0).int()
                for i in range(len(faces)))  # how many faces cover each pixel
    assert (count == 1).all()


@RASTERIZERS
def test_nearer_triangle_wins_whatever_the_order(rasterizer):
    near = [(1, 1, -0.5), (7, 1, -0.5), (1, 7, -0.5)]
    far = [(1, 1, 0.5), (7, 1, 0.5), (1, 7, 0.5)]
    for first, second, near_id in ((near, far, 0), (far, near, 1)):
        faces = torch.tensor([[0, 2, 1], [3, 5, 4]])
        frags = rasterizer(pixel_to_clip(first + second, 8, 8), faces, 8)
        covered = frags.pix_to_face >= 0
        assert covered.sum() > 10 and (frags.pix_to_face[covered] == near_id).all()
        assert torch.allclose(frags.zbuf[covered], torch.tensor(-0.5))


@RASTERIZERS
def test_barycentrics_reproduce_pixel_positions(rasterizer):
    cameras = Cameras(look_at(torch.tensor([[0.3, 0.2, 3.0]])), perspective(40.0)[None])
    verts = torch.tensor([[-1.0, -0.8, 0.2], [1.1, -0.5, -0.6], [0.1, 1.0, 0.4]])
    frags = rasterizer(cameras.transform(verts), torch.tensor([[0, 1, 2]]), 32)
    covered = frags.pix_to_face[0] >= 0
    assert covered.sum() > 100
    world = interpolate(frags, verts[None])  # (1, H, W, 3): perspective-correct positions
    world_to_clip = (cameras.projection @ cameras.view)[0]
    clip = torch.cat([world[0], torch.ones(32, 32, 1)], -1) @ world_to_clip.T  # (H, W, 4)
    screen_x = (clip[..., 0] / clip[..., 3] + 1) * 16
    screen_y = (1 - clip[..., 1] / clip[..., 3]) * 16
    cols, rows = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="xy")
    assert (screen_x - cols)[covered].abs().max() < 1 / S  # within the snapping grid
    assert (screen_y - rows)[covered].abs().max() < 1 / S


def test_sphere_silhouette_matches_the_analytic_disc():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    verts, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    distance, fov, size = 3.0, 30.0, 128
    cameras = Cameras(look_at(torch.tensor([[0.0, 0.0, distance]])), perspective(fov)[None])
    frags = rasterize(cameras.transform(verts), faces, size)
    # The visible cone touches the sphere at angle asin(r/d): the disc's NDC radius is
    # tan(asin(r/d)) / tan(fov/2).
    radius_px = math.tan(math.asin(0.5 / distance)) / math.tan(math.radians(fov / 2)) * size / 2
    area = (frags.pix_to_face >= 0).sum().item()
    assert abs(area / (math.pi * radius_px ** 2) - 1) < 0.01


@RASTERIZERS
def test_perspective_correct_interpolation_on_a_slanted_quad(rasterizer):
    # Camera at the origin looking down -z; a quad leaning back from z = -2 (bottom) to -4 (top).
    size, fov = 48, 60.0
    quad = torch.tensor([[-1.0, -1.0, -2.0], [1.0, -1.0, -2.0],
                         [1.0, 1.0, -4.0], [-1.0, 1.0, -4.0]])
    t = torch.tensor([0.0, 0.0, 1.0, 1.0])  # 0 at the bottom edge, 1 at the top
    cameras = Cameras(torch.eye(4)[None], perspective(fov, near=0.5, far=10.0)[None])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterizer(cameras.transform(quad), faces, size)
    got = interpolate(frags, t[faces][..., None])[0, ..., 0]
    # Closed form: the ray through the pixel centre meets the plane z = -3 - y (through the quad).
    f = 1 / math.tan(math.radians(fov / 2))
    rows = (torch.arange(size) + 0.5)[:, None].expand(size, size)  # pixel centres, row 0 on top
    ray_y = (1 - 2 * rows / size) / f  # the ray's direction is (ray_x, ray_y, -1)
    depth = 3 / (1 - ray_y)  # -depth = -3 - depth * ray_y
    expected = (depth * ray_y + 1) / 2  # y from -1 to 1 -> t from 0 to 1
    covered = frags.pix_to_face[0] >= 0
    assert covered.sum() > 300
    assert (got - expected)[covered].abs().max() < 2e-3
    # The test can tell: screen-space (affine) interpolation is measurably wrong on this quad.
    affine_bary = _screen_bary(frags, quad, cameras, faces)
    affine = raster.Fragments.from_dense(frags.pix_to_face, frags.zbuf, affine_bary)
    screen = interpolate(affine, t[faces][..., None])[0, ..., 0]
    assert (screen - expected)[covered].abs().max() > 0.05


def _screen_bary(frags, verts, cameras, faces):
    """Affine (not perspective-correct) barycentrics: undo the 1/w weighting of frags.bary."""
    w = cameras.transform(verts)[0, :, 3][faces]  # (F, 3)
    corner_w = w[frags.pix_to_face[0].clamp(min=0)]  # (H, W, 3)
    b = frags.bary[0] * corner_w
    return (b / b.sum(-1, keepdim=True).clamp(min=1e-12))[None]


@RASTERIZERS
def test_degenerate_and_hostile_input(rasterizer):
    tri = torch.tensor([[0, 1, 2]])
    zero_area = pixel_to_clip([(1, 1, 0), (3, 3, 0), (5, 5, 0)], 8, 8)  # collinear
    assert (rasterizer(zero_area, tri, 8).pix_to_face < 0).all()
    behind = torch.tensor([[[0.0, 0.0, 0.5, -1.0], [1.0, 0.0, 0.5, -1.0], [0.0, 1.0, 0.5, -1.0]]])
    assert (rasterizer(behind, tri, 8).pix_to_face < 0).all()
    crossing = torch.tensor([[[-1.0, -1.0, -2.0, 1e-3], [1.0, -1.0, 0.5, 1.0],
                              [0.0, 1.0, 0.5, 1.0]]])  # first corner before the near plane
    frags = rasterizer(crossing, tri, 8)
    assert (frags.pix_to_face < 0).all()
    assert all(torch.isfinite(t).all() for t in (frags.zbuf, frags.bary))
    with pytest.raises(ValueError, match="NaN"):
        rasterizer(torch.full((1, 3, 4), float("nan")), tri, 8)
    with pytest.raises(ValueError, match="1 clip-space vertices"):  # one infinite among finite
        rasterizer(torch.cat([zero_area, torch.full((1, 1, 4), float("inf"))], 1), tri, 8)
    far = torch.full((1, 3, 4), 3e38)  # finite, though their sum overflows: culled, no error
    assert (rasterizer(far, tri, 8).pix_to_face < 0).all()
    with pytest.raises(ValueError, match="out of range"):
        rasterizer(zero_area, torch.tensor([[0, 1, 7]]), 8)
    empty = rasterizer(torch.zeros(2, 0, 4), torch.zeros(0, 3, dtype=torch.long), (3, 5))
    assert empty.pix_to_face.shape == (2, 3, 5) and (empty.pix_to_face == -1).all()
    big = torch.tensor([[[-3.0, -3.0, 0.0, 1.0], [3.0, -3.0, 0.0, 1.0], [0.0, 3.0, 0.0, 1.0]]])
    one = rasterizer(big, tri, 1)
    assert one.pix_to_face.tolist() == [[[0]]] and torch.allclose(one.bary.sum(-1), torch.ones(1))
    for bad_size in (0, (4, raster.MAX_IMAGE_SIDE + 1)):
        with pytest.raises(ValueError, match="image_size"):
            rasterizer(big, tri, bad_size)


@RASTERIZERS
def test_equal_depths_go_to_the_lower_face_id(rasterizer):
    # Two identical triangles in each of two views: the same depth everywhere, so the tie rule
    # decides (the packed (depth, entry) key; the reference's strict <), and it must pick face 0
    # in every view, whatever the order.
    verts = pixel_to_clip([(1, 1, 0.2), (1, 7, 0.2), (7, 1, 0.2)], 8, 8).expand(2, -1, -1)
    for faces in ([[0, 1, 2], [0, 1, 2]], [[1, 2, 0], [2, 0, 1]]):
        pix = rasterizer(verts, torch.tensor(faces), 8).pix_to_face
        assert (pix >= 0).sum() > 0 and set(pix[pix >= 0].tolist()) == {0}


@RASTERIZERS
def test_backface_culling_is_optional(rasterizer):
    # Top-left, bottom-left, top-right in pixels: counter-clockwise with y up = a front face.
    verts = pixel_to_clip([(1, 1, 0), (1, 7, 0), (7, 1, 0)], 8, 8)
    front, back = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    # 15 = 5 + 4 + ... + 1: centres on the hypotenuse (a bottom-right edge) are left out.
    assert (rasterizer(verts, front, 8, cull_backfaces=True).pix_to_face == 0).sum() == 15
    assert (rasterizer(verts, back, 8, cull_backfaces=True).pix_to_face < 0).all()
    assert (rasterizer(verts, back, 8).pix_to_face == 0).sum() == 15  # two-sided by default


def test_cameras_follow_the_conventions():
    assert parse_views("-20,0; 0,0;20,5") == ((-20.0, 0.0), (0.0, 0.0), (20.0, 5.0))
    assert parse_views("-20;20") == ((-20.0, 0.0), (20.0, 0.0))
    with pytest.raises(ValueError, match="yaw,pitch"):
        parse_views("1,2,3")
    cameras = view_cameras([(0, 0), (90, 0), (0, 30)], distance=2.5)
    eyes = -torch.einsum("vji,vj->vi", cameras.view[:, :3, :3], cameras.view[:, :3, 3])
    assert torch.allclose(eyes[1], torch.tensor([2.5, 0, 0]), atol=1e-5)  # yaw > 0: toward +x
    assert eyes[2, 1] > 0  # pitch > 0: above
    clip = cameras.transform(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.3, 0.0, 0.0]]))
    ndc = clip[..., :3] / clip[..., 3:]
    assert torch.allclose(ndc[:, 0, :2], torch.zeros(3, 2), atol=1e-6)  # origin in the centre
    assert ndc[0, 1, 1] > 0 and ndc[0, 2, 0] > 0  # frontal: +y up, +x right
    ortho = orthographic(1.0)
    corner = ortho @ torch.tensor([1.0, 1.0, -0.5, 1.0])  # top right, on the near plane
    assert torch.allclose(corner, torch.tensor([1.0, 1.0, -1.0, 1.0]))


def _hemisphere() -> Mesh:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    keep = sphere.vertices[sphere.faces].mean(1)[:, 2] > 0  # the half looking down +z
    verts = sphere.vertices.astype(np.float32)
    return Mesh(verts, sphere.faces[keep], colors=(verts + 0.5).clip(0, 1), uv=verts[:, :2] + 0.5,
                texture=np.full((4, 4, 3), 200, np.uint8))


@pytest.mark.parametrize("background", [(0.0, 0.5, 1.0), (0.25, 0.25, 0.25)],
                         ids=["colour", "grey"])
@pytest.mark.parametrize("mode", ["shaded", "texture", "colors", "depth", "normals"])
def test_render_views_modes(mode, background):
    images = render_views(_hemisphere(), views=((-20, 0), (0, 0), (20, 0)), image_size=32,
                          mode=mode, background=background)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
    assert torch.equal(images[1, :, 0, 0], torch.tensor(background))  # corner: background
    assert not torch.equal(images[1, :, 16, 16], torch.tensor(background))  # centre: face
    if mode in ("shaded", "depth"):  # grey pictures, whatever the background
        face = (images[:, 0] != background[0]) | (images[:, 2] != background[2])  # (V, H, W)
        assert torch.equal(images[:, 0][face], images[:, 1][face])
        assert torch.equal(images[:, 0][face], images[:, 2][face])
    if mode == "texture":  # a uniform texture comes back as itself
        assert torch.allclose(images[1, :, 16, 16], torch.tensor(200 / 255))
    if mode == "shaded":  # the headlight makes the frontal centre the brightest spot
        row, col = divmod(int(images[1, 0].argmax()), 32)
        assert 14 <= row < 18 and 14 <= col < 18


def test_render_batch_stacks_meshes():
    batch = render_batch([_hemisphere(), _hemisphere()], views=[(0, 0)], image_size=16)
    assert batch.shape == (2, 1, 3, 16, 16) and torch.equal(batch[0], batch[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cpu = render_views(_hemisphere(), image_size=48)
    cuda = render_views(_hemisphere(), image_size=48, device="cuda").cpu()
    assert torch.allclose(cuda, cpu, atol=1e-4)


def test_interpolate_shared_and_per_view_attributes_agree():
    g = torch.Generator().manual_seed(4)
    verts_clip = torch.cat([torch.rand(2, 30, 3, generator=g) * 2 - 1, torch.ones(2, 30, 1)], -1)
    faces = torch.randint(0, 30, (40, 3), generator=g)
    frags = rasterize(verts_clip, faces, 16)
    attrs = torch.rand(40, 3, 5, generator=g)
    shared = interpolate(frags, attrs)
    assert torch.allclose(shared, interpolate(frags, attrs.expand(2, -1, -1, -1)))
    covered = frags.pix_to_face >= 0
    manual = (frags.bary[..., None] * attrs[frags.pix_to_face.clamp(min=0)]).sum(-2)
    assert torch.allclose(shared[covered], manual[covered]) and (shared[~covered] == 0).all()
    with pytest.raises(ValueError, match="face_attrs"):
        interpolate(frags, torch.rand(40, 4, 5))


@pytest.mark.parametrize("per_view", [False, True], ids=["shared", "per-view"])
def test_homogeneous_interpolation_by_entry_planes_matches_barycentrics(per_view):
    # 20 faces in 2 views over 48 x 48 pixels: fewer entries than covered pixels, so the
    # homogeneous path combines each entry's corners into planes; directions must agree with
    # the barycentric interpolation (which values use).
    import facet.render as render

    g = torch.Generator().manual_seed(5)
    verts_clip = torch.cat([torch.rand(2, 30, 3, generator=g) * 2 - 1, torch.ones(2, 30, 1)], -1)
    verts_clip[..., 3] += torch.rand(2, 30, generator=g)  # perspective: w from 1 to 2
    verts_clip[..., :3] *= verts_clip[..., 3:]
    faces = torch.randint(0, 30, (20, 3), generator=g)
    frags = rasterize(verts_clip, faces, 48)
    assert 2 * 20 <= len(frags.covered)  # the entry-plane path applies
    attrs = torch.rand(20, 3, 3, generator=g) - 0.5
    attrs = attrs.expand(2, -1, -1, -1) * torch.tensor([1.0, -2.0])[:, None, None, None] \
        if per_view else attrs
    planes = render.interpolate_covered(frags, attrs, homogeneous=True)  # (3, Q), scaled
    exact = render._interpolate_by_barycentrics(frags, render._corner_rows(attrs))  # (3, Q)
    # the same direction at every pixel, scaled by a positive number
    scale = (planes * exact).sum(0) / (exact * exact).sum(0)
    assert (scale > 0).all()
    torch.testing.assert_close(planes / scale, exact, atol=1e-5, rtol=1e-4)


def test_fragments_from_dense_hand_back_their_barycentrics():
    pix_to_face = torch.tensor([[[-1, 0], [1, -1]]])
    bary = torch.tensor([[[[0, 0, 0], [0.2, 0.3, 0.5]], [[0.6, 0.4, 0.0], [0, 0, 0]]]])
    frags = raster.Fragments.from_dense(pix_to_face, torch.zeros(1, 2, 2), bary)
    assert frags.covered.tolist() == [1, 2]
    torch.testing.assert_close(frags.bary, bary)


def test_triangles_cut_by_the_image_edge_do_not_wrap_into_the_next_row_or_view():
    # Two views; in the first, triangles run past the right and bottom edges, where their grid
    # cells would land in the next row or the next view without the box masks.
    verts = pixel_to_clip([(5, 1, 0), (13, 3, 0), (6, 7, 0), (1, 6, 0.2), (7, 12, 0.2),
                           (2, 12, 0.2)], 8, 8)
    verts = torch.cat([verts, pixel_to_clip([(0, 0, 0)] * 6, 8, 8)])  # view 2: nothing drawn
    faces = torch.tensor([[0, 2, 1], [3, 5, 4]])
    _assert_agree(verts, faces, (8, 8), cull=False)
    frags = rasterize(verts, faces, 8)
    assert (frags.pix_to_face[1] == -1).all() and (frags.pix_to_face[0, :, 7] == 0).any()
