"""The second window of the planner's timing (planning/latency.py): once every layer is timed,
the candidates an allocation can choose are timed again and credited with the mean of their two
ratios to the kept layer. References: hand-made frontiers, and calls made slow by known sleeps
(the times do not depend on the machine's load)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from leanconv.compress.planning import build_candidates
from leanconv.compress.planning.latency import frontier, second_window
from leanconv.compress.planning.plan import KEEP, Candidate


def _cand(method, rank, latency, sensitivity):
    return Candidate("l", method, rank, 100, 1, latency, sensitivity)


def test_the_frontier_is_what_no_other_candidate_beats():
    keep = _cand("keep", None, 10.0, 0.0)
    fast = _cand("tucker2", 4, 2.0, 0.5)
    mid = _cand("tucker2", 8, 4.0, 0.1)
    beaten = _cand("svd", 4, 5.0, 0.2)  # mid is faster and more accurate
    tie = _cand("svd", 8, 4.0, 0.1)  # equal to mid: neither beats the other
    assert frontier([keep, fast, mid, beaten, tie]) == [keep, fast, mid, tie]


class Sleep:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self):
        self.calls += 1
        time.sleep(self.seconds)


def test_a_frontier_candidate_gets_the_mean_of_its_two_ratios():
    keep = _cand("keep", None, 10.0, 0.0)
    chosen = _cand("tucker2", 8, 5.0, 0.1)  # ratio 0.5 in the first window
    beaten = _cand("svd", 4, 6.0, 0.2)
    cached = _cand("svd", 8, 7.0, 0.05)  # on the frontier, read from the table: no call
    calls = {KEEP: Sleep(0.010), chosen.key: Sleep(0.008), beaten.key: Sleep(0.001)}
    retained = {KEEP: (None, calls[KEEP]), chosen.key: ("ck", calls[chosen.key]),
                beaten.key: ("cb", calls[beaten.key])}  # fmt: skip
    cache: dict = {"ck": 5.0}
    out = second_window([keep, chosen, beaten, cached], retained, cache, repeats=5)
    by = {c.key: c for c in out}
    # second window: 8 ms against 10 ms, ratio 0.8; the mean of 0.5 and 0.8 is 0.65
    assert by[chosen.key].latency_ms == pytest.approx(6.5, abs=0.6)
    assert cache["ck"] == by[chosen.key].latency_ms
    assert by[KEEP].latency_ms == 10.0  # the reference stays
    assert by[beaten.key].latency_ms == 6.0 and calls[beaten.key].calls == 0
    assert by[cached.key].latency_ms == 7.0
    assert calls[chosen.key].calls == 1 + 5  # warm-up and the repeats


def test_build_candidates_times_the_frontier_twice(monkeypatch):
    from leanconv.compress.planning import candidates as module

    seen = []
    real = module.second_window

    def spy(cands, retained, cache, repeats):
        seen.append((len(cands), {c.key for c in frontier(cands)}, set(retained)))
        return real(cands, retained, cache, repeats)

    monkeypatch.setattr(module, "second_window", spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.Flatten(),
                          nn.Linear(16 * 8 * 8, 4)).eval()  # fmt: skip
    cands, _, _ = build_candidates(model, torch.randn(8, 3, 8, 8), ratios=(0.2, 0.5), batch=4,
                                   repeats=2, use_cache=False, algorithms=())  # fmt: skip
    assert len(seen) == len(cands) == 2
    for (n, on_frontier, kept), cs in zip(seen, cands.values(), strict=True):
        assert n == len(cs)
        assert kept == on_frontier | {KEEP}  # only the frontier's calls are kept


def test_the_fixed_latency_and_the_total_are_the_mean_of_two_windows(monkeypatch):
    from leanconv.bench.timing import Timing
    from leanconv.compress.planning import candidates as module

    windows = []

    def fake_compare(calls, warmup=1, repeats=5):
        windows.append(set(calls))
        slow = len(windows) == 1  # a burst of load during the first window
        ms = {"given": 30.0 if slow else 20.0, "model": 40.0, "deployed": 28.0 if slow else 12.0}
        return {n: Timing(ms.get(n, 2.0) / 1e3, 0.0, 0.0, repeats) for n in calls}

    monkeypatch.setattr(module, "compare", fake_compare)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 3)).eval()  # fmt: skip
    cands, fixed, total = build_candidates(model, torch.randn(8, 3, 6, 6), ratios=(0.3,), batch=4,
                                           repeats=2, use_cache=False, algorithms=())  # fmt: skip
    assert len(windows) == 2 and windows[0] == windows[1]
    assert total == pytest.approx(25.0)  # the mean of 30 and 20
    assert [cs[0].latency_ms for cs in cands.values()] == pytest.approx([2.0, 2.0])
    assert fixed == pytest.approx((28.0 + 12.0) / 2 - 2 * 2.0)
