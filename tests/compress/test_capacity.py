"""The per-image sensitivities and the one-standard-error rule of the allocation."""

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanconv.compress.planning import Candidate, Plan, allocate, build_candidates, capacity
from leanconv.compress.planning.sensitivity import kl_per_image

from .test_pipeline import _model, factory  # noqa: F401 (fixture)


def test_kl_per_image_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    logits, ref_logits = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    ref = F.log_softmax(ref_logits.double(), 1)
    got = kl_per_image(logits, ref)
    p, log_q = ref.exp(), F.log_softmax(logits.double(), 1)
    for i in range(7):  # sum_k p_k (log p_k - log q_k), one image at a time
        expected = sum(float(p[i, k] * (ref[i, k] - log_q[i, k])) for k in range(5))
        assert float(got[i]) == pytest.approx(expected, rel=1e-12)
    assert float(got.mean()) == pytest.approx(
        float(F.kl_div(log_q, ref, reduction="batchmean", log_target=True)), rel=1e-12
    )


def _c(layer, method, macs, latency, sens, samples=None, se=0.0):
    return Candidate(layer, method, None if method == "keep" else macs, macs, 1, latency, sens,
                     sensitivity_se=se, kl_samples=samples)  # fmt: skip


def test_plan_sensitivity_sums_per_image_then_takes_the_standard_error():
    a = (0.1, 0.0, 0.3, 0.2)
    b = (0.4, 0.0, 0.1, 0.1)
    plan = [_c("x", "svd", 5, 1.0, statistics.mean(a), a), _c("y", "svd", 5, 1.0, 0.15, b),
            _c("z", "keep", 9, 1.0, 0.0)]  # fmt: skip
    total, se = capacity.plan_sensitivity(plan)
    sums = [u + v for u, v in zip(a, b)]
    assert total == pytest.approx(statistics.mean(a) + 0.15)
    assert se == pytest.approx(statistics.stdev(sums) / math.sqrt(4))
    # without per-image values: the candidates' own errors in quadrature
    plain = [_c("x", "svd", 5, 1.0, 0.1, se=0.03), _c("y", "svd", 5, 1.0, 0.1, se=0.04)]
    assert capacity.plan_sensitivity(plain)[1] == pytest.approx(0.05)


def _two_layer_problem(se: float) -> dict[str, list[Candidate]]:
    """Layer a: a thin rewrite (10 MACs, 1.0 ms, 0.010 nats) and a thick one (60 MACs, 1.1 ms,
    0.011 nats); layer b: one rewrite. The thin one is both faster and more accurate."""
    n = 8
    flat = lambda v: tuple([v] * (n - 1) + [v + se * math.sqrt(n)])  # noqa: E731
    return {
        "a": [_c("a", "keep", 100, 10.0, 0.0), _c("a", "svd", 10, 1.0, 0.010, flat(0.010)),
              _c("a", "tucker2", 60, 1.1, 0.011, flat(0.011))],
        "b": [_c("b", "keep", 100, 10.0, 0.0), _c("b", "svd", 20, 2.0, 0.005, flat(0.005))],
    }  # fmt: skip


def test_the_rule_keeps_the_thicker_plan_when_accuracy_cannot_tell_them_apart():
    cands = _two_layer_problem(se=0.002)
    plain = allocate(cands, 0.0, 20.0, 200, speedup=6.0, prefer_capacity=False)
    assert plain.choices["a"].method == "svd"  # the most accurate plan for the budget
    plan = allocate(cands, 0.0, 20.0, 200, speedup=6.0)
    assert plan.choices["a"].method == "tucker2" and plan.choices["b"].method == "svd"
    assert plan.macs_after > plain.macs_after and plan.met
    assert any("one-standard-error rule" in n for n in plan.notes)
    s0, se0 = plain.sensitivity
    assert plan.sensitivity[0] <= s0 + se0


def test_the_rule_keeps_the_most_accurate_plan_when_the_difference_is_resolved():
    cands = _two_layer_problem(se=0.0002)  # 0.001 nats apart is now seven standard errors
    plan = allocate(cands, 0.0, 20.0, 200, speedup=6.0)
    assert plan.choices["a"].method == "svd" and not plan.notes


def test_the_rule_never_breaks_the_budget():
    cands = _two_layer_problem(se=0.002)
    plan = allocate(cands, 0.0, 20.0, 200, speedup=20.0 / 3.05)  # 3.05 ms: no room for 1.1
    assert plan.choices["a"].method == "svd"
    assert sum(c.latency_ms for c in plan.choices.values()) <= 3.05


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1.2, 6.0))
def test_the_rule_against_every_plan(seed, speedup):
    # three layers of five candidates with per-image divergences on 16 images: the rule's plan
    # meets the budget, stays within one standard error of the most accurate plan and keeps at
    # least its MACs
    g = torch.Generator().manual_seed(seed)
    cands = {}
    for layer in "abc":
        cs = [_c(layer, "keep", 100, 10.0, 0.0)]
        for i in range(4):
            macs = int(torch.randint(5, 95, (), generator=g))
            samples = tuple((torch.rand(16, generator=g) * (100 - macs) / 500).tolist())
            latency = float(1.0 + macs / 12 + torch.rand((), generator=g))
            cs.append(_c(layer, f"m{i}", macs, latency, statistics.mean(samples), samples))
        cands[layer] = cs
    plain = allocate(cands, 0.0, 30.0, 300, speedup=speedup, prefer_capacity=False)
    plan = allocate(cands, 0.0, 30.0, 300, speedup=speedup)
    budget = 30.0 / speedup
    if not plain.met:
        return
    assert sum(c.latency_ms for c in plan.choices.values()) <= budget + 1e-9
    s0, se0 = plain.sensitivity
    assert plan.sensitivity[0] <= s0 + se0 + 1e-12
    assert plan.macs_after >= plain.macs_after
    assert (plan.macs_after > plain.macs_after) == bool(plan.notes)  # said when it changed


