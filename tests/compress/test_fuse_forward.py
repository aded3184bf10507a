"""ReLUs called in a user's ``forward`` fused into the convolutions before them
(rewrite.fuse, traced with torch.fx): the function unchanged, the class kept."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leanconv.compress.deploy import Deployment
from leanconv.compress.replace import decompose_layer
from leanconv.nn import ChainConv2d, PackedConv2d
from leanconv.rewrite import fold_batchnorm, fuse_activations

from .test_fuse import _randomise_norms


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))


class UserNet(nn.Module):
    """Written as users write them: ReLUs called in forward, in every spelling."""

    def __init__(self):
        super().__init__()
        self.a = conv_bn(3, 8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = conv_bn(8, 8)
        self.d = nn.Conv2d(8, 8, 1)
        self.e = nn.Conv2d(8, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 1)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.a(x))  # conv + folded batch norm
        x = torch.relu(self.b(x))
        y = self.act(self.c(x))  # an nn.ReLU module called in forward
        x = F.relu(x + y)  # after a sum: not fused
        z = self.d(x)
        x = F.relu(z) + z  # the conv's output used twice: not fused
        x = self.e(x).relu()
        x = F.relu(self.shared(x))
        x = self.shared(x)  # called twice: not fused
        return self.head(x.mean((2, 3)))

    def features(self, x):  # a method of the user's class
        return self.a(x)


def _user_net():
    torch.manual_seed(0)
    return _randomise_norms(UserNet())


def test_relus_called_in_forward_are_fused_and_the_function_kept():
    net = _user_net()
    folded, _, _ = fold_batchnorm(net)
    fused_model, fused = fuse_activations(folded)
    assert sorted(fused) == [f"{n} (relu in forward)" for n in ("a.0", "b", "c.0", "e")]
    # a subclass of the user's class: its name, methods and attributes stay
    assert isinstance(fused_model, UserNet) and type(fused_model).__name__ == "UserNet"
    assert isinstance(fused_model.b, PackedConv2d) and fused_model.b.activation == "relu"
    assert fused_model.d.activation is None and fused_model.shared.activation is None
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        reference = copy.deepcopy(net).double()(x.double())
        assert (fused_model(x).double() - reference).abs().max() < 1e-4 * reference.abs().max()
        copied = copy.deepcopy(fused_model)  # the traced forward follows the copy
        torch.testing.assert_close(copied(x), fused_model(x))
        assert fused_model.features(x).shape == (3, 8, 12, 12)


def test_a_forward_that_does_not_trace_is_left_as_it_is():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > 0:  # data-dependent: no trace
                return F.relu(y)
            return y

    model, fused = fuse_activations(Branchy().eval())
    assert fused == [] and type(model) is Branchy


def test_a_decomposed_chain_stays_one_call_so_its_batch_switch_runs():
    net = _user_net()
    net.e = decompose_layer(net.e, "tucker2", (4, 4), input_size=(12, 12)).module
    deployed = Deployment().deploy(net, chains=["e"])
    assert "e (relu in forward)" in deployed.fused
    chain = deployed.model.e
    assert isinstance(chain, ChainConv2d)
    chain.min_batch = 8
    calls = []
    chain.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        y = deployed.model(x)
        reference = copy.deepcopy(net).double()(x.double())
    assert calls == [1]  # the forward called the switchable chain by its name
    assert (y.double() - reference).abs().max() < 1e-4 * reference.abs().max()


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_written_inplace_is_fused_too(inplace):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv(x), inplace=inplace)

    model, fused = fuse_activations(Net().eval())
    assert fused == ["conv (relu in forward)"]
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = F.relu(F.conv2d(x.double(), model.conv.weight.double(),
                                   model.conv.bias.double(), padding=1))  # fmt: skip
        assert (model(x).double() - expected).abs().max() < 1e-5


def test_a_saved_fused_model_is_fused_again_on_load(tmp_path):
    from leanconv.compress import serialize

    net = _user_net()
    path = serialize.save(net, tmp_path / "m", {}, {}, fuse=True)
    back = serialize.load(path, factory=UserNet)
    assert isinstance(back, UserNet) and back.b.activation == "relu"
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=1e-4, atol=1e-5)


def test_the_forward_is_traced_in_eval_mode():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = F.relu(self.conv(x))
            return y * 2 if self.training else y  # a Python branch on the mode

    model, fused = fuse_activations(Net().train())  # as a factory builds it, in training mode
    assert fused == ["conv (relu in forward)"] and not model.training
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        expected = F.relu(F.conv2d(x, model.conv.weight, model.conv.bias, padding=1))
        torch.testing.assert_close(model(x), expected)  # not doubled: traced in eval mode


class TorchvisionStyle(nn.Module):
    """Batch norms and ReLUs as siblings of the convolutions, called in forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.shared_bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(x))
        x = self.relu(x + y)
        z = self.conv3(x)
        return self.shared_bn(z) + self.shared_bn(x) + z  # called twice, output reused: kept


def test_batch_norms_called_in_forward_are_folded_and_their_relus_fused():
    torch.manual_seed(0)
    net = _randomise_norms(TorchvisionStyle())
    folded, norms, convs = fold_batchnorm(net)
    assert norms == ["bn1", "bn2"] and convs == ["conv1", "conv2"]
    assert type(folded.bn1) is nn.Identity and type(folded.shared_bn) is nn.BatchNorm2d
    deployed, fused = fuse_activations(folded)
    # conv2 takes the residual sum and the ReLU after it; conv3's output is used twice: kept
    assert fused == ["conv2 (residual sum and relu in forward)", "conv1 (relu in forward)"]
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        reference = copy.deepcopy(net).double()(x.double())
        assert (deployed(x).double() - reference).abs().max() < 1e-4 * reference.abs().max()
