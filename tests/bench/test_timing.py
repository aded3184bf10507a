import time

import pytest
import torch

from leanconv.bench import compare, measure, threads


def test_measure_reports_a_median_of_the_runs():
    t = measure(lambda: time.sleep(0.002), warmup=1, repeats=5)
    assert t.runs == 5
    assert 0.002 <= t.p10 <= t.median <= t.p90
    assert t.ms == pytest.approx(t.median * 1e3)


def test_compare_interleaves_and_orders():
    calls = []
    out = compare({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 1, 3)
    assert calls == ["a", "b"] * 4
    assert set(out) == {"a", "b"} and out["a"].runs == 3


def test_threads_are_restored():
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_bad_repeats():
    with pytest.raises(ValueError, match="repeats=0"):
        measure(lambda: None, repeats=0)