def test_candidates_carry_per_image_divergences(factory):  # noqa: F811
    model = _model(factory).eval()
    calibration = torch.randn(16, 1, 8, 8)
    cands, fixed, total = build_candidates(model, calibration, ratios=(0.3,), batch=8,
                                           repeats=2, use_cache=False)  # fmt: skip
    rewrites = [c for cs in cands.values() for c in cs if c.method != "keep"]
    assert rewrites
    for c in rewrites:
        assert len(c.kl_samples) == 16 and min(c.kl_samples) >= -1e-12
        assert c.measured_sensitivity == pytest.approx(statistics.mean(c.kl_samples))
        assert c.sensitivity_se == pytest.approx(statistics.stdev(c.kl_samples) / 4)
        assert "kl_samples" not in c.as_dict() and "sensitivity_se" in c.as_dict()
        if c.algorithm != "direct":  # an exact algorithm shares its rewrite's measurement
            direct = next(d for d in cands[c.layer] if (d.method, d.rank, d.algorithm)
                          == (c.method, c.rank, "direct"))  # fmt: skip
            assert c.kl_samples == direct.kl_samples
    plan = allocate(cands, fixed, total, 1000, speedup=1.5)
    saved = plan.as_dict()
    assert (saved["sensitivity"], saved["sensitivity_se"]) == plan.sensitivity
    # read back (--resume): the same figures, though the per-image values are not saved
    assert Plan.from_dict(saved).sensitivity == pytest.approx(plan.sensitivity)


def test_choose_among_measured_plans():
    from types import SimpleNamespace as P

    plans = [P(sensitivity=(0.050, 0.004), macs_after=100),  # the most accurate
             P(sensitivity=(0.053, 0.004), macs_after=140),  # within one error: most MACs
             P(sensitivity=(0.053, 0.001), macs_after=120),
             P(sensitivity=(0.060, 0.001), macs_after=400)]  # fmt: skip
    assert capacity.choose(plans) is plans[1]
    assert capacity.choose(plans[:1]) is plans[0]
    plans[0].sensitivity = (0.050, 0.0)  # resolved exactly: the most accurate stays
    assert capacity.choose(plans) is plans[0]


def test_the_closed_loop_follows_the_rule(monkeypatch):
    from leanconv.compress.planning import closed_loop
    from leanconv.compress.planning.closed_loop import plan_for_speedup

    def timed(original, plan, *args, **kwargs):  # the assembled model runs 30 % faster
        return plan.replace(original_ms=1.0, assembled_ms=1.0 / (plan.layer_sum_speedup * 1.3))

    monkeypatch.setattr(closed_loop, "time_assembled", timed)
    monkeypatch.setattr(closed_loop, "faster_layout", lambda *a, **k: None)
    monkeypatch.setattr(closed_loop, "input_at_batch", lambda *a, **k: None)
    g = torch.Generator().manual_seed(1)
    cands = {}
    for i in range(4):  # four layers of 10 ms: per rank a thin rewrite and a 3x thicker one,
        name = f"layer{i}"  # 10 % slower and 5 % more sensitive
        cs = [_c(name, "keep", 3000, 10.0, 0.0)]
        for r in range(1, 10):
            thin = tuple(((1 + i) / r**2 * 2 * torch.rand(16, generator=g)).tolist())
            thick = tuple(1.05 * v for v in thin)
            cs.append(_c(name, "svd", 100 * r, float(r), statistics.mean(thin), thin))
            cs.append(_c(name, "tucker2", 300 * r, 1.1 * r, statistics.mean(thick), thick))
        cands[name] = cs
    plan = plan_for_speedup(None, cands, 0.0, 40.0, 12000, 3.0, None)
    accurate = plan_for_speedup(None, cands, 0.0, 40.0, 12000, 3.0, None, prefer_capacity=False)
    assert plan.met and accurate.met
    assert any("one-standard-error rule" in n for n in plan.notes) and not accurate.notes
    assert plan.macs_after > accurate.macs_after
    s0, se0 = accurate.sensitivity
    assert accurate.sensitivity[0] <= plan.sensitivity[0] <= s0 + se0


def test_cli_calibration_and_most_accurate(tmp_path, factory, monkeypatch):  # noqa: F811
    from typer.testing import CliRunner

    from leanconv.cli import compress as cli_compress
    from leanconv.cli.main import app
    from leanconv.errors import LeanconvError

    seen = {}

    def fake(net, bundle, config, *args, **kwargs):
        seen["config"] = config
        raise LeanconvError("stopped by the test")

    monkeypatch.setattr(cli_compress, "compress", fake)
    from safetensors.torch import save_file

    from leanconv.loading import load_model

    weights = tmp_path / "w.safetensors"  # the digits have 10 classes
    save_file(load_model(f"{factory}:make", num_classes=10).module.state_dict(), str(weights))
    args = ["compress", f"{factory}:make", "--out", str(tmp_path / "o"), "--weights", str(weights)]
    r = CliRunner().invoke(app, [*args, "--calibration", "32", "--most-accurate"])
    assert r.exit_code == 2 and "stopped by the test" in r.output
    assert seen["config"].calibration == 32 and seen["config"].prefer_capacity is False
    CliRunner().invoke(app, args)
    assert seen["config"].calibration == 128 and seen["config"].prefer_capacity is True
    r = CliRunner().invoke(app, [*args, "--calibration", "1"])
    assert r.exit_code == 2 and "--calibration 1" in r.output and "Traceback" not in r.output
