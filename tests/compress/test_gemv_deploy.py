"""The streaming matrix-vector kernel in the deployment of a compressed model: offered to every
``nn.Linear``, timed against ``F.linear`` at the batch sizes it runs at, turned back where it lost
or never ran, saved and loaded again. Reference: the plain model in float64."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import leanconv
from leanconv.algorithms import gemv, native
from leanconv.compress import serialize
from leanconv.compress.algorithms import gemv_candidates, with_algorithm
from leanconv.compress.deploy import Deployment, settle_gemv
from leanconv.compress.model_json import validate
from leanconv.nn import GemvLinear
from leanconv.selection.batch_switch import gemv_wins

pytestmark = pytest.mark.skipif(not native.available(), reason=native.status())


class _Tokens(nn.Module):
    """A Linear applied to 16 positions per image: at batch 1 it already has 16 rows."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(x.flatten(2).transpose(1, 2)).mean(1)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Sequential(nn.Flatten(), nn.Linear(128, 300), nn.ReLU(), nn.Linear(300, 10)),
    ).eval()  # fmt: skip


def _close(y: torch.Tensor, ref: torch.Tensor) -> None:
    assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_candidates_are_the_plain_linear_layers():
    net = nn.Sequential(_net(), _Tokens())
    found = gemv_candidates(net)
    assert found == {"0.4.1": "gemv", "0.4.3": "gemv", "1.proj": "gemv"}
    assert type(with_algorithm(net[0][4][1], "gemv")) is GemvLinear
    assert with_algorithm(net[0][0], "gemv") is None  # a convolution has no such form


def test_wins_cover_the_sizes_it_runs_at():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), _Tokens(), nn.Linear(8, 8)).eval()
    deployed = Deployment().deploy(net, gemv_candidates(net))
    x = torch.randn(4, 3, 4, 4)
    wins = gemv_wins(deployed.model, x, [1, 4, 64], repeats=3)
    # sizes 1 and 4 of the deployed ones, and MAX_ROWS; never 64 (F.linear runs there)
    assert set(wins["2"]) == {1, 4, gemv.MAX_ROWS}
    assert all(isinstance(v, bool) for v in wins["2"].values())
    assert wins["1.proj"] == {}  # 16 rows per image: the kernel never runs


def test_settled_saved_and_loaded(tmp_path):
    net = _net()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x.double())
    deployed = Deployment().deploy(net, gemv_candidates(net))
    assert deployed.algorithms == {"4.1": "gemv", "4.3": "gemv"}
    assert all(type(deployed.model.get_submodule(n)) is GemvLinear for n in ("4.1", "4.3"))
    with torch.no_grad():
        _close(deployed.model(x[:1]), ref[:1])  # one row: the kernel
        _close(deployed.model(x), ref)
    # one layer won everywhere, the other lost at the largest size it runs at
    kept = settle_gemv(deployed, {"4.1": {1: True, 8: True}, "4.3": {1: True, 8: False}})
    assert kept == ["4.1"] and deployed.algorithms == {"4.1": "gemv"}
    assert type(deployed.model.get_submodule("4.3")) is nn.Linear
    with torch.no_grad():
        _close(deployed.model(x), ref)
    replaced = {n: nn.Identity() for n in deployed.folded_norms}
    replaced.update({n: deployed.folded.get_submodule(n) for n in deployed.folded_convs})
    path = serialize.save(deployed.folded, tmp_path / "m", {}, replaced, force=True,
                          algorithms=deployed.algorithms, fuse=True)  # fmt: skip
    description = json.loads((path / "model.json").read_text())
    assert validate(description)["algorithms"] == {"4.1": "gemv"}
    back = leanconv.load(path, factory=lambda: _net())
    assert type(back.get_submodule("4.1")) is GemvLinear
    assert type(back.get_submodule("4.3")) is nn.Linear
    with torch.no_grad():
        _close(back(x[:2]), ref[:2])


class _Functional(nn.Module):
    """ReLUs called in forward, as user models write them, around a fully connected head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 16, 64)
        self.fc2 = nn.Linear(64, 4)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def test_relus_in_forward_still_fuse_with_the_kernel_on_linear_layers():
    torch.manual_seed(0)
    net = _Functional().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x.double())
    deployed = Deployment().deploy(net, gemv_candidates(net))
    assert deployed.algorithms == {"fc1": "gemv", "fc2": "gemv"}
    assert deployed.fused, "the forward must still trace with GemvLinear layers in it"
    with torch.no_grad():
        _close(deployed.model(x), ref)


def test_a_layer_that_never_ran_is_turned_back():
    net = nn.Sequential(_Tokens()).eval()
    deployed = Deployment().deploy(net, gemv_candidates(net))
    assert settle_gemv(deployed, {"0.proj": {}}) == []
    assert type(deployed.model.get_submodule("0.proj")) is nn.Linear
    assert deployed.algorithms == {}


def test_gemv_linear_back_to_linear_keeps_dtype_and_weights():
    layer = nn.Linear(5, 3).double()
    back = GemvLinear.from_linear(layer).as_linear()
    assert type(back) is nn.Linear and back.weight.dtype == torch.float64
    assert torch.equal(back.weight, layer.weight) and torch.equal(back.bias, layer.bias)
