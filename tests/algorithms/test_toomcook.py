"""Exact Toom-Cook transforms: generation, verification, nesting, points and errors."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from leanconv.algorithms.toomcook import (
    WinogradTransform,
    default_points,
    nest,
    verify,
    winograd_transform,
    winograd_transform_2d,
)
from leanconv.errors import InvalidSpecError

F = Fraction


@pytest.mark.parametrize("m", range(1, 9))
@pytest.mark.parametrize("r", range(1, 8))
def test_every_small_algorithm_is_exact(m, r):
    t = winograd_transform(m, r)
    assert verify(t)
    a = m + r - 1
    assert (len(t.AT), len(t.AT[0]), len(t.G), len(t.G[0]), len(t.BT)) == (m, a, a, r, a)
    assert t.multiplications == a and t.direct_multiplications == m * r


@pytest.mark.parametrize("fractions", ["G", "BT", "AT"])
@pytest.mark.parametrize(("m", "r"), [(2, 3), (4, 3), (6, 3), (3, 5), (8, 3)])
def test_fractions_sit_in_one_matrix(m, r, fractions):
    t = winograd_transform(m, r, fractions=fractions)
    assert verify(t)
    for key in ("AT", "G", "BT"):
        integral = all(v.denominator == 1 for row in getattr(t, key) for v in row)
        if key != fractions:
            assert integral, key


def test_published_points():
    assert winograd_transform(2, 3).points == (0, -1, 1)
    assert set(winograd_transform(4, 3).points) == {0, -1, 1, F(1, 2), -2}
    assert set(winograd_transform(6, 3).points) == {0, 1, -1, F(1, 2), F(-1, 2), 2, -2}
    assert set(winograd_transform(8, 3).points) == set(winograd_transform(6, 3).points) | {
        F(-1, 4),
        4,
    }
    pts = default_points(40)
    assert len(set(pts)) == 40


def test_lavin_gray_f23():
    # Lavin & Gray 2016, eq. 7 (points 0, 1, -1): G holds the halves, A^T and B^T are integers.
    t = winograd_transform(2, 3, points=[0, 1, -1])
    half = F(1, 2)
    expected_g = ((1, 0, 0), (half, half, half), (half, -half, half), (0, 0, 1))
    assert expected_g == t.G
    # Lavin & Gray's last row of B^T and column of A^T carry the opposite sign (same algorithm).
    assert t.BT == ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, -1, 0, 1))
    assert t.AT == ((1, 1, 1, 0), (0, 1, -1, 1))


def test_nnpack_f63_input_transform():
    # The well-known F(6,3) B^T rows of NNPACK / wincnn for points 0, +-1, +-2, +-1/2.
    t = winograd_transform(6, 3)
    assert (4, 0, -21, 0, 21, 0, -4, 0) in t.BT


@pytest.mark.parametrize(
    ("m", "r", "points"),
    [
        (2, 3, ["0", "1", "-1"]),
        (2, 3, [0, 2, -2]),
        (4, 3, [0, 1, -1, 2, -2]),
        (4, 3, ["0", "1/3", "-3", "3/2", "-2/3"]),
        (3, 2, [F(1, 5), 7, -1]),
        (2, 2, [0.5, -0.25]),
        (1, 1, []),
    ],
)
def test_user_points(m, r, points):
    t = winograd_transform(m, r, points)
    assert verify(t)
    assert t.points == tuple(F(str(p)) if isinstance(p, float) else F(p) for p in points)


def test_nested_2d_is_exact():
    assert verify(nest(winograd_transform(2, 3)))
    assert verify(winograd_transform_2d(4, 3))
    t = winograd_transform_2d((4, 2), (3, 5))
    assert verify(t)
    assert t.name == "F(4x2,3x5)"
    assert t.multiplications == 6 * 6 and t.direct_multiplications == 8 * 15
    assert winograd_transform_2d(6, 3).multiplications_per_output == F(64, 36)


def test_reference_multiplication_counts():
    per_output = {m: float(winograd_transform_2d(m, 3).multiplications_per_output) for m in (2, 4)}
    assert per_output == {2: 4.0, 4: 2.25}
    assert round(float(winograd_transform_2d(6, 3).reduction), 2) == 5.06
    assert round(float(winograd_transform_2d(8, 3).multiplications_per_output), 2) == 1.56


def test_verify_catches_a_wrong_matrix():
    t = winograd_transform(2, 3)
    bad_bt = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, 1))
    wrong = WinogradTransform(2, 3, t.points, t.AT, t.G, tuple(tuple(map(F, r)) for r in bad_bt))
    with pytest.raises(InvalidSpecError, match="coefficient of y"):
        verify(wrong)


def test_to_tensor_dtype_and_values():
    at, g, bt = winograd_transform(4, 3).to_tensor(torch.float64)
    assert at.dtype == g.dtype == bt.dtype == torch.float64
    assert g[3].tolist() == [2 / 15, 1 / 15, 1 / 30]
    at2, g2, bt2 = winograd_transform_2d(2, 3).to_tensor(torch.float32, "cpu")
    assert at2.shape == (4, 16) and g2.shape == (16, 9) and bt2.shape == (16, 16)
    assert torch.equal(at2, torch.kron(*(winograd_transform(2, 3).to_tensor()[0],) * 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 0, "r": 3}, "m=0"),
        ({"m": 2, "r": 0}, "r=0"),
        ({"m": 2.0, "r": 3}, "m=2.0"),
        ({"m": 2, "r": 3, "points": [0, 1]}, "needs m \\+ r - 2 = 3"),
        ({"m": 2, "r": 3, "points": [0, 1, 1]}, "distinct"),
        ({"m": 2, "r": 3, "points": [0, "1/2", "0.5"]}, "distinct"),
        ({"m": 2, "r": 3, "points": [0, 1, "x"]}, "'x' is not a number"),
        ({"m": 2, "r": 3, "points": [0, 1, "inf"]}, "infinity"),
        ({"m": 2, "r": 3, "points": [0, 1, float("nan")]}, "not finite"),
        ({"m": 2, "r": 3, "fractions": "A"}, "fractions"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(InvalidSpecError, match=match):
        winograd_transform(**kwargs)
