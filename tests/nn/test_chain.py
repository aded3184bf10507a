"""A decomposed layer's chain that runs as the one convolution it composes to below its
``min_batch`` (nn.ChainConv2d), fitted by selection.batch_switch, kept by save and load."""

import pytest
import torch
from torch import nn

from leanconv.bench.timing import Timing
from leanconv.compress import serialize
from leanconv.compress.deploy import Deployment
from leanconv.compress.replace import decompose_layer
from leanconv.cost import count
from leanconv.nn import ChainConv2d, PackedConv2d
from leanconv.selection import batch_switch


def _net(method="tucker2", rank=(4, 3)):
    """A user-style model whose middle convolution is decomposed."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 12, 3, padding=1, stride=2), nn.BatchNorm2d(12), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))  # fmt: skip
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    net.eval()
    net[3] = decompose_layer(net[3], method, rank, input_size=(10, 10)).module
    return net


def test_the_deployed_chain_is_switchable_and_below_min_batch_runs_its_composite(monkeypatch):
    net = _net()
    deployed = Deployment(memory_format="channels_last").deploy(net, chains=["3"])
    assert deployed.chains == ["3"]
    chain = deployed.model[3]
    assert isinstance(chain, ChainConv2d) and chain.min_batch == 1
    assert list(chain.state_dict()) == list(net[3].state_dict())  # the chain's own parameters
    x = torch.randn(6, 3, 10, 10)
    with torch.no_grad():
        reference = net.double()(x.double())
        by_chain = deployed.model(x)
        chain.min_batch = 7
        calls = []
        composite = chain._packed_direct
        monkeypatch.setattr(chain, "_packed_direct",
                            lambda t, *rest: calls.append(t.shape[0]) or composite(t, *rest))  # fmt: skip
        by_composite = deployed.model(x)
    assert calls == [6]  # 6 images < min_batch 7: the composite ran
    assert isinstance(chain.composed(), PackedConv2d) and chain.composed().activation == "relu"
    assert (by_chain.double() - reference).abs().max() < 1e-4
    assert (by_composite.double() - reference).abs().max() < 1e-4
    assert "min_batch=7" in repr(chain)


def test_counting_and_training_see_the_chain():
    net = _net()
    chain = ChainConv2d.from_chain(net[3], min_batch=100)
    x = torch.randn(2, 8, 10, 10)
    assert count(chain, x).total.macs == count(net[3], x).total.macs  # the chain's MACs, not 8x12x9
    y = chain(x)  # autograd records: the chain runs, its factors get gradients
    y.sum().backward()
    assert all(p.grad is not None for p in chain.parameters())


def test_a_changed_weight_rebuilds_the_composite():
    chain = ChainConv2d.from_chain(_net()[3], min_batch=100).eval()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        before = chain(x)
        chain[0].weight.mul_(2)
        after = chain(x)
        chain.min_batch = 1
        assert torch.allclose(after, chain(x), atol=1e-5)
    assert not torch.allclose(before, after, atol=1e-3)


def test_only_composable_chains_are_made_switchable():
    seq = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    assert ChainConv2d.from_chain(seq) is None
    assert Deployment().deploy(nn.Sequential(seq), chains=["0"]).chains == []


@pytest.mark.parametrize("wins_from, expected", [(1, 1), (8, 8), (65, 65)])
def test_fit_min_batch_switches_a_chain_where_its_composite_is_faster(monkeypatch, wins_from,
                                                                      expected):  # fmt: skip
    timed = []

    def compare(fns, **_kwargs):
        if "on" in fns:  # the whole model with and without the switches: they pay
            return {"on": Timing(1.0, 1.0, 1.0, 1), "off": Timing(2.0, 2.0, 2.0, 1)}
        b = fns["fast"].__defaults__[1][0].shape[0]
        timed.append(b)
        fast, direct = (1.0, 2.0) if b >= wins_from else (2.0, 1.0)
        return {"fast": Timing(fast, fast, fast, 1), "direct": Timing(direct, direct, direct, 1)}

    monkeypatch.setattr(batch_switch, "compare", compare)
    deployed = Deployment().deploy(_net(), chains=["3"])
    switched = batch_switch.fit_min_batch(deployed.model, torch.randn(4, 3, 10, 10), (1, 8, 64))
    assert timed == [1, 8, 64]
    assert deployed.model[3].min_batch == expected
    assert switched == ({} if expected == 1 else {"3": expected})


def test_chain_switches_that_do_not_speed_up_the_whole_model_are_dropped(monkeypatch):
    confirmed = []

    def compare(fns, **_kwargs):
        if "on" in fns:  # the model runs slower with the switches on at batch 1
            fns["on"]()
            confirmed.append(dict(switch_state()))
            return {"on": Timing(2.0, 2.0, 2.0, 1), "off": Timing(1.0, 1.0, 1.0, 1)}
        return {"fast": Timing(2.0, 2.0, 2.0, 1), "direct": Timing(1.0, 1.0, 1.0, 1)}  # alone

    monkeypatch.setattr(batch_switch, "compare", compare)
    deployed = Deployment().deploy(_net(), chains=["3"])

    def switch_state():
        return {"3": deployed.model[3].min_batch}

    switched = batch_switch.fit_min_batch(deployed.model, torch.randn(4, 3, 10, 10), (1, 8))
    assert confirmed == [{"3": 9}]  # timed with the switch active at batch 1 (the fitted 9)
    assert deployed.model[3].min_batch == 1 and switched == {}


def test_a_saved_chain_switch_is_rebuilt_on_load(tmp_path):
    net = _net("spatial_svd", 3)
    path = serialize.save(net, tmp_path / "m", {}, {"3": net[3]}, min_batch={"3": 9}, fuse=True)
    back = serialize.load(path, factory=_net)
    assert isinstance(back[3], ChainConv2d) and back[3].min_batch == 9
    x = torch.randn(3, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=1e-4, atol=1e-5)
    plain = serialize.load(path, factory=_net, algorithms=False)
    assert type(plain[3]) is nn.Sequential


def test_every_decomposed_chain_loads_as_deployed(tmp_path, monkeypatch):
    """A decomposed chain with no recorded ``min_batch`` loads as a ``ChainConv2d`` too (as the
    deployment ran it), so that its two narrow factors run in one pass after loading."""
    from leanconv.algorithms import narrow, native

    net = _net("spatial_svd", 3)
    path = serialize.save(net, tmp_path / "m", {}, {"3": net[3]}, fuse=True,
                          algorithms={"3.0": "narrow", "3.1": "narrow"})  # fmt: skip
    back = serialize.load(path, factory=_net)
    assert isinstance(back[3], ChainConv2d) and back[3].min_batch == 1
    x = torch.randn(3, 3, 10, 10)
    pairs = []
    real = narrow.conv2d_chain
    monkeypatch.setattr(narrow, "conv2d_chain", lambda *a: pairs.append(1) or real(*a))
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=1e-4, atol=1e-5)
    assert pairs == ([1] if native.available() else [])


def test_a_min_batch_that_names_no_switchable_layer_is_refused(tmp_path):
    from leanconv.errors import LeanconvError

    net = _net()
    path = serialize.save(net, tmp_path / "m", {}, {"3": net[3]}, min_batch={"0": 4})
    with pytest.raises(LeanconvError, match=r"min_batch\['0'\] names no fast layer"):
        serialize.load(path, factory=_net)
