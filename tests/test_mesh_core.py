"""Mesh container invariants and normalisation (oracle: the transform's own inverse)."""
import numpy as np
import pytest

from facet.mesh import Mesh, facing_rotation, normalize


def _bump(n=21):
    """A height field z = exp(-r^2) over a grid: a 'face' whose nose points at +z."""
    xs, ys = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1.3, 1.3, n))
    verts = np.stack([xs, ys, np.exp(-(xs**2 + ys**2) * 3)], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1), np.stack([a, d, c], -1)]).reshape(-1, 3)
    return Mesh(verts=verts, faces=faces)


def test_normalize_centres_scales_and_undoes():
    mesh = _bump()
    mesh.verts = mesh.verts * 90 + np.array([10, -5, 300], np.float32)  # mm, off-centre
    out, tf = normalize(mesh)
    extent = out.verts.max(0) - out.verts.min(0)
    assert extent.max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose((out.verts.max(0) + out.verts.min(0)) / 2, 0, atol=1e-5)
    np.testing.assert_allclose(tf.undo(out.verts), mesh.verts, atol=1e-3)


def test_normalize_centres_on_nose_tip_landmark():
    mesh = _bump()
    mesh.landmarks = {"nose_tip": np.array([0.0, 0.0, 1.0]), "eyes": np.zeros((2, 3))}
    out, _ = normalize(mesh)
    np.testing.assert_allclose(out.landmarks["nose_tip"], 0, atol=1e-6)
    assert out.landmarks["eyes"].shape == (2, 3)


def test_align_turns_a_tilted_face_to_look_down_plus_z():
    mesh = _bump()
    angle = np.deg2rad(35)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    tilted = Mesh(verts=mesh.verts @ rot.T, faces=mesh.faces)
    out, _ = normalize(tilted, align=True)
    ref, _ = normalize(mesh)
    # the tip of the bump (largest z in the reference) is again the largest z after alignment
    assert np.argmax(out.verts[:, 2]) == np.argmax(ref.verts[:, 2])
    r = facing_rotation(tilted.verts.astype(np.float64))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0)


@pytest.mark.parametrize("verts, faces, message", [
    (np.zeros((0, 3)), np.zeros((0, 3)), "empty mesh"),
    (np.array([[0, 0, 0], [1, 0, 0], [0, np.nan, 0]]), [[0, 1, 2]], "NaN"),
    (np.eye(3), [[0, 1, 3]], "out of range"),
    (np.eye(3)[:, :2], [[0, 1, 2]], r"\(N, 3\)"),
])
def test_bad_arrays_raise_with_the_source_named(verts, faces, message):
    with pytest.raises(ValueError, match=message) as err:
        Mesh(verts=verts, faces=faces, source="scan.wrl")
    assert "scan.wrl" in str(err.value)
