"""facet.render: every render mode gives the physical values it promises."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from facet.faces.scanner import demo_face
from facet.mesh import Mesh
from facet.render import (ALBEDO, AMBIENT, MIN_FOREGROUND, SPECULAR, RenderSettings, render_views,
                          vertex_normals)

FRONT = [(0.0, 0.0)]


def _plane(z: float = 0.0, size: float = 0.5, colors=None, uv=None, texture=None) -> Mesh:
    """A square facing +z (toward the default camera) at depth z."""
    verts = np.array([[-size, -size, z], [size, -size, z], [size, size, z], [-size, size, z]],
                     dtype=np.float32)
    return Mesh(verts, np.array([[0, 1, 2], [0, 2, 3]]), colors=colors, uv=uv, texture=texture)


def _centre(image: torch.Tensor) -> torch.Tensor:
    """The RGB value at the image centre of a (V, 3, H, W) render's first view."""
    h, w = image.shape[-2:]
    return image[0, :, h // 2, w // 2]


def test_a_plane_facing_the_camera_has_the_frontal_normal_and_full_light():
    normals = render_views(_plane(), FRONT, 32, "normals", normalize=False)
    torch.testing.assert_close(_centre(normals), torch.tensor([0.5, 0.5, 1.0]))  # n = (0, 0, 1)
    shaded = render_views(_plane(), FRONT, 32, "shaded", normalize=False)
    facing = ALBEDO * (AMBIENT + (1 - AMBIENT)) + SPECULAR  # n . l = 1 under the headlight
    torch.testing.assert_close(_centre(shaded), torch.full((3,), facing))
    assert (render_views(_plane(), FRONT, 32, "shaded", normalize=False)[0, :, 0, 0] == 1).all()


def test_a_tilted_plane_turns_its_normal_and_darkens():
    tilt = np.radians(40)
    plane = _plane()
    plane.verts[:, 2] = plane.verts[:, 0] * np.tan(tilt)  # turned toward +x (the right)
    normal = _centre(render_views(plane, FRONT, 32, "normals", normalize=False)) * 2 - 1
    expected = torch.tensor([-np.sin(tilt), 0.0, np.cos(tilt)], dtype=torch.float32)
    torch.testing.assert_close(normal, expected, atol=1e-3, rtol=0)
    grey = _centre(render_views(plane, FRONT, 32, "shaded", normalize=False))[0]
    lit = ALBEDO * (AMBIENT + (1 - AMBIENT) * np.cos(tilt)) + SPECULAR * np.cos(tilt) ** 24
    assert grey.item() == pytest.approx(lit, abs=1e-3)


def test_depth_orders_surfaces_nearest_white():
    near, far = _plane(0.2, 0.2), _plane(-0.2, 0.5)  # a small square in front of a large one
    both = Mesh(np.concatenate([near.verts, far.verts]),
                np.concatenate([near.faces, far.faces + 4]))
    depth = render_views(both, FRONT, 64, "depth", normalize=False)[0, 0]  # (H, W)
    assert depth[32, 32] == pytest.approx(1.0)  # the nearest covered depth
    assert depth[32, 12] == pytest.approx(0.0, abs=1e-6)  # the farthest covered depth
    assert depth[0, 0] == 1.0  # background


def test_vertex_colours_and_texture_come_through_unlit():
    red = np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (4, 1))
    torch.testing.assert_close(_centre(render_views(_plane(colors=red), FRONT, 16, "colors",
                                                    normalize=False)), torch.tensor([1., 0., 0.]))
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4, :, 1] = 255  # top half green, bottom half black (v = 0 is the bottom row)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    image = render_views(_plane(uv=uv, texture=texture), FRONT, 32, "texture", normalize=False)
    assert image[0, 1, 8, 16] == pytest.approx(1.0) and image[0, 1, 24, 16] == pytest.approx(0.0)


def test_render_settings_are_canonical_and_checked():
    assert RenderSettings(views=[[0, 0]]) == RenderSettings(views=((0.0, 0.0),))
    with pytest.raises(ValueError, match="mode"):
        RenderSettings(mode="ink")


@pytest.mark.parametrize("break_it, cause", [
    (lambda m: dataclasses.replace(m, verts=np.vstack([[1e30, 0, 0], m.verts[1:]])),
     r"a few vertices lie far outside the face \(its bounding box is .* times"),
    (lambda m: dataclasses.replace(m, faces=m.faces[:, [0, 0, 1]]),
     "its triangles all have zero area"),
])
def test_a_blank_render_is_refused_with_its_cause(break_it, cause):
    """One vertex at 1e30 shrinks the normalised face to a dot; zero-area triangles cover no
    pixel: either renders to a background-only image, which must never be classified."""
    face = dataclasses.replace(demo_face(), source="scan.ply")
    assert render_views(face, image_size=16, min_foreground=MIN_FOREGROUND).shape == (3, 3, 16, 16)
    broken = break_it(face)
    blank = render_views(broken, image_size=16)  # without the check: the background alone
    assert torch.equal(blank, torch.ones_like(blank))
    with pytest.raises(ValueError, match=rf"scan.ply: renders to an \(almost\) empty image: the "
                                         rf"face covers 0.00 % of view -20,0 .*{cause}"):
        render_views(broken, image_size=16, min_foreground=MIN_FOREGROUND)


def test_vertex_normals_are_the_normalised_sums_of_area_weighted_face_normals():
    """Against a loop over faces in float64 (the oracle), on a real face with an unused vertex
    appended: that one gets (0, 0, 1)."""
    face = demo_face()
    verts = np.vstack([face.verts, [[0.0, 0.0, 0.0]]]).astype(np.float32)
    summed = np.zeros((len(verts), 3))
    for a, b, c in face.faces:  # |cross| = twice the face's area: area-weighted
        normal = np.cross(verts[b] - verts[a], verts[c] - verts[a]).astype(np.float64)
        summed[[a, b, c]] += normal
    expected = summed / np.linalg.norm(summed, axis=1, keepdims=True).clip(min=1e-12)
    expected[-1] = (0.0, 0.0, 1.0)
    got = vertex_normals(torch.from_numpy(verts), torch.from_numpy(face.faces))
    assert got.shape == (len(verts), 3) and got.is_contiguous()
    # float32 sums in another order: unit vectors agree to a few float32 roundings
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-6, rtol=0)


def test_renders_are_ordinary_tensors_that_training_can_use():
    """render_views works in inference mode (for speed); what it returns must not be an
    inference tensor, which autograd refuses to save for a backward pass."""
    # what training renders (normal maps); one view of three channels is laid out contiguous
    # already, where a copy-if-needed would hand out the inference tensor itself
    for views in ([(0, 0)], [(-20, 0), (0, 0), (20, 0)]):
        images = render_views(demo_face(), views, image_size=16, mode="normals")
        assert not images.is_inference() and images.is_contiguous()
        layer = torch.nn.Conv2d(3, 2, 3)
        layer(images).square().sum().backward()  # saves the images for the weights' gradient
        assert layer.weight.grad is not None
