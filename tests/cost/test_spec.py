"""ConvSpec geometry against what torch.nn.functional computes."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from leanconv import ConvSpec
from leanconv.errors import InvalidSpecError


@st.composite
def conv_geometries(draw, transposed=False):
    ndim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    s = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    d = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    p = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
    size = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    op = tuple(draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d)) if transposed else 0
    return dict(in_channels=c_in, out_channels=c_out, kernel_size=k, input_size=size, stride=s,
                padding=p, dilation=d, groups=groups, transposed=transposed, output_padding=op,
                batch=draw(st.integers(1, 2)))  # fmt: skip


def _torch_output(kw):
    x = torch.zeros(kw["batch"], kw["in_channels"], *kw["input_size"], device="meta")
    g = kw["groups"]
    ndim = len(kw["input_size"])
    if kw["transposed"]:
        w = torch.zeros(
            kw["in_channels"], kw["out_channels"] // g, *kw["kernel_size"], device="meta"
        )
        fn = [F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d][ndim - 1]
        return fn(x, w, None, kw["stride"], kw["padding"], kw["output_padding"], g, kw["dilation"])
    w = torch.zeros(kw["out_channels"], kw["in_channels"] // g, *kw["kernel_size"], device="meta")
    fn = [F.conv1d, F.conv2d, F.conv3d][ndim - 1]
    return fn(x, w, None, kw["stride"], kw["padding"], kw["dilation"], g)


@given(conv_geometries())
def test_output_shape_matches_torch_direct(kw):
    try:
        y = _torch_output(kw)
    except RuntimeError:
        with pytest.raises(InvalidSpecError):
            ConvSpec(**kw)
        return
    assert ConvSpec(**kw).output_shape == tuple(y.shape)


@given(conv_geometries(transposed=True))
def test_output_shape_matches_torch_transposed(kw):
    try:
        y = _torch_output(kw)
        ok = y.numel() > 0
    except RuntimeError:
        ok = False
    if not ok:
        with pytest.raises(InvalidSpecError):
            ConvSpec(**kw)
        return
    assert ConvSpec(**kw).output_shape == tuple(y.shape)


def test_same_padding_matches_torch_for_even_kernel():
    spec = ConvSpec(2, 3, (4, 5), input_size=(7, 9), padding="same", dilation=(2, 1))
    x = torch.zeros(1, 2, 7, 9, device="meta")
    w = torch.zeros(3, 2, 4, 5, device="meta")
    assert spec.output_shape == tuple(F.conv2d(x, w, padding="same", dilation=(2, 1)).shape)
    assert spec.padding == ((3, 3), (2, 2))
    odd_total = ConvSpec(1, 1, 4, input_size=(8, 8), padding="same")
    assert odd_total.padding == ((1, 2), (1, 2))  # PyTorch puts the extra one on the high side


def test_asymmetric_padding():
    spec = ConvSpec(1, 1, 3, input_size=(5, 5), padding=((0, 2), (1, 0)))
    x = F.pad(torch.zeros(1, 1, 5, 5), (1, 0, 0, 2))
    assert spec.output_shape == tuple(F.conv2d(x, torch.zeros(1, 1, 3, 3)).shape)
    assert spec.symmetric_padding is None


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(in_channels=3, out_channels=8, kernel_size=3, input_size=(8, 8), groups=2), "groups=2"),
        (dict(in_channels=4, out_channels=6, kernel_size=3, input_size=(8, 8), groups=4), "out_channels=6"),
        (dict(in_channels=1, out_channels=1, kernel_size=5, input_size=(3, 3)), "larger than the padded"),
        (dict(in_channels=1, out_channels=1, kernel_size=3, input_size=(8, 8), stride=2, padding="same"),
         "stride 1"),
        (dict(in_channels=0, out_channels=1, kernel_size=3, input_size=(8, 8)), "in_channels"),
        (dict(in_channels=1, out_channels=1, kernel_size=(3, 3, 3), input_size=(8, 8)), "kernel_size"),
    ],
)  # fmt: skip
def test_invalid_specs_name_the_argument(kw, message):
    with pytest.raises(InvalidSpecError, match=message):
        ConvSpec(**kw, name="block.conv")


def test_error_names_the_layer():
    with pytest.raises(InvalidSpecError, match="layer 'features.3'"):
        ConvSpec(3, 8, 3, input_size=(8, 8), groups=2, name="features.3")


def test_from_module_matches_module():
    conv = torch.nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    spec = ConvSpec.from_module(conv, (2, 4, 17, 19))
    assert spec.output_shape == tuple(conv(torch.zeros(2, 4, 17, 19)).shape)
    assert spec.weight_shape == tuple(conv.weight.shape)
    assert spec.stride == (2, 1)  # not (2, 2): a peer library's known bug
