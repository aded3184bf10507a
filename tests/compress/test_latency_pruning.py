"""Dominated candidates pruned before they are fully timed (planning/latency.py): a candidate
whose first run is much slower than the kept layer is slower and less accurate than keeping it,
so it is run once, keeps that measurement, and is not timed again."""

import time

import torch
from torch import nn

from leanconv.compress.deploy import Deployment
from leanconv.compress.planning import latency
from leanconv.compress.planning.plan import KEEP

CALLS: dict[str, int] = {}  # by label: the deployment form is a copy of the module


class Counted(nn.Module):
    """The layer, made ``delay`` seconds slower, counting its calls."""

    def __init__(self, layer: nn.Module, delay: float, label: str):
        super().__init__()
        self.layer, self.delay, self.label = layer, delay, label
        CALLS[label] = 0

    def forward(self, x):
        CALLS[self.label] += 1
        if self.delay:
            time.sleep(self.delay)
        return self.layer(x)


def _modules(conv):
    return {
        # sleeps make the times independent of the load on the machine (tests run in parallel)
        KEEP: Counted(conv, 0.005, "keep"),
        ("tucker2", 8, "direct"): Counted(conv, 0.05, "slow"),  # ten times slower
        ("spatial_svd", 4, "direct"): Counted(conv, 0.005, "near"),  # as fast as the kept layer
    }


def test_slow_candidates_are_run_once_and_the_rest_fully_timed():
    # reflect padding: no factor the narrow kernel computes, so each candidate has one form
    conv = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect").eval()
    x = torch.randn(2, 8, 8, 8)
    modules = _modules(conv)
    plain = Deployment(fold_bn=False, fuse=False, memory_format="contiguous")
    cache: dict = {}
    timings = latency.latencies(conv, modules, x, (*x.shape, "contiguous", "plain"), cache,
                                True, 6, plain)  # fmt: skip
    assert CALLS["slow"] == 3  # warm-up and the two first runs
    assert CALLS["keep"] == CALLS["near"] == 3 + 6  # then the full timing, interleaved
    assert timings[("tucker2", 8, "direct")] > 40  # ms: its first runs are what it keeps
    assert timings[("tucker2", 8, "direct")] > latency.PRUNE_SLOWER * timings[KEEP]
    assert timings[("spatial_svd", 4, "direct")] < 40
    assert len(cache) == 3  # every candidate's latency is kept, pruned or not
    # a second planning run reads them all from the table and runs nothing
    latency.latencies(conv, modules, x, (*x.shape, "contiguous", "plain"), cache, True, 6, plain)
    assert CALLS == {"keep": 9, "slow": 3, "near": 9}
