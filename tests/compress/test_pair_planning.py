"""Pruned pairs in the planner: their candidates against an independent measurement, the surgery
that builds them, and a saved model that loads back."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leanconv.compress import serialize
from leanconv.compress.planning import build_candidates, planned_method
from leanconv.compress.planning.pair_candidates import prune_counts, vector_floats
from leanconv.compress.planning.sensitivity import kl_per_image
from leanconv.compress.verify import decompose_model
from leanconv.errors import LeanconvError
from leanconv.prune import prune_pairs


def make() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
        model[7].weight.mul_(30)  # logits of some spread: divergences well above rounding
    return model.eval()


def _calibration() -> torch.Tensor:
    return torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(1))


def test_prune_counts_are_multiples_of_eight_below_the_channels():
    assert prune_counts(32) == [24, 16, 8]
    assert prune_counts(64) == [48, 32, 16, 8]
    assert prune_counts(256) == [192, 128, 64, 32]
    assert prune_counts(16) == [8]
    assert prune_counts(8) == []


def test_prune_counts_stop_at_the_floor():
    # the planner's floor: the machine's vector width (16 floats with AVX-512)
    assert prune_counts(32, floor=16) == [24, 16]
    assert prune_counts(64, floor=16) == [48, 32, 16]
    assert prune_counts(256, floor=16) == [192, 128, 64, 32]
    assert prune_counts(16, floor=16) == []


def test_vector_floats_follows_the_cpu_capability(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert vector_floats("cpu") == 16
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert vector_floats("cpu") == 8
    assert vector_floats("meta") == 8


def test_candidates_of_a_pair_sum_to_the_pruned_models_divergence():
    model, x = make(), _calibration()
    cands, _, _ = build_candidates(model, x, methods=("prune",), ratios=(0.4,), batch=4,
                                   repeats=2, algorithms=(), use_cache=False)  # fmt: skip
    producer = {c.rank: c for c in cands["0"] if c.method == "prune"}
    consumer = {c.rank: c for c in cands["3"] if c.method == "prune"}
    counts = prune_counts(32, floor=vector_floats("cpu"))  # [24, 16] with AVX-512, else 8 too
    assert sorted(producer) == sorted(consumer) == sorted(counts)
    assert all(c.partner == "3" for c in producer.values())
    assert all(c.partner == "0" for c in consumer.values())
    with torch.no_grad():
        reference = F.log_softmax(model(x).double(), 1)
        kl = {r: kl_per_image(prune_pairs(model, {"0": r}, x).model(x), reference)
              for r in counts}  # fmt: skip
    floor = 0.0
    for r in counts:  # largest first: fewer channels at least as sensitive as more
        floor = max(floor, float(kl[r].mean()))
        assert producer[r].sensitivity + consumer[r].sensitivity == pytest.approx(floor, rel=1e-4)
        # MACs per image by brute count: 3 -> r and r -> 16 channels, 3x3, 10x10 outputs
        assert producer[r].macs == 3 * r * 9 * 100 and consumer[r].macs == r * 16 * 9 * 100
        assert producer[r].latency_ms > 0 and consumer[r].latency_ms > 0
    assert floor > 1e-3
    for r in counts:  # the per-image values are the count's own measurement
        both = [a + b for a, b in zip(producer[r].kl_samples, consumer[r].kl_samples, strict=True)]
        torch.testing.assert_close(torch.tensor(both, dtype=torch.float64), kl[r], rtol=1e-4,
                                   atol=1e-9)  # fmt: skip
        assert 2 * producer[r].measured_sensitivity == pytest.approx(float(kl[r].mean()), rel=1e-4)


def test_the_method_name_is_known_to_the_planner():
    assert planned_method("Prune") == "prune"
    assert planned_method("tucker") == "tucker2"
    with pytest.raises(LeanconvError, match="or 'prune'"):
        planned_method("pruning")


def test_surgery_prunes_a_pair_planned_whole_and_nothing_else():
    model, x = make(), _calibration()
    pruned, report = decompose_model(model, {"0": ("prune", 16), "3": ("prune", 16)}, x)
    expected = prune_pairs(model, {"0": 16}, x).model
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected(x))
    rows = {o.name: o for o in report.layers}
    assert rows["0"].status == rows["3"].status == "replaced"
    # counted on the 16 calibration images: 3 -> 16 and 16 -> 16 channels, 3x3, 10x10 outputs
    assert rows["0"].macs_after == 16 * 3 * 16 * 9 * 100
    assert rows["3"].macs_after == 16 * 16 * 16 * 9 * 100
    assert set(report.replaced) == {"0", "1", "3"}  # the two convolutions and the norm between
    _, alone = decompose_model(model, {"0": ("prune", 16)}, x)
    assert alone.layers[0].status == "skipped" and "pair" in alone.layers[0].reason
    _, strict = decompose_model(model, {"0": ("prune", 16), "3": ("prune", 16)}, x,
                                max_error=1e-9)  # fmt: skip
    assert {o.status for o in strict.layers} == {"rolled back"} and not strict.replaced


@pytest.mark.parametrize("fold", [False, True])
def test_a_pruned_model_saves_and_loads_back(tmp_path, fold):
    from leanconv.rewrite import fold_batchnorm

    model, x = make(), _calibration()
    pruned, report = decompose_model(model, {"0": ("prune", 8), "3": ("prune", 8)}, x)
    replaced = dict(report.replaced)
    if fold:
        pruned, norms, _ = fold_batchnorm(pruned)
        replaced |= {n: pruned.get_submodule(n) for n in replaced} | {n: nn.Identity()
                                                                      for n in norms}  # fmt: skip
    serialize.save(pruned, tmp_path / "m", {}, replaced)
    loaded = serialize.load(tmp_path / "m", factory=make)
    assert loaded[0].out_channels == 8 and loaded[3].in_channels == 8
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.03, None])
def test_a_pruned_norm_keeps_its_momentum(tmp_path, momentum):
    model, x = make(), _calibration()
    model[1].momentum = momentum
    pruned, report = decompose_model(model, {"0": ("prune", 8), "3": ("prune", 8)}, x)
    serialize.save(pruned, tmp_path / "m", {}, dict(report.replaced))
    loaded = serialize.load(tmp_path / "m", factory=make)
    assert loaded[1].num_features == 8 and loaded[1].momentum == momentum


def test_local_sensitivities_scale_one_measured_count_by_output_errors():
    model, x = make(), _calibration()
    cands, _, _ = build_candidates(model, x, methods=("prune",), ratios=(0.4,), batch=4,
                                   repeats=2, algorithms=(), use_cache=False, local=True)  # fmt: skip
    consumer = {c.rank: c for c in cands["3"] if c.method == "prune"}
    errors = {r: c.output_error for r, c in consumer.items()}
    anchor = sorted(errors, key=errors.get)[1]  # the count of median output error
    with torch.no_grad():
        reference = F.log_softmax(model(x).double(), 1)
        kl = kl_per_image(prune_pairs(model, {"0": anchor}, x).model(x), reference)
    measured = {r: 2 * c.measured_sensitivity for r, c in consumer.items()}
    assert measured[anchor] == pytest.approx(float(kl.mean()), rel=1e-4)
    for r in errors:
        ratio = (errors[r] / errors[anchor]) ** 2
        assert measured[r] == pytest.approx(measured[anchor] * ratio, rel=1e-6)


def test_a_consumer_of_the_same_shape_as_its_producer_is_timed_on_its_own_input():
    from leanconv.compress.deploy import Deployment
    from leanconv.compress.planning.latency import latencies
    from leanconv.compress.planning.plan import KEEP

    layer = nn.Conv2d(32, 32, 3, padding=1).eval()  # producer and consumer alike
    xb = torch.randn(4, 32, 8, 8)
    key = ("prune", 16, "direct")
    cache: dict = {}
    shape = (*xb.shape, "contiguous", "packed")
    produced = nn.Conv2d(32, 16, 3, padding=1).eval()  # 16 outputs, on the layer's input
    latencies(layer, {KEEP: layer, key: produced}, xb, shape, cache, True, 2, Deployment())
    assert len(cache) == 2
    consumed = nn.Conv2d(16, 32, 3, padding=1).eval()  # 16 inputs, on the kept channels
    timings = latencies(layer, {KEEP: layer, key: consumed}, xb, shape, cache, True, 2,
                        Deployment(), inputs={key: xb[:, :16]})  # fmt: skip
    assert len(cache) == 3 and timings[key] > 0  # timed, not the producer's entry


def test_surgery_skips_prune_entries_that_name_no_valid_pair():
    model, x = make(), _calibration()
    _, report = decompose_model(model, {"0": ("prune", 64), "3": ("prune", 64)}, x)
    assert {o.status for o in report.layers} == {"skipped"} and not report.replaced
    with pytest.raises(LeanconvError, match="prunable pair"):
        decompose_model(model, {"0": ("prune", 64), "3": ("prune", 64)}, x, strict=True)
