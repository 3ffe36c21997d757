"""Landmark readers: .bnd rows (tabs/spaces/blank lines) and .lm3 named points, exact values."""
import numpy as np
import pytest

from facet.data.meshio import read_bnd, read_lm3, save_bnd, save_lm3


def test_bnd_mixed_separators_and_blank_lines(tmp_path):
    path = tmp_path / "F0001_NE00WH_F3D.bnd"
    path.write_text("12\t-35.5\t20.25\t50\n\n  7 1e1   -2.5 0.125  \r\n3\t0\t0\t-1\n\n")
    indices, points = read_bnd(path)
    assert indices.dtype == np.int64 and points.dtype == np.float32
    assert indices.tolist() == [12, 7, 3]
    np.testing.assert_array_equal(points, [[-35.5, 20.25, 50], [10, -2.5, 0.125], [0, 0, -1]])


def test_bnd_round_trip_83_rows(tmp_path):
    rng = np.random.default_rng(0)
    indices, points = rng.permutation(5000)[:83], rng.normal(0, 50, (83, 3))
    save_bnd(indices, points, tmp_path / "000.bnd")
    got_indices, got_points = read_bnd(tmp_path / "000.bnd")
    np.testing.assert_array_equal(got_indices, indices)
    np.testing.assert_allclose(got_points, points, atol=1e-5)


LM3 = """#Landmark3D File
4 landmarks:
labels and coordinates:
Outer left eyebrow
-55.1 30.2 -40.5

Nose tip
0.5 -2.25 12
Left mouth corner
-25 -40 -20.75
Chin middle
1 -70.5 -15
"""


def test_lm3_named_points_with_some_missing(tmp_path):
    (tmp_path / "bs000_E_HAPPY_0.lm3").write_text(LM3)
    points = read_lm3(tmp_path / "bs000_E_HAPPY_0.lm3")
    assert list(points) == ["Outer left eyebrow", "Nose tip", "Left mouth corner", "Chin middle"]
    np.testing.assert_array_equal(points["Nose tip"], [0.5, -2.25, 12])
    assert points["Chin middle"].shape == (3,) and points["Chin middle"].dtype == np.float32


def test_lm3_round_trip(tmp_path):
    points = {"Nose tip": np.array([1.5, 2, 3]), "Right mouth corner": np.array([-4, 5.25, 6])}
    save_lm3(points, tmp_path / "a.lm3")
    got = read_lm3(tmp_path / "a.lm3")
    assert list(got) == list(points)
    for name in points:
        np.testing.assert_allclose(got[name], points[name])


@pytest.mark.parametrize("reader, text, problem", [
    (read_bnd, "1 2 3\n", "line 1"),  # three fields
    (read_bnd, "1 2 3 4\n5 a 6 7\n", "line 2"),  # non-numeric
    (read_bnd, "1.5 2 3 4\n", "line 1"),  # index not an integer
    (read_bnd, "-1 2 3 4\n", "line 1"),  # negative index
    (read_bnd, "1 2 nan 4\n", "line 1"),
    (read_bnd, "\n\n", "no landmark"),
    (read_lm3, LM3.replace("0.5 -2.25 12\n", ""), "'Nose tip'"),  # a name without coordinates
    (read_lm3, LM3.replace("1 -70.5 -15", "1 -70.5"), "'Chin middle'"),
    (read_lm3, LM3 + "Nose tip\n0 0 0\n", "twice"),
    (read_lm3, "#Landmark3D File\n0 landmarks:\n\n", "no landmark"),
])
def test_malformed_landmark_files_name_file_and_problem(tmp_path, reader, text, problem):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        reader(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_missing_landmark_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bnd"):
        read_bnd(tmp_path / "nope.bnd")
