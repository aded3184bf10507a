"""A decomposed layer's chain composed into the one convolution it computes
(decompose.compose), checked against the chain itself run by F.conv2d in float64."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from leanconv.compress.replace import decompose_layer
from leanconv.decompose.compose import chain_convolutions, compose_chain

METHODS = {"tucker2": (6, 5), "spatial_svd": 5, "low_rank": 4, "cp": 6, "tt": (4, 5, 4),
           "depthwise": 1}  # fmt: skip


def _composite_output(chain: nn.Module, x):
    c = compose_chain(chain_convolutions(chain))
    assert c is not None
    return F.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups), c


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(sorted(METHODS)),
    kernel=st.sampled_from([(3, 3), (5, 5), (3, 5), (1, 1)]),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
    size=st.tuples(st.integers(7, 12), st.integers(7, 12)),
    seed=st.integers(0, 2**16),
)
def test_every_method_composes_exactly(method, kernel, stride, dilation, groups, bias, size, seed):
    if method == "depthwise" and groups > 1:
        groups = 1  # a depthwise factorisation takes groups=1 layers only
    torch.manual_seed(seed)
    padding = (dilation * (kernel[0] - 1) // 2, dilation * (kernel[1] - 1) // 2)
    conv = nn.Conv2d(16, 24, kernel, stride, padding, dilation, groups, bias=bias).double()
    d = decompose_layer(conv, method, METHODS[method], input_size=size)
    chain = d.module.double()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    y, composite = _composite_output(chain, x)
    reference = chain(x)
    assert y.shape == reference.shape
    assert (y - reference).abs().max() <= 1e-12 * reference.abs().max().clamp_min(1)
    # grouped layers stay grouped: the composite costs what the original layer did
    assert composite.groups == groups


def test_the_composite_of_a_grouped_tucker_layer_keeps_its_groups():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1, groups=4).double()
    chain = decompose_layer(conv, "tucker2", (4, 3), input_size=(9, 9)).module.double()
    x = torch.randn(1, 16, 9, 9, dtype=torch.float64)
    y, composite = _composite_output(chain, x)
    assert composite.groups == 4 and tuple(composite.weight.shape) == (24, 4, 3, 3)
    assert torch.allclose(y, chain(x), rtol=0, atol=1e-12)


def test_chains_that_do_not_compose_exactly_are_refused():
    a, b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, bias=False)
    assert compose_chain([a, b]) is None  # two kernels along each axis (and a bias before)
    a.bias = None
    assert compose_chain([a, b]) is None  # two kernels along each axis
    one = nn.Conv2d(4, 4, 1, bias=True)
    assert compose_chain([one, nn.Conv2d(4, 4, 3, padding=1)]) is None  # bias before a padding
    assert compose_chain([nn.Conv2d(4, 4, 1, stride=2, bias=False), b]) is None  # stride, kernel
    assert compose_chain([nn.Conv2d(4, 4, 3, padding="same", bias=False), one]) is None
    assert chain_convolutions(nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), one)) is None
    assert chain_convolutions(nn.Conv2d(4, 4, 1)) is None
    assert chain_convolutions(nn.Sequential(one)) is None  # one convolution is no chain


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_composite_convolution_keeps_dtype_and_device(dtype):
    chain = nn.Sequential(nn.Conv2d(4, 3, (3, 1), padding=(1, 0), bias=False),
                          nn.Conv2d(3, 5, (1, 3), padding=(0, 1))).to(dtype)  # fmt: skip
    conv = compose_chain(list(chain)).conv(chain[1].weight)
    assert conv.weight.dtype == dtype and conv.weight.device == chain[1].weight.device
    x = torch.randn(2, 4, 6, 7, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(conv(x), chain(x), atol=tol, rtol=0)
