"""float32 error ordering of the fast algorithms, and clear errors for bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leanconv.algorithms import conv2d, fft, winograd
from leanconv.errors import InvalidSpecError
from leanconv.nn.fast import FFTConv2d, WinogradConv2d


def _errors():
    """(max, mean) error relative to the mean |output|, 64 channels of N(0, 1), in float32."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 32, 32, generator=gen, dtype=torch.float64)
    w = torch.randn(64, 64, 3, 3, generator=gen, dtype=torch.float64)
    ref = F.conv2d(x, w, padding=1)
    scale = ref.abs().mean()

    def err(y):
        d = (y.double() - ref).abs() / scale
        return d.max().item(), d.mean().item()

    xf, wf = x.float(), w.float()
    out = {"direct": err(F.conv2d(xf, wf, padding=1)), "fft": err(fft.conv2d(xf, wf, padding=1))}
    for tile in (2, 4, 6, 8):
        out[f"F{tile}"] = err(winograd.conv2d(xf, wf, padding=1, tile=tile))
    return out


def test_float32_error_table_ordering():
    e = _errors()
    mean = {k: v[1] for k, v in e.items()}
    # F(2x2,3x3) is as accurate as direct; every larger tile is clearly worse than the last.
    assert mean["F2"] < 3 * mean["direct"]
    assert mean["F4"] > 2 * mean["F2"] and e["F4"][0] > 3 * e["F2"][0]
    assert mean["F6"] > 1.5 * mean["F4"]
    assert mean["F8"] > 4 * mean["F6"]
    # F(8x8,3x3) is not safe in float32; F(4x4) and FFT are.
    assert e["F8"][0] > 3e-4
    assert e["F4"][0] < 1e-4 and e["fft"][0] < 2e-5


X = torch.randn(1, 4, 8, 8)
W = torch.randn(4, 4, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algorithm": "magic"}, "algorithm='magic'"),
        ({"algorithm": "winograd", "tile": 0}, "tile=0"),
        ({"algorithm": "winograd", "tile": -2}, "tile=-2"),
        ({"algorithm": "winograd", "tile": 2.5}, "tile=2.5"),
        ({"algorithm": "winograd", "tile": "full"}, "tile='full'"),
        ({"algorithm": "winograd", "tile": 15}, "m \\+ r - 1 = 17"),
        ({"algorithm": "fft", "tile": 0}, "tile=0"),
        ({"algorithm": "fft", "tile": "big"}, "tile='big'"),
        ({"algorithm": "direct", "tile": 4}, "tile=4 applies"),
        ({"algorithm": "fft", "stride": 2}, "stride=\\(2, 2\\) is not supported"),
        ({"algorithm": "winograd", "groups": 3}, "groups=3"),
        ({"algorithm": "im2col", "padding": -1}, "padding=-1"),
        ({"algorithm": "winograd", "padding": (1, 2, 3)}, "padding=\\(1, 2, 3\\)"),
        ({"algorithm": "winograd", "padding": "half"}, "padding='half'"),
        ({"algorithm": "fft", "stride": 2, "padding": "same"}, "'same' needs stride 1"),
        ({"algorithm": "winograd", "stride": 0}, "stride=0"),
        ({"algorithm": "winograd", "dilation": 5}, "larger than the padded input"),
        ({"algorithm": "auto", "bias": torch.zeros(3)}, "bias of shape \\(3,\\)"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(InvalidSpecError, match=match):
        conv2d(X, W, **kwargs)


def test_mismatched_channels_dtype_device_and_rank():
    with pytest.raises(InvalidSpecError, match="input has 4 channels"):
        conv2d(X, torch.randn(4, 3, 3, 3), algorithm="winograd")
    with pytest.raises(InvalidSpecError, match="share dtype"):
        conv2d(X, W.double(), algorithm="fft")
    with pytest.raises(InvalidSpecError, match="must be \\(N, C, H, W\\)"):
        conv2d(X[0, 0], W, algorithm="im2col")
    with pytest.raises(InvalidSpecError, match="not a floating-point"):
        conv2d(X.long(), W.long(), algorithm="winograd")


@pytest.mark.parametrize("algorithm", ["winograd", "fft"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values_raise_for_fast_algorithms(algorithm, value):
    x = X.clone()
    x[0, 1, 2, 3] = value
    with pytest.raises(InvalidSpecError, match="NaN or infinity"):
        conv2d(x, W, algorithm=algorithm)
    w = W.clone()
    w[0, 0, 1, 1] = value
    with pytest.raises(InvalidSpecError, match="weight holds NaN"):
        conv2d(X, w, algorithm=algorithm)


def test_module_errors():
    with pytest.raises(InvalidSpecError, match="stride"):
        FFTConv2d(4, 4, 7, stride=2)
    with pytest.raises(InvalidSpecError, match="padding_mode"):
        WinogradConv2d.from_conv(torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(InvalidSpecError, match="m \\+ r - 1"):
        WinogradConv2d.from_conv(torch.nn.Conv2d(4, 4, 11), tile=8)
    with pytest.raises(InvalidSpecError, match="groups"):
        WinogradConv2d(4, 6, 3, groups=4)
    layer = WinogradConv2d(4, 4, 3)
    with pytest.raises(InvalidSpecError, match="input has 5 channels"):
        layer(torch.randn(1, 5, 8, 8))
