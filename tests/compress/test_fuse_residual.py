"""A residual block's sum and ReLU, written in a user's ``forward``, computed by the convolution
before them (rewrite.residual: the narrow kernel's output pass, an in-place pass on the other
layers' fresh output): the function unchanged, checked against the model in
float64."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leanconv.algorithms import narrow as narrow_kernel
from leanconv.algorithms import native
from leanconv.compress.deploy import Deployment
from leanconv.compress.replace import decompose_layer
from leanconv.nn import ChainConv2d, FFTConv2d, NarrowConv2d, PackedConv2d, WinogradConv2d
from leanconv.rewrite import fuse_activations
from leanconv.rewrite.residual import residual_sums

from .test_fuse import _randomise_norms


class ResNetStyle(nn.Module):
    """The sums users write: ``out += identity`` then a ReLU, ``a + b`` without one, a shortcut
    convolution on the left, a broadcast sum, a conv output used twice."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 1, stride=2)
        self.conv4 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.gate = nn.Conv2d(32, 32, 1)
        self.twice = nn.Conv2d(32, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(x))
        out += x
        out = F.relu(out)
        y = out + self.conv3(out)  # a sum with no ReLU after it
        z = torch.relu(self.down(y) + self.conv4(y))  # the shortcut convolution first
        g = self.gate(z) + z.mean((2, 3), keepdim=True)  # broadcast: PyTorch adds
        t = self.twice(g)
        return self.fc((t + t.relu()).mean((2, 3)))  # used twice: kept


def _net():
    torch.manual_seed(0)
    return _randomise_norms(ResNetStyle())


def _reference(net, x):
    with torch.no_grad():
        return copy.deepcopy(net).double()(x.double())


def _close(got, want, tol=1e-5):
    assert (got.double() - want).abs().max() <= tol * want.abs().max()


def test_sums_are_fused_into_the_convolutions_before_them(monkeypatch):
    net = _net()
    deployed = Deployment().deploy(net)
    fused = [f for f in deployed.fused if "residual" in f]
    assert fused == [
        "conv2 (residual sum and relu in forward)",
        "conv3 (residual sum in forward)",
        "down (residual sum and relu in forward)",
        "gate (residual sum in forward)",
    ]
    assert residual_sums(deployed.fused) == 4 and len(deployed.fused) > 4  # the ReLUs apart
    model = deployed.model
    assert type(model).__name__ == "ResNetStyle" and isinstance(model, ResNetStyle)
    assert model.conv2.activation == "relu" and model.conv3.activation is None
    assert type(model.twice) is PackedConv2d and model.twice.activation is None
    calls = []
    real = PackedConv2d.forward
    monkeypatch.setattr(PackedConv2d, "forward",
                        lambda self, x, r=None: calls.append(r is not None) or real(self, x, r))  # fmt: skip
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        got = model(x.contiguous(memory_format=torch.channels_last))
    _close(got, _reference(net, x))
    assert sum(calls) == 4  # conv2, conv3, down and gate were given their sums


def test_the_fused_forward_still_differentiates():
    net = _net()
    model = Deployment().deploy(net).model
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    model(x).square().sum().backward()
    xr = x.detach().double().requires_grad_()
    copy.deepcopy(net).double().eval()(xr).square().sum().backward()
    _close(x.grad, xr.grad, 1e-4)


@pytest.mark.parametrize(
    ("algorithm", "kind"), [("winograd4", WinogradConv2d), ("narrow", NarrowConv2d)]
)
def test_a_fast_layer_takes_the_sum(algorithm, kind):
    net = _net()
    deployed = Deployment().deploy(net, {"conv2": algorithm})
    assert type(deployed.model.conv2) is kind and deployed.model.conv2.activation == "relu"
    assert "conv2 (residual sum and relu in forward)" in deployed.fused
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        _close(deployed.model(x), _reference(net, x))


@pytest.mark.parametrize("below", [False, True])
def test_a_decomposed_chain_takes_the_sum_and_keeps_its_batch_switch(below):
    net = _net()
    net.conv3 = decompose_layer(net.conv3, "tucker2", (6, 6), input_size=(16, 16)).module
    deployed = Deployment().deploy(net, chains=["conv3"])
    assert "conv3 (residual sum in forward)" in deployed.fused
    chain = deployed.model.conv3
    assert isinstance(chain, ChainConv2d) and deployed.chains == ["conv3"]
    chain.min_batch = 4 if below else 1
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        _close(deployed.model(x), _reference(net, x))


def _without_norms():
    net = ResNetStyle()
    net.bn1, net.bn2 = nn.Identity(), nn.Identity()
    return net


def test_a_saved_model_is_fused_again_on_load(tmp_path):
    from leanconv.compress import serialize

    torch.manual_seed(0)
    net = _without_norms()
    path = serialize.save(net, tmp_path / "m", {}, {}, fuse=True)
    back = serialize.load(path, factory=_without_norms)
    assert isinstance(back, ResNetStyle) and back.conv2.activation == "relu"
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        _close(back(x), _reference(net, x))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_packed_layer_with_a_residual_matches_float64(stride, groups, layout):
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 12, 3, stride=stride, padding=1, groups=groups)
    layer = PackedConv2d.from_conv(conv, activation="relu").eval()
    x = torch.randn(2, 8, 30, 30).contiguous(memory_format=layout)
    size = (30 + 2 - 3) // stride + 1
    residual = torch.randn(2, 12, size, size).contiguous(memory_format=layout)
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), stride, 1, 1, groups)
    for r in (residual, residual[:1, :, :1]):  # the output's shape, and broadcast as + does
        with torch.inference_mode():
            got = layer(x, r)
        _close(got, F.relu(want + r.double()))


