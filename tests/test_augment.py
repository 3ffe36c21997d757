"""Mixed view augmentation: seeded per sample, per view, shared over frames, identity at zero
strength, warps of the standardised residual, and normal maps that stay physical."""
import math

import numpy as np
import pytest
import torch

from facet.augment import (mirror_faces, mirror_slots, mix_view_augment, rotate_normals,
                           warp_views)
from facet.mesh import Mesh
from facet.render import render_views

OFF = dict(max_rotation=0, scale=(1.0, 1.0), max_shift=0, brightness=0)


def _faces(b=2, t=1, v=3, size=16):
    """Smooth random images, identical over views and frames (so any difference is the warp)."""
    img = torch.nn.functional.interpolate(torch.rand(b, 3, 4, 4), size=size, mode="bilinear")
    return img[:, None, None].expand(b, t, v, 3, size, size).clone()


def _seeds(*values):
    return torch.tensor(values, dtype=torch.long)


def test_same_seed_same_output_other_seed_other_output():
    views = _faces()
    a = mix_view_augment(views, _seeds(1, 2))
    assert torch.equal(a, mix_view_augment(views, _seeds(1, 2)))
    assert not torch.allclose(a, mix_view_augment(views, _seeds(3, 4)))
    assert a.shape == views.shape and a.dtype == views.dtype and 0 <= a.min() <= a.max() <= 1


def test_a_sample_gets_the_same_warp_in_any_batch():
    views = _faces(b=3)
    together = mix_view_augment(views, _seeds(5, 6, 7))
    alone = mix_view_augment(views[1:2], _seeds(6))  # as on another DDP rank
    assert torch.equal(together[1:2], alone)


def test_zero_strength_is_the_identity():
    views = _faces()
    mean = torch.rand(3, 3, 16, 16)
    for kwargs in ({}, {"mean": mean}):
        out = mix_view_augment(views, _seeds(0, 1), **OFF, **kwargs)
        torch.testing.assert_close(out, views, atol=1e-5, rtol=0)


def test_brightness_scales_light_but_not_normals_or_depth():
    views = _faces() * 0.5 + 0.25  # stay inside [0, 1] after gains of +-10 %
    bright = {**OFF, "brightness": 0.1}
    ratio = (mix_view_augment(views, _seeds(0, 1), "shaded", **bright) / views).flatten(3)
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio), atol=1e-4, rtol=0)
    assert ratio[..., 0].std() > 0  # the views of one face got different factors
    for mode in ("normals", "depth"):
        torch.testing.assert_close(mix_view_augment(views, _seeds(0, 1), mode, **bright), views)


def test_views_differ_but_frames_of_a_view_share_the_warp():
    views = _faces(t=4)
    out = mix_view_augment(views, _seeds(0, 1))
    assert not torch.allclose(out[:, :, 0], out[:, :, 1])  # identical inputs, different warps
    for t in range(1, 4):
        assert torch.equal(out[:, t], out[:, 0])  # same frames stay the same: no fake motion


def test_the_standardised_residual_is_warped_with_zero_padding():
    """Outside the warped image the model must see its mean face: a zero residual."""
    views, mean = _faces(), torch.rand(3, 3, 16, 16)
    shifted = mix_view_augment(views, _seeds(0, 1), mean=mean, max_rotation=0, scale=(0.5, 0.5),
                               max_shift=0, brightness=0)  # zoomed out: a border appears
    corner = shifted[:, 0, :, :, 0, 0]  # (B, V, 3) a pixel outside the shrunken image
    torch.testing.assert_close(corner, mean[:, :, 0, 0].expand_as(corner))


def _bump(n=41) -> Mesh:
    """A smooth asymmetric bump facing +z: its normals tilt in every direction."""
    u = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    x, y = np.meshgrid(u, u)
    z = 0.3 * np.exp(-((x - 0.1) ** 2 + (y + 0.05) ** 2) / 0.05)
    a = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)).reshape(-1)
    faces = np.concatenate([np.stack([a, a + 1, a + n + 1], 1), np.stack([a, a + n + 1, a + n], 1)])
    return Mesh(np.stack([x, y, z], -1).reshape(-1, 3), faces)


def test_rotating_a_normal_map_equals_rendering_a_rolled_camera():
    """Physical check: warping a normal map by angle a = rendering the mesh rolled by a about
    the view axis, the normals included (up to resampling at a few edge pixels)."""
    mesh, angle = _bump(), math.radians(12.0)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0],
                         [math.sin(angle), math.cos(angle), 0], [0, 0, 1]], dtype=np.float32)
    kwargs = dict(views=[(0.0, 0.0)], image_size=64, mode="normals", normalize=False)
    reference = render_views(Mesh(mesh.verts @ rotation.T, mesh.faces), **kwargs)[0]
    views = render_views(mesh, **kwargs)[None, None]  # (B=1, T=1, V=1, 3, 64, 64)
    one = torch.ones(1, 1)
    warped = warp_views(views, one * angle, one, torch.zeros(1, 1, 2), one, "normals")[0, 0, 0]
    inside = (reference != 1).all(0) & (warped != 1).all(0)  # face pixels in both
    error = (warped - reference).abs()[:, inside]
    assert inside.sum() > 500 and error.median() < 0.01, error.median()
    unrolled = (views[0, 0, 0] - reference).abs()[:, inside]
    assert unrolled.median() > 3 * error.median()  # the test can fail: rolling matters
    geometry_only = warp_views(views, one * angle, one, torch.zeros(1, 1, 2), one, "depth")
    assert (geometry_only[0, 0, 0] - reference).abs()[:, inside].median() > 2 * error.median()


