"""The narrow direct kernel in the deployment of a compressed model: offered to every factor of
a decomposed layer, fitted by batch size against oneDNN, turned back where it lost, saved and
loaded again. Reference: the plain model in float64."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import leanconv
from leanconv.algorithms import native
from leanconv.compress import serialize
from leanconv.compress.algorithms import narrow_candidates
from leanconv.compress.deploy import Deployment, settle_lost
from leanconv.compress.replace import decompose_layer
from leanconv.nn import ChainConv2d, NarrowConv2d, PackedConv2d
from leanconv.selection.batch_switch import fit_min_batch

pytestmark = pytest.mark.skipif(not native.available(), reason=native.status())


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, padding=1),
    ).eval()  # fmt: skip
    net[3] = decompose_layer(net[3], "spatial_svd", 4, input_size=(10, 10)).module
    net[6] = decompose_layer(net[6], "tucker2", (8, 8), input_size=(10, 10)).module
    return net


def _close(y: torch.Tensor, ref: torch.Tensor) -> None:
    assert (y.double() - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_candidates_are_the_factors_of_decomposed_layers():
    net = _net()
    found = narrow_candidates(net, ["3", "6"])
    assert set(found) == {"3.0", "3.1", "6.0", "6.1", "6.2"}
    assert set(found.values()) == {"narrow"}
    assert "0" not in narrow_candidates(net, ["3"])  # kept layers are not offered


def test_a_core_the_plan_runs_by_winograd_keeps_it():
    """A Tucker-2 core that the plan gives Winograd is not offered the narrow kernel (which is
    measured against oneDNN only): the deployment runs it by Winograd, its 1x1s narrow."""
    from leanconv.nn import WinogradConv2d

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1)).eval()
    net[0] = decompose_layer(net[0], "tucker2", (16, 16), input_size=(12, 12)).module
    planned = {"0": "winograd4"}
    found = narrow_candidates(net, ["0"], planned)
    assert set(found) == {"0.0", "0.2"}
    deployed = Deployment().deploy(net, planned | found, chains=["0"])
    assert type(deployed.model.get_submodule("0.1")) is WinogradConv2d
    x = torch.randn(2, 32, 12, 12)
    with torch.no_grad():
        _close(deployed.model(x), copy.deepcopy(net).double()(x.double()))


def test_fitted_settled_saved_and_loaded(tmp_path):
    net = _net()
    x = torch.randn(4, 3, 10, 10)
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x.double())
    chains = ["3", "6"]
    deployed = Deployment().deploy(net, narrow_candidates(net, chains), chains=chains)
    layers = {n for n, a in deployed.algorithms.items() if a == "narrow"}
    assert layers == {"3.0", "3.1", "6.0", "6.1", "6.2"}
    assert all(type(deployed.model.get_submodule(n)) is NarrowConv2d for n in layers)
    with torch.no_grad():
        _close(deployed.model(x), ref)
    deployed.min_batch = fit_min_batch(deployed.model, x, [1, 4], repeats=3)
    # force one layer to have lost everywhere: it must become a packed layer again
    deployed.model.get_submodule("6.1").min_batch = 5
    deployed.min_batch["6.1"] = 5
    kept = settle_lost(deployed, [1, 4])
    assert "6.1" not in kept and "6.1" not in deployed.algorithms
    assert "6.1" not in deployed.min_batch
    assert type(deployed.model.get_submodule("6.1")) is PackedConv2d
    assert set(kept) == {n for n, a in deployed.algorithms.items() if a == "narrow"}
    with torch.no_grad():
        _close(deployed.model(x), ref)
    # described as the pipeline saves it: the chains, the folded layers, the norms gone
    replaced = {n: deployed.folded.get_submodule(n) for n in [*chains, *deployed.folded_convs]}
    replaced.update({n: nn.Identity() for n in deployed.folded_norms})
    path = serialize.save(deployed.folded, tmp_path / "m", {}, replaced, force=True,
                          algorithms=deployed.algorithms, min_batch=deployed.min_batch,
                          fuse=True)  # fmt: skip
    recorded = json.loads((path / "model.json").read_text())["algorithms"]
    assert {n for n, a in recorded.items() if a == "narrow"} == set(kept)
    back = leanconv.load(path, factory=lambda: _net())
    for name in kept:
        layer = back.get_submodule(name)
        assert type(layer) is NarrowConv2d
        assert layer.min_batch == deployed.min_batch.get(name, 1)
    assert type(back.get_submodule("6.1")) is PackedConv2d
    with torch.no_grad():
        _close(back(x), ref)


def test_measured_deployment_as_the_loop_and_the_pipeline_use_it():
    """``Deployment.measured``: the narrow kernel offered to the factors and settled, the
    streaming kernel to the Linear layers; chains switchable only when asked (the pipeline, not
    the closed loop: there they always run as chains, their narrow factors in one pass as deployed).
    The function is the model's either way."""
    net = nn.Sequential(*_net(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5)).eval()
    x = torch.randn(4, 3, 10, 10)
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x.double())
    dep = Deployment()
    loop = dep.measured(net, {}, ["3", "6"], x, [4], repeats=3, switchable=False)
    final = dep.measured(net, {}, ["3", "6"], x, [1, 4], repeats=3)
    assert loop.chains == final.chains == ["3", "6"]
    loop_chains = [m for m in loop.model.modules() if isinstance(m, ChainConv2d)]
    assert len(loop_chains) == 2 and all(m.min_batch == 1 for m in loop_chains)
    assert not set(loop.min_batch) & {"3", "6"}
    for deployed in (loop, final):
        narrow = {n for n, a in deployed.algorithms.items() if a == "narrow"}
        assert narrow <= {"3.0", "3.1", "6.0", "6.1", "6.2"}
        # what was kept runs the kernel, what lost was turned back into a packed layer
        for name in ("3.0", "3.1", "6.0", "6.1", "6.2"):
            layer = deployed.model.get_submodule(name)
            assert type(layer) is (NarrowConv2d if name in narrow else PackedConv2d), name
        assert set(deployed.algorithms.values()) <= {"narrow", "gemv"}
        with torch.no_grad():
            _close(deployed.model(x), ref)


def test_a_winograd_layer_that_lost_at_every_size_runs_onednn_at_every_size():
    """A planned Winograd layer whose algorithm lost at every measured batch size becomes a
    packed layer: no batch size, measured or not, runs the algorithm; one that won somewhere
    keeps it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1)).eval()  # fmt: skip
    x = torch.randn(4, 16, 10, 10)
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x.double())
    deployed = Deployment().deploy(net, {"0": "winograd4", "2": "winograd4"})
    deployed.min_batch = {"0": 5, "2": 4}  # lost everywhere at (1, 4); won from 4 on
    deployed.model.get_submodule("0").min_batch = 5
    deployed.model.get_submodule("2").min_batch = 4
    kept = settle_lost(deployed, [1, 4])
    assert kept == ["2"] and deployed.algorithms == {"2": "winograd4"}
    assert deployed.min_batch == {"2": 4}
    assert type(deployed.model.get_submodule("0")) is PackedConv2d
    with torch.no_grad():
        _close(deployed.model(x), ref)
        _close(deployed.model(torch.cat([x] * 4)), torch.cat([ref] * 4))  # 16 images
