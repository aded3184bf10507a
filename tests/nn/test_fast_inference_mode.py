"""The fast layers built under ``torch.inference_mode()`` run inside and outside it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leanconv.algorithms import winograd as _winograd
from leanconv.nn.fast import FFTConv2d, PackedConv2d, WinogradConv2d

LAYERS = [WinogradConv2d, FFTConv2d, PackedConv2d]


def _conv():
    torch.manual_seed(0)
    return nn.Conv2d(3, 5, 3, padding=1).double()


def _reference(conv, x):
    return F.conv2d(x, conv.weight, conv.bias, padding=1)


@pytest.mark.parametrize("cls", LAYERS)
def test_from_conv_under_inference_mode(cls):
    conv = _conv()
    x = torch.randn(2, 3, 10, 9, dtype=torch.float64)
    with torch.inference_mode():
        layer = cls.from_conv(conv)
        inside = layer(x)
    with torch.no_grad():
        want = _reference(conv, x)
    torch.testing.assert_close(inside, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x), want, rtol=1e-10, atol=1e-10)  # autograd recording
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()
    assert layer.weight.grad is not None and xg.grad is not None
    with torch.no_grad():
        layer.weight.mul_(2)  # the cached transform follows the weight
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), 2 * want - conv.bias.view(1, -1, 1, 1), rtol=1e-10,
                                   atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("cls", LAYERS)
def test_constructed_under_inference_mode(cls):
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        layer = cls(3, 4, 3, padding=1, dtype=torch.float64)
        inside = layer(x)
    assert not layer.weight.is_inference() and layer.weight.requires_grad
    with torch.no_grad():
        want = F.conv2d(x, layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(inside, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x), want, rtol=1e-10, atol=1e-10)


def test_inference_mode_input_after_normal_use():
    conv = _conv()
    layer = WinogradConv2d.from_conv(conv)
    x = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    with torch.inference_mode():
        got = layer(x)
    torch.testing.assert_close(got, _reference(conv, x).detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [WinogradConv2d, FFTConv2d])
def test_everything_under_inference_mode(cls):
    with torch.inference_mode():
        conv = _conv()  # its weight is an inference tensor
        x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
        layer = cls.from_conv(conv)
        torch.testing.assert_close(layer(x), _reference(conv, x), rtol=1e-10, atol=1e-10)
        layer.weight.mul_(-1)  # changed in place under inference mode: the cache follows
        want = F.conv2d(x, -conv.weight, conv.bias, padding=1)
        torch.testing.assert_close(layer(x), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tile", [3, 5])
def test_first_run_under_inference_mode_then_trained(tile):
    """The float32 data path's transform matrices are first made under inference mode here (the
    filter's are float64); a later call that autograd records must still run and differentiate
    (a deployed model timed under ``inference_mode`` and then fine-tuned)."""
    _winograd._matrices.cache_clear()  # made afresh, whatever ran before in this process
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 4, 3, padding=1)
    layer = WinogradConv2d.from_conv(conv, tile=tile)
    x = torch.randn(2, 6, 11, 13)
    with torch.inference_mode():
        layer(x)
    xg = x.clone().requires_grad_()
    y = layer(xg)
    y.square().sum().backward()
    xr = x.double().requires_grad_()
    yr = F.conv2d(xr, conv.weight.double(), conv.bias.double(), padding=1)
    yr.square().sum().backward()
    torch.testing.assert_close(y.double(), yr.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xg.grad.double(), xr.grad, rtol=1e-3, atol=1e-3)