@pytest.mark.parametrize("mode", ["normals", "shaded", "depth"])
def test_mirroring_the_views_equals_rendering_the_mirrored_mesh(mode):
    """Oracle: the views of the mesh mirrored x -> -x (triangles turned to stay front-facing)
    are the views flipped, moved to their mirror slots and, for normals, x negated (up to the
    rasterizer's pixel-centre ties at a few edge pixels)."""
    mesh, views = _bump(), ((-25.0, 0.0), (0.0, 10.0), (25.0, 0.0))
    mirrored = Mesh(mesh.verts * np.float32([-1, 1, 1]), mesh.faces[:, ::-1].copy())
    kwargs = dict(views=views, image_size=48, mode=mode, normalize=False)
    reference = render_views(mirrored, **kwargs)  # (V, 3, H, W)
    rendered = render_views(mesh, **kwargs)[None, None]  # (1, 1, V, 3, H, W)
    out = mirror_faces(rendered, mirror_slots(views), mode)[0, 0]
    error = (out - reference).abs()
    assert (error > 0.02).float().mean() < 0.01, (error > 0.02).float().mean()
    assert (rendered[0, 0] - reference).abs().gt(0.02).float().mean() > 0.05  # it can fail


def test_mirror_slots_pair_opposite_yaws_and_refuse_an_asymmetric_set():
    assert mirror_slots(((-20, 0), (0, 0), (20, 0))) == (2, 1, 0)
    assert mirror_slots(((0, -15), (30, 5), (-30, 5))) == (0, 2, 1)
    with pytest.raises(ValueError, match="no mirror -10,0"):
        mirror_slots(((10, 0), (0, 0)))


def test_mirroring_twice_is_the_identity_and_keeps_the_background():
    views = torch.rand(2, 3, 3, 3, 8, 8)
    views[..., 0, 0] = 1.0  # background pixels
    slots = mirror_slots(((-20, 0), (0, 0), (20, 0)))
    once = mirror_faces(views, slots, "normals")
    assert torch.equal(once[..., :, 0, 7], torch.ones(2, 3, 3, 3))  # flipped, still background
    torch.testing.assert_close(mirror_faces(once, slots, "normals"), views)


def test_augmentation_mirrors_about_half_the_faces_by_their_own_seed():
    views, slots = _faces(b=64), (2, 1, 0)
    views[:, :, 0] *= 0.5  # slots told apart, so a mirrored face shows it
    plain = mix_view_augment(views, _seeds(*range(64)), "depth", **OFF)
    mixed = mix_view_augment(views, _seeds(*range(64)), "depth", mirror=slots, **OFF)
    flipped = ~(plain == mixed).flatten(1).all(1)  # (B,)
    assert 20 < int(flipped.sum()) < 44
    expected = mix_view_augment(mirror_faces(views, slots, "depth"), _seeds(*range(64)), "depth",
                                **OFF)  # the identity warp, rounded as the mixed ones are
    assert torch.equal(mixed[flipped], expected[flipped])
    alone = mix_view_augment(views[5:6], _seeds(5), "depth", mirror=slots, **OFF)
    assert torch.equal(alone, mixed[5:6])  # the same draw in any batch


def test_rotate_normals_keeps_unit_length_and_the_background():
    n = torch.nn.functional.normalize(torch.randn(1, 1, 1, 3, 4, 4), dim=3)
    views = (n + 1) / 2
    views[..., 0, 0] = 1.0  # one background pixel
    out = rotate_normals(views, torch.tensor([[0.7]]))
    torch.testing.assert_close((out * 2 - 1).norm(dim=3)[..., 1:, 1:],
                               torch.ones(1, 1, 1, 3, 3))
    assert torch.equal(out[..., 0, 0], torch.ones(1, 1, 1, 3))


def test_mixing_takes_the_same_slot_from_a_same_class_sample():
    b, v = 4, 3
    views = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1, 1) / 10
    views = views.expand(b, 1, v, 3, 8, 8).clone()  # sample i is filled with i / 10
    labels = torch.tensor([0, 0, 1, 2])
    out = mix_view_augment(views, _seeds(0, 1, 2, 3), labels=labels, mix_prob=1.0, **OFF)
    source = (out[:, 0, :, 0, 0, 0] * 10).round().long()  # (B, V) sample each view came from
    assert torch.all(source[:2] == torch.tensor([[1], [0]]))  # the two class-0 faces swap views
    assert torch.all(source[2:] == torch.tensor([[2], [3]]))  # single-class samples keep theirs
    mask = torch.tensor([[True, False, True], [True, True, True], [True] * 3, [True] * 3])
    out = mix_view_augment(views, _seeds(0, 1, 2, 3), labels=labels, view_mask=mask,
                           mix_prob=1.0, **OFF)
    assert (out[1, 0, 1, 0, 0, 0] * 10).round() == 1  # donor 0 lacks view 1: nothing to take
    with pytest.raises(ValueError, match="labels"):
        mix_view_augment(views, _seeds(0, 1, 2, 3), mix_prob=0.5)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="B, T, V, 3, H, W"):
        mix_view_augment(torch.rand(2, 3, 3, 8, 8), _seeds(0, 1))
    with pytest.raises(ValueError, match="one seed per sample"):
        mix_view_augment(_faces(), _seeds(0))
