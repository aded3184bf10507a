"""Allocation over units: a pruned pair is chosen whole, and the plan is the best valid one."""

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leanconv.compress.planning import Candidate, allocate
from leanconv.compress.planning.units import PairChoice, expand, group, pareto


def _c(layer, method, macs, latency, sens, rank=None, partner=None, samples=None):
    return Candidate(layer, method, rank, macs, 1, latency, sens, partner=partner,
                     kl_samples=samples)  # fmt: skip


def _problem(g: torch.Generator | None = None) -> dict[str, list[Candidate]]:
    """Layers p -> q a prunable pair (prune 8 and 4, each side's share), and a single layer s."""

    def rnd(lo, hi):
        return lo if g is None else float(lo + (hi - lo) * torch.rand((), generator=g))

    cands = {
        "p": [_c("p", "keep", 100, 10.0, 0.0), _c("p", "svd", 30, rnd(4, 6), rnd(0.02, 0.06))],
        "q": [_c("q", "keep", 100, 10.0, 0.0), _c("q", "svd", 30, rnd(4, 6), rnd(0.02, 0.06))],
        "s": [_c("s", "keep", 100, 10.0, 0.0), _c("s", "svd", 40, rnd(4, 7), rnd(0.01, 0.05)),
              _c("s", "tucker2", 15, rnd(2, 3), rnd(0.05, 0.1))],
    }  # fmt: skip
    for r, share, sens in ((8, 0.5, rnd(0.005, 0.03)), (4, 0.25, rnd(0.03, 0.08))):
        for a, b in (("p", "q"), ("q", "p")):
            cands[a].append(_c(a, "prune", int(100 * share), 10.0 * share * rnd(1.0, 1.2),
                               sens / 2, r, b))  # fmt: skip
    return cands


def _valid_plans(cands):
    """Every plan: one candidate per layer, p and q pruned together to one count or neither."""
    for choice in itertools.product(*cands.values()):
        plan = dict(zip(cands, choice, strict=True))
        p, q = plan["p"], plan["q"]
        if (p.method == "prune") != (q.method == "prune"):
            continue
        if p.method == "prune" and p.rank != q.rank:
            continue
        yield plan


def test_a_pair_is_one_unit_of_its_combinations_and_prunings():
    cands = _problem()
    units = group(cands)
    assert list(units) == ["p+q", "s"]
    first = units["p+q"][0]
    assert isinstance(first, PairChoice) and first.method == "keep"
    assert first.macs == 200 and first.latency_ms == 20.0
    prunings = [u for u in units["p+q"] if u.parts[0].method == "prune"]
    assert sorted({u.rank for u in prunings}) == [(4, 4), (8, 8)]
    assert all(u.parts[0].rank == u.parts[1].rank for u in prunings)
    assert len(units["p+q"]) == 4 + 2  # 2 x 2 combinations of the others, 2 prunings
    chosen = {"p+q": prunings[0], "s": units["s"][1]}
    assert expand(chosen, cands) == {"p": prunings[0].parts[0], "q": prunings[0].parts[1],
                                     "s": units["s"][1]}  # fmt: skip


def test_a_pair_sums_its_parts_per_image():
    a = _c("p", "prune", 50, 5.0, 0.02, 8, "q", samples=(0.01, 0.03))
    b = _c("q", "prune", 50, 5.0, 0.02, 8, "p", samples=(0.01, 0.03))
    both = PairChoice("p+q", (a, b))
    assert both.kl_samples == (0.02, 0.06) and both.sensitivity == 0.04
    half = PairChoice("p+q", (_c("p", "keep", 100, 10.0, 0.0), b))
    assert half.kl_samples == (0.01, 0.03) and half.method == "pair"


def test_pareto_keeps_what_no_other_beats_in_latency_sensitivity_and_macs():
    cs = [_c("x", "a", 50, 2.0, 0.1), _c("x", "b", 60, 2.0, 0.1), _c("x", "c", 40, 1.0, 0.2),
          _c("x", "d", 40, 1.5, 0.2)]  # fmt: skip
    assert [c.method for c in pareto(cs)] == ["b", "c"]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1.2, 4.0))
def test_the_allocation_against_every_valid_plan(seed, speedup):
    cands = _problem(torch.Generator().manual_seed(seed))
    total = 30.0
    plan = allocate(cands, 0.0, total, 300, speedup=speedup, prefer_capacity=False)
    p, q = plan.choices["p"], plan.choices["q"]
    assert (p.method == "prune") == (q.method == "prune")  # never one side alone
    assert p.method != "prune" or p.rank == q.rank
    budget = total / speedup
    feasible = [
        sum(c.sensitivity for c in v.values())
        for v in _valid_plans(cands)
        if sum(c.latency_ms for c in v.values()) <= budget + 1e-9
    ]
    if not feasible:
        assert not plan.met
        return
    assert plan.met
    spent = sum(c.latency_ms for c in plan.choices.values())
    assert spent <= budget + 1e-9
    got = sum(c.sensitivity for c in plan.choices.values())
    assert got >= min(feasible) - 1e-12  # a valid plan (brute force is the bound)
    # Lagrangian + greedy repair (not always the optimum, 6 % of such instances are not): no
    # single unit can switch to a more accurate choice that still fits the budget
    units = group(cands)
    now = {"p+q": next(u for u in units["p+q"] if u.parts == (p, q)), "s": plan.choices["s"]}
    for name, options in units.items():
        for other in options:
            fits = spent - now[name].latency_ms + other.latency_ms <= budget + 1e-9
            assert not (fits and other.sensitivity < now[name].sensitivity - 1e-12)


def test_the_pruned_pair_is_taken_when_it_is_the_best_use_of_the_budget():
    cands = {
        "p": [_c("p", "keep", 100, 10.0, 0.0), _c("p", "svd", 30, 5.0, 0.05),
              _c("p", "prune", 50, 5.0, 0.001, 8, "q")],
        "q": [_c("q", "keep", 100, 10.0, 0.0), _c("q", "svd", 30, 5.0, 0.05),
              _c("q", "prune", 50, 5.0, 0.001, 8, "p")],
    }  # fmt: skip
    plan = allocate(cands, 0.0, 20.0, 200, speedup=2.0)
    assert plan.choices["p"].method == plan.choices["q"].method == "prune"
    assert plan.macs_after == 100


def test_for_a_macs_budget_a_pairs_thin_rewrites_stay_choosable():
    cands = {
        "a": [_c("a", "keep", 100, 1.0, 0.0), _c("a", "tucker2", 40, 1.2, 0.05),
              _c("a", "prune", 25, 0.5, 0.5, 8, "b")],
        "b": [_c("b", "keep", 100, 1.0, 0.0), _c("b", "prune", 25, 0.5, 0.5, 8, "a")],
    }  # fmt: skip
    plan = allocate(cands, 0.0, 2.0, 200, macs_ratio=0.7)
    assert plan.choices["a"].method == "tucker2" and plan.choices["b"].method == "keep"
