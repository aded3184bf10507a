"""A rewrite timed in both of its deployed forms (planning/latency.py, deploy.py): its factors on
oneDNN, and its factors on the narrow direct kernel in one pass; the planner credits the faster,
as the deployment keeps the faster. References: the chain in float64 by ``F.conv2d``, and
forms made slower by known sleeps."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from leanconv.algorithms import native
from leanconv.compress.deploy import Deployment
from leanconv.compress.planning import latency
from leanconv.compress.planning.plan import KEEP
from leanconv.compress.replace import decompose_layer
from leanconv.nn import ChainConv2d, NarrowConv2d

kernels = pytest.mark.skipif(not native.available(), reason=native.status())


def _chain64(chain: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The chain in float64, each factor by ``F.conv2d``."""
    y = x.double()
    for conv in chain:
        y = nn.functional.conv2d(y, conv.weight.double(), None if conv.bias is None else
                                 conv.bias.double(), conv.stride, conv.padding, conv.dilation,
                                 conv.groups)  # fmt: skip
    return y


@kernels
@pytest.mark.parametrize(("method", "rank"), [("spatial_svd", 6), ("tucker2", (8, 6)),
                                              ("low_rank", 5)])  # fmt: skip
def test_the_narrow_form_runs_the_factors_in_one_pass_and_computes_the_chain(
    method, rank, monkeypatch
):
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 16, 3, padding=1).eval()
    chain = decompose_layer(conv, method, rank, input_size=(12, 12)).module.eval()
    x = torch.randn(4, 24, 12, 12)
    form = Deployment().narrow_layer(chain)
    assert isinstance(form, ChainConv2d)
    narrow = [m for m in form if isinstance(m, NarrowConv2d)]
    assert len(narrow) >= 2
    # in one pass: no factor's own forward runs
    calls = []
    original = NarrowConv2d.forward
    monkeypatch.setattr(NarrowConv2d, "forward",
                        lambda self, *a: calls.append(self) or original(self, *a))  # fmt: skip
    with torch.no_grad():
        y = form(x.contiguous(memory_format=torch.channels_last))
    assert calls == []
    ref = _chain64(chain, x)
    assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    # the candidate itself is left as it was: plain convolutions
    assert all(type(m) is nn.Conv2d for m in chain)


@kernels
def test_no_narrow_form_without_a_factor_the_kernel_computes():
    dep = Deployment()
    assert dep.narrow_layer(nn.Conv2d(16, 16, 3, padding=1)) is None  # a kept layer
    reflect = nn.Sequential(nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 3, padding=1,
                                                           padding_mode="reflect"))  # fmt: skip
    form = dep.narrow_layer(reflect)
    assert form is not None and type(form[1]) is not NarrowConv2d  # only the 1x1 is offered


class Sleep(nn.Module):
    def __init__(self, seconds: float, label: str, calls: dict):
        super().__init__()
        self.seconds, self.label, self.calls = seconds, label, calls
        calls.setdefault(label, 0)

    def forward(self, x):
        self.calls[self.label] += 1
        time.sleep(self.seconds)
        return x


def test_a_rewrite_is_credited_with_its_faster_form_and_a_slow_form_is_dropped(monkeypatch):
    calls: dict[str, int] = {}
    forms = {  # sleeps: the times do not depend on the load of the machine
        KEEP: {"packed": Sleep(0.010, "keep", calls)},
        ("tucker2", 8, "direct"): {"packed": Sleep(0.008, "t packed", calls),
                                   "narrow": Sleep(0.004, "t narrow", calls)},
        ("spatial_svd", 4, "direct"): {"packed": Sleep(0.003, "s packed", calls),
                                       "narrow": Sleep(0.009, "s narrow", calls)},
    }  # fmt: skip
    monkeypatch.setattr(latency, "_forms", lambda key, module, deployment: forms[key])
    conv = nn.Conv2d(4, 4, 3)
    modules = {key: conv for key in forms}
    x = torch.randn(1, 4, 6, 6)
    cache: dict = {}
    t = latency.latencies(conv, modules, x, (*x.shape, "contiguous", "plain"), cache, True, 5,
                          Deployment())  # fmt: skip
    assert 3.5 < t[("tucker2", 8, "direct")] < 7.5  # its narrow form, not its 8 ms
    assert 2.5 < t[("spatial_svd", 4, "direct")] < 7.5  # its packed form, not its 9 ms
    assert t[KEEP] > 9.5
    # the slower forms ran only the warm-up and the two first runs
    assert calls["t packed"] == calls["s narrow"] == 3
    assert calls["t narrow"] == calls["s packed"] == calls["keep"] == 3 + 5
    assert len(cache) == 3


def test_the_table_keys_a_rewrite_by_its_forms_and_the_kept_layer_as_before(monkeypatch):
    conv = nn.Conv2d(4, 4, 3)
    shape = (1, 4, 6, 6, "contiguous", "plain")
    rewrite = latency._latency_key(conv, ("tucker2", 8, "direct"), shape, 2)
    keep = latency._latency_key(conv, KEEP, shape, 2)
    monkeypatch.setattr(latency, "FORMS", ("packed",))  # a table measured in one form only
    assert latency._latency_key(conv, ("tucker2", 8, "direct"), shape, 2) != rewrite
    assert latency._latency_key(conv, KEEP, shape, 2) == keep  # one form: reused