def _last(kind: str) -> nn.Module:
    conv = nn.Conv2d(6, 12, (1, 3), padding=(0, 1))
    if kind == "plain":
        return conv
    kinds = {"packed": PackedConv2d, "narrow": NarrowConv2d, "winograd": WinogradConv2d,
             "fft": FFTConv2d}  # fmt: skip
    return kinds[kind].from_conv(conv)


@pytest.mark.parametrize("kind", ["plain", "packed", "narrow", "winograd", "fft"])
@pytest.mark.parametrize("below_min_batch", [False, True])
@pytest.mark.parametrize("shape", ["same", "broadcast"])
def test_a_chain_gives_the_residual_to_its_last_layer(kind, below_min_batch, shape):
    """``chain(x, r)`` is ``act(chain(x) + r)`` with the last layer's activation, whatever that
    layer is, run as a chain (its narrow factors in one pass) or as its composite, and for a residual
    of the output's shape or a broadcast one."""
    torch.manual_seed(4)
    first = NarrowConv2d.from_conv(nn.Conv2d(12, 6, (3, 1), padding=(1, 0), bias=False))
    last = _last(kind)
    relu = kind != "plain"
    if relu:
        last.activation = "relu"
    chain = ChainConv2d(first, nn.Identity(), last).eval()
    chain.min_batch = 8 if below_min_batch else 1
    x = torch.randn(3, 12, 9, 13).contiguous(memory_format=torch.channels_last)
    r = torch.randn(3, 12, 9, 13) if shape == "same" else torch.randn(12, 1, 1)
    want = F.conv2d(F.conv2d(x.double(), first.weight.double(), None, 1, (1, 0)),
                    last.weight.double(), last.bias.double(), 1, (0, 1)) + r.double()  # fmt: skip
    want = want.relu() if relu else want
    with torch.inference_mode():
        _close(chain(x, r), want)


@pytest.mark.skipif(not native.available(), reason=native.status())
def test_a_narrow_pair_takes_the_sum_in_its_pass(monkeypatch):
    """The narrow factors in one pass are given the residual: no separate sum runs."""
    torch.manual_seed(5)
    first = NarrowConv2d.from_conv(nn.Conv2d(16, 8, (3, 1), padding=(1, 0), bias=False))
    second = NarrowConv2d.from_conv(nn.Conv2d(8, 16, (1, 3), padding=(0, 1)), activation="relu")
    chain = ChainConv2d(first, second).eval()
    seen = []
    real = narrow_kernel.conv2d_chain
    monkeypatch.setattr(narrow_kernel, "conv2d_chain",
                        lambda *a: seen.append(a[2] is not None) or real(*a))  # fmt: skip
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    r = torch.randn(2, 16, 12, 12)
    with torch.inference_mode():
        got = chain(x, r)
    want = F.conv2d(F.conv2d(x.double(), first.weight.double(), None, 1, (1, 0)),
                    second.weight.double(), second.bias.double(), 1, (0, 1))  # fmt: skip
    _close(got, (want + r.double()).relu())
    assert seen == [True]


@pytest.mark.parametrize("kind", [NarrowConv2d, WinogradConv2d])
def test_a_layer_with_a_residual_trains_through_pytorch(kind):
    """While autograd records, the sum is PyTorch's and gradients reach the residual."""
    torch.manual_seed(6)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    layer = kind.from_conv(conv)
    layer.activation = "relu"
    x = torch.randn(2, 8, 5, 5)
    r = torch.randn(2, 16, 5, 5, requires_grad=True)
    layer(x, r).sum().backward()
    rr = r.detach().double().requires_grad_()
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1) + rr
    F.relu(want).sum().backward()
    _close(r.grad, rr.grad)


@pytest.mark.skipif(not native.available(), reason=native.status())
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_a_winograd_layer_takes_the_sum_in_its_output_transform(monkeypatch, layout):
    """Both compiled paths (one pass on channels-last inputs, three stages otherwise) are given
    the residual: no separate sum runs."""
    torch.manual_seed(7)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    layer = WinogradConv2d.from_conv(conv)
    layer.activation = "relu"
    seen = []
    for name in ("fused", "output_transform"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, real=real, **k: seen.append(a[-1] is not None)
                            or real(*a, **k))  # fmt: skip
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=layout)
    r = torch.randn(2, 16, 12, 12)
    with torch.inference_mode():
        got = layer(x, r)
    want = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    _close(got, (want + r.double()).relu())
    assert seen and all(seen)


def test_fuse_activations_on_a_bare_module_fuses_no_sum():
    layer, fused = fuse_activations(nn.Conv2d(3, 4, 3))
    assert type(layer) is PackedConv2d and fused == []
