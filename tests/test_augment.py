"""Mixed view augmentation: seeded, per view, shared over frames, identity at zero strength."""
import pytest
import torch

from facet.augment import mix_view_augment


def _faces(b=2, t=1, v=3, size=16):
    """Smooth random images, identical over views and frames (so any difference is the warp)."""
    img = torch.nn.functional.interpolate(torch.rand(b, 3, 4, 4), size=size, mode="bilinear")
    return img[:, None, None].expand(b, t, v, 3, size, size).clone()


def test_same_seed_same_output_other_seed_other_output():
    views = _faces()
    a = mix_view_augment(views, torch.Generator().manual_seed(1))
    b = mix_view_augment(views, torch.Generator().manual_seed(1))
    c = mix_view_augment(views, torch.Generator().manual_seed(2))
    assert a.shape == views.shape and a.dtype == views.dtype
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_zero_strength_is_the_identity():
    views = _faces()
    out = mix_view_augment(views, torch.Generator().manual_seed(0), max_rotation=0,
                           scale=(1.0, 1.0), max_shift=0, brightness=0)
    torch.testing.assert_close(out, views, atol=1e-5, rtol=0)


def test_brightness_only_scales_each_view_by_one_factor():
    views = _faces() * 0.5 + 0.25  # stay inside [0, 1] after gains of +-10 %
    out = mix_view_augment(views, torch.Generator().manual_seed(0), max_rotation=0,
                           scale=(1.0, 1.0), max_shift=0, brightness=0.1)
    ratio = out / views  # (B, T, V, 3, H, W)
    per_view = ratio.flatten(3)
    torch.testing.assert_close(per_view, per_view[..., :1].expand_as(per_view), atol=1e-4, rtol=0)
    assert per_view[..., 0].std() > 0  # the views of one face got different factors


def test_views_differ_but_frames_of_a_view_share_the_warp():
    views = _faces(t=4)
    out = mix_view_augment(views, torch.Generator().manual_seed(0))
    assert not torch.allclose(out[:, :, 0], out[:, :, 1])  # identical inputs, different warps
    for t in range(1, 4):
        assert torch.equal(out[:, t], out[:, 0])  # same frames stay the same: no fake motion


def test_mixing_takes_the_same_slot_from_a_same_class_sample():
    b, v = 4, 3
    views = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1, 1) / 10
    views = views.expand(b, 1, v, 3, 8, 8).clone()  # sample i is filled with i / 10
    off = dict(max_rotation=0, scale=(1.0, 1.0), max_shift=0, brightness=0)
    labels = torch.tensor([0, 0, 1, 2])
    out = mix_view_augment(views, torch.Generator().manual_seed(0), labels=labels,
                           mix_prob=1.0, **off)
    source = (out[:, 0, :, 0, 0, 0] * 10).round().long()  # (B, V) sample each view came from
    assert torch.all(source[:2] == torch.tensor([[1], [0]]))  # the two class-0 faces swap views
    assert torch.all(source[2:] == torch.tensor([[2], [3]]))  # single-class samples keep theirs
    mask = torch.tensor([[True, False, True], [True, True, True], [True] * 3, [True] * 3])
    out = mix_view_augment(views, torch.Generator().manual_seed(0), labels=labels,
                           view_mask=mask, mix_prob=1.0, **off)
    assert (out[1, 0, 1, 0, 0, 0] * 10).round() == 1  # donor 0 lacks view 1: nothing to take
    with pytest.raises(ValueError, match="labels"):
        mix_view_augment(views, torch.Generator(), mix_prob=0.5)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="B, T, V, 3, H, W"):
        mix_view_augment(torch.rand(2, 3, 3, 8, 8), torch.Generator())
