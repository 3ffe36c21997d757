"""facet.raster: a naive reference rasterizer as the oracle, analytic cases, hostile input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import facet.raster as raster
from facet.camera import Cameras, look_at, orthographic, parse_views, perspective, view_cameras
from facet.mesh import Mesh
from facet.raster import interpolate, rasterize
from facet.render import render_batch, render_views

S = raster.SUBPIXEL


def reference_rasterize(verts_clip: np.ndarray, faces: np.ndarray, h: int, w: int):
    """Tinyrenderer style: for each view, each face, each pixel -- edge functions, z-test.

    Same rules as facet.raster (1/16-pixel snapping, top-left, culling), in float64. Also
    returns the second-best depth per pixel, to excuse pixels where two faces tie.
    """
    n_views = len(verts_clip)
    pix = np.full((n_views, h, w), -1)
    zbuf, second = np.full((n_views, h, w), np.inf), np.full((n_views, h, w), np.inf)
    bary = np.zeros((n_views, h, w, 3))
    for v in range(n_views):
        for f, corners in enumerate(faces):
            x, y, z, cw = verts_clip[v, corners].astype(np.float64).T  # each (3,)
            if not ((cw > 0) & (abs(z) <= cw) & (abs(x) <= 64 * cw) & (abs(y) <= 64 * cw)).all():
                continue
            sx = np.round((x / cw + 1) * w * S / 2)
            sy = np.round((1 - y / cw) * h * S / 2)
            for i in range(h):
                for j in range(w):
                    px, py = j * S + S / 2, i * S + S / 2
                    edges, gradients = [], []  # E_k(P) and its gradient (dE/dx, dE/dy)
                    for k in range(3):
                        a, b = (k + 1) % 3, (k + 2) % 3  # edge k runs from v_a to v_b
                        dx, dy = sx[b] - sx[a], sy[b] - sy[a]
                        edges.append(dx * (py - sy[a]) - dy * (px - sx[a]))
                        gradients.append((-dy, dx))
                    area = sum(edges)
                    if area == 0:
                        continue
                    sign = np.sign(area)  # orient so that the inside is positive

                    def owns(e, gx, gy):  # inside, or on a top/left edge
                        gx, gy = gx * sign, gy * sign
                        return e * sign > 0 or (e == 0 and (gx > 0 or (gx == 0 and gy > 0)))

                    if not all(owns(e, *g) for e, g in zip(edges, gradients)):
                        continue
                    b = np.array(edges) / area
                    depth = float(b @ (z / cw))
                    if depth < zbuf[v, i, j]:
                        second[v, i, j] = zbuf[v, i, j]
                        pix[v, i, j], zbuf[v, i, j] = f, depth
                        bary[v, i, j] = b / cw / (b / cw).sum()
                    else:
                        second[v, i, j] = min(second[v, i, j], depth)
    return pix, zbuf, second, bary


def pixel_to_clip(points_px: list[tuple[float, float, float]], h: int, w: int) -> torch.Tensor:
    """Screen-pixel positions (x right, y down, z_ndc) -> (1, N, 4) clip vertices with w = 1."""
    p = torch.tensor(points_px, dtype=torch.float32)
    ndc_x, ndc_y = 2 * p[:, 0] / w - 1, 1 - 2 * p[:, 1] / h
    return torch.stack([ndc_x, ndc_y, p[:, 2], torch.ones(len(p))], 1)[None]  # (1, N, 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_reference_on_random_meshes(seed):
    g = torch.Generator().manual_seed(seed)
    n_views, n_verts, h, w = 2, 24, 12, 15
    cw = 0.5 + 1.5 * torch.rand(n_views, n_verts, 1, generator=g)
    xyz = torch.cat([2.4 * torch.rand(n_views, n_verts, 2, generator=g) - 1.2,
                     1.8 * torch.rand(n_views, n_verts, 1, generator=g) - 0.9], -1)
    verts_clip = torch.cat([xyz * cw, cw], -1)  # (V, N, 4)
    faces = torch.randint(0, n_verts, (20, 3), generator=g)
    frags = rasterize(verts_clip, faces, (h, w))
    pix, zbuf, second, bary = reference_rasterize(verts_clip.numpy(), faces.numpy(), h, w)
    # Where two faces lie at (almost) the same depth either may win.
    tie = np.where(np.isfinite(second), second, 9) - np.where(np.isfinite(zbuf), zbuf, 0) < 1e-5
    assert (frags.pix_to_face.numpy() == pix)[~tie].all()
    assert (pix >= 0).sum() > 50  # the test looks at a well-covered image
    same = (frags.pix_to_face.numpy() == pix) & (pix >= 0)
    np.testing.assert_allclose(frags.zbuf.numpy()[same], zbuf[same], atol=1e-5)
    np.testing.assert_allclose(frags.bary.numpy()[same], bary[same], atol=1e-4)
    assert (frags.zbuf.numpy()[pix < 0] == 1).all() and (frags.bary.numpy()[pix < 0] == 0).all()


def test_small_bucket_budget_gives_the_same_result(monkeypatch):
    g = torch.Generator().manual_seed(3)
    verts_clip = torch.cat([torch.rand(1, 60, 3, generator=g) * 2 - 1, torch.ones(1, 60, 1)], -1)
    faces = torch.randint(0, 60, (80, 3), generator=g)
    full = rasterize(verts_clip, faces, 32)
    monkeypatch.setattr(raster, "CANDIDATE_BUDGET", 64)  # many chunks per bucket
    chunked = rasterize(verts_clip, faces, 32)
    assert torch.equal(full.pix_to_face, chunked.pix_to_face)
    assert torch.equal(full.bary, chunked.bary)


def test_top_left_rule_splits_a_shared_diagonal():
    # Square [2, 6]^2 in pixels split along the diagonal through pixel centres (i+.5, i+.5).
    verts = pixel_to_clip([(2, 2, 0), (6, 2, 0), (6, 6, 0), (2, 6, 0)], 8, 8)
    halves = [rasterize(verts, torch.tensor([tri]), 8).pix_to_face[0] >= 0
              for tri in ([0, 2, 1], [0, 3, 2])]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert not (halves[0] & halves[1]).any()  # no pixel drawn twice
    assert torch.equal(halves[0] | halves[1], expected)  # no hole, nothing outside
    assert halves[0].sum() + halves[1].sum() == 16


def test_jittered_grid_is_watertight():
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
    count = sum((rasterize(verts, faces[i: i + 1], 21).pix_to_face >= 0).int()
                for i in range(len(faces)))  # how many faces cover each pixel
    assert (count == 1).all()


def test_nearer_triangle_wins_whatever_the_order():
    near = [(1, 1, -0.5), (7, 1, -0.5), (1, 7, -0.5)]
    far = [(1, 1, 0.5), (7, 1, 0.5), (1, 7, 0.5)]
    for first, second, near_id in ((near, far, 0), (far, near, 1)):
        faces = torch.tensor([[0, 2, 1], [3, 5, 4]])
        frags = rasterize(pixel_to_clip(first + second, 8, 8), faces, 8)
        covered = frags.pix_to_face >= 0
        assert covered.sum() > 10 and (frags.pix_to_face[covered] == near_id).all()
        assert torch.allclose(frags.zbuf[covered], torch.tensor(-0.5))


def test_barycentrics_reproduce_pixel_positions():
    cameras = Cameras(look_at(torch.tensor([[0.3, 0.2, 3.0]])), perspective(40.0)[None])
    verts = torch.tensor([[-1.0, -0.8, 0.2], [1.1, -0.5, -0.6], [0.1, 1.0, 0.4]])
    frags = rasterize(cameras.transform(verts), torch.tensor([[0, 1, 2]]), 32)
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


def test_perspective_correct_interpolation_on_a_slanted_quad():
    # Camera at the origin looking down -z; a quad leaning back from z = -2 (bottom) to -4 (top).
    size, fov = 48, 60.0
    quad = torch.tensor([[-1.0, -1.0, -2.0], [1.0, -1.0, -2.0],
                         [1.0, 1.0, -4.0], [-1.0, 1.0, -4.0]])
    t = torch.tensor([0.0, 0.0, 1.0, 1.0])  # 0 at the bottom edge, 1 at the top
    cameras = Cameras(torch.eye(4)[None], perspective(fov, near=0.5, far=10.0)[None])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterize(cameras.transform(quad), faces, size)
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
    affine = raster.Fragments(frags.pix_to_face, frags.zbuf, affine_bary)
    screen = interpolate(affine, t[faces][..., None])[0, ..., 0]
    assert (screen - expected)[covered].abs().max() > 0.05


def _screen_bary(frags, verts, cameras, faces):
    """Affine (not perspective-correct) barycentrics: undo the 1/w weighting of frags.bary."""
    w = cameras.transform(verts)[0, :, 3][faces]  # (F, 3)
    corner_w = w[frags.pix_to_face[0].clamp(min=0)]  # (H, W, 3)
    b = frags.bary[0] * corner_w
    return (b / b.sum(-1, keepdim=True).clamp(min=1e-12))[None]


def test_degenerate_and_hostile_input():
    tri = torch.tensor([[0, 1, 2]])
    zero_area = pixel_to_clip([(1, 1, 0), (3, 3, 0), (5, 5, 0)], 8, 8)  # collinear
    assert (rasterize(zero_area, tri, 8).pix_to_face < 0).all()
    behind = torch.tensor([[[0.0, 0.0, 0.5, -1.0], [1.0, 0.0, 0.5, -1.0], [0.0, 1.0, 0.5, -1.0]]])
    assert (rasterize(behind, tri, 8).pix_to_face < 0).all()
    crossing = torch.tensor([[[-1.0, -1.0, -2.0, 1e-3], [1.0, -1.0, 0.5, 1.0],
                              [0.0, 1.0, 0.5, 1.0]]])  # first corner before the near plane
    frags = rasterize(crossing, tri, 8)
    assert (frags.pix_to_face < 0).all()
    assert all(torch.isfinite(t).all() for t in (frags.zbuf, frags.bary))
    with pytest.raises(ValueError, match="NaN"):
        rasterize(torch.full((1, 3, 4), float("nan")), tri, 8)
    with pytest.raises(ValueError, match="out of range"):
        rasterize(zero_area, torch.tensor([[0, 1, 7]]), 8)
    empty = rasterize(torch.zeros(2, 0, 4), torch.zeros(0, 3, dtype=torch.long), (3, 5))
    assert empty.pix_to_face.shape == (2, 3, 5) and (empty.pix_to_face == -1).all()
    big = torch.tensor([[[-3.0, -3.0, 0.0, 1.0], [3.0, -3.0, 0.0, 1.0], [0.0, 3.0, 0.0, 1.0]]])
    one = rasterize(big, tri, 1)
    assert one.pix_to_face.tolist() == [[[0]]] and torch.allclose(one.bary.sum(-1), torch.ones(1))
    for bad_size in (0, (4, raster.MAX_IMAGE_SIDE + 1)):
        with pytest.raises(ValueError, match="image_size"):
            rasterize(big, tri, bad_size)


def test_equal_depths_go_to_the_lower_face_id():
    # Two identical triangles in each of two views: the same depth everywhere, so the packed
    # (depth, entry) key decides, and it must pick face 0 in every view, whatever the order.
    verts = pixel_to_clip([(1, 1, 0.2), (1, 7, 0.2), (7, 1, 0.2)], 8, 8).expand(2, -1, -1)
    for faces in ([[0, 1, 2], [0, 1, 2]], [[1, 2, 0], [2, 0, 1]]):
        pix = rasterize(verts, torch.tensor(faces), 8).pix_to_face
        assert (pix >= 0).sum() > 0 and set(pix[pix >= 0].tolist()) == {0}


def test_backface_culling_is_optional():
    # Top-left, bottom-left, top-right in pixels: counter-clockwise with y up = a front face.
    verts = pixel_to_clip([(1, 1, 0), (1, 7, 0), (7, 1, 0)], 8, 8)
    front, back = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    # 15 = 5 + 4 + ... + 1: centres on the hypotenuse (a bottom-right edge) are left out.
    assert (rasterize(verts, front, 8, cull_backfaces=True).pix_to_face == 0).sum() == 15
    assert (rasterize(verts, back, 8, cull_backfaces=True).pix_to_face < 0).all()
    assert (rasterize(verts, back, 8).pix_to_face == 0).sum() == 15  # two-sided by default


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


@pytest.mark.parametrize("mode", ["shaded", "texture", "colors", "depth", "normals"])
def test_render_views_modes(mode):
    images = render_views(_hemisphere(), views=((-20, 0), (0, 0), (20, 0)), image_size=32,
                          mode=mode, background=(0.0, 0.5, 1.0))
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
    assert torch.equal(images[1, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]))  # corner: background
    assert not torch.equal(images[1, :, 16, 16], torch.tensor([0.0, 0.5, 1.0]))  # centre: face
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
