"""The planner's candidates for pruning convolution pairs (:mod:`leanconv.prune`).

A pair pruned to ``r`` of its ``C`` inner channels stays two dense convolutions, which run at
nearly the rate of the layers they replace, where the thin factors of a decomposition run at a
third to two thirds of it (docs/benchmarks.md, "Channel pruning of convolution pairs"). For
every prunable pair whose two layers are planned (those that share no convolution with one
before them, :func:`leanconv.prune.disjoint`), and each count of :func:`prune_counts`, the
pair pruned (the consumer refitted by least squares on the calibration images) gives one
candidate to each of its two layers, method ``"prune"``, rank ``r``, ``partner`` the other layer:

- sensitivity: the whole model's divergence on the calibration images with the pair pruned,
  made monotone in ``r`` (fewer channels at least as sensitive), carried half by each layer with
  half of each image's divergence, so that the two sum to the measurement (the allocation
  chooses them together, :mod:`.units`);
- latency: each pruned layer in its deployment form on its real input at the planning batch
  (the producer on the layer's input, the consumer on the channels kept of its input), with
  each fast algorithm that applies to it, interleaved with the layer kept
  (:func:`.latency.latencies`, cached by shape like every candidate);
- MACs and parameters of each pruned layer; output error (and weight error): the consumer's
  relative output error after the refit, for both (the producer's kept outputs are exact).
"""

from __future__ import annotations

import torch
from torch import nn

from ...cost import count
from ...modules import input_at_batch
from ...prune import PRUNE, disjoint, find_pairs, pair_grams, prune_pairs
from .latency import latencies
from .plan import KEEP, Candidate
from .sensitivity import local_divergences, model_divergence

__all__ = ["KEEP_SHARES", "PRUNE", "pair_candidates", "prune_counts", "vector_floats"]

#: The shares of a pair's channels it is pruned to (each rounded to a multiple of 8, at least
#: the machine's vector width, :func:`vector_floats`). With the smallest at 1/4, the demo's plans
#: pruned every pair of its three wider stages to 1/4 and took the rest of their speed from
#: rank-8 chains in its 32-channel stage (0.78 of the MACs reduction in speed); 1/8 gives the
#: wider pairs (128 channels and more) a denser way there.
KEEP_SHARES = (0.75, 0.5, 0.25, 0.125)


def vector_floats(device: torch.device | str = "cpu") -> int:
    """The float32 lanes of the vectors that oneDNN blocks channels by on ``device``: 16 with
    AVX-512, else 8 (AVX2; on a GPU, the multiple that tensor cores are fed in)."""
    if torch.device(device).type == "cpu" and torch.backends.cpu.get_cpu_capability() == "AVX512":
        return 16
    return 8


def prune_counts(channels: int, shares=KEEP_SHARES, floor: int = 8) -> list[int]:
    """The channel counts a pair of ``channels`` is pruned to: each share of them rounded to a
    multiple of 8 (the vector width the kernels are blocked for), at least ``floor``, fewer than
    ``channels``; largest first.

    The planner's ``floor`` is the machine's vector width (:func:`vector_floats`): on the
    AVX-512 test machine a pair pruned to 8 channels ran at 0.55 of its MACs reduction where
    pairs at 3/4 and 1/2 of their channels ran at 0.87-0.96 (``benchmarks/bench_pruning.py``),
    and in five demo plans the 8-channel prune candidates measured a median of 0.32 of their
    MACs reduction against 0.53 for 16-31 channels (half-empty vectors in every layer of the
    pair); a plan that took its speed from one such pair came out at 0.80 of its MACs reduction
    (docs/benchmarks.md)."""
    counts = {max(floor, 8 * round(channels * s / 8)) for s in shares}
    return sorted((c for c in counts if c < channels), reverse=True)


def _divergences(pruned: dict, calibration, reference, logits, local: bool) -> dict[int, tuple]:
    """Each count's ``(divergence, its standard error, per-image values)``: measured on the whole
    model, or with ``local`` measured for the count of median output error and scaled to the
    others by their output errors (:func:`.sensitivity.local_divergences`, as for a method's
    ranks)."""

    def measure(key):
        return model_divergence(pruned[key[1]].model, calibration, reference, logits)

    keys = {(PRUNE, r): result.outcomes[0].output_error for r, result in pruned.items()}
    found = local_divergences(keys, measure) if local else {k: measure(k) for k in keys}
    return {key[1]: found[key] for key in keys}


def _monotone(measured: dict[int, tuple]) -> dict[int, float]:
    """Each count's sensitivity raised to the largest of any larger count's (fewer channels keep
    less of the pair); its standard error and per-image values stay its own measurement's, as
    :func:`.sensitivity.monotone_sensitivity` keeps them."""
    out, floor = {}, 0.0
    for r in sorted(measured, reverse=True):
        floor = out[r] = max(floor, measured[r][0])
    return out


def pair_candidates(
    model: nn.Module,
    layers: list[str],
    inputs: dict[str, torch.Tensor],
    calibration: torch.Tensor,
    reference,
    logits: bool,
    batch: int,
    fmt: torch.memory_format,
    form: tuple,
    deployment,
    cache: dict,
    use_cache: bool,
    repeats: int,
    variants,
    retained: dict[str, dict] | None = None,
    local: bool = False,
) -> dict[str, list[Candidate]]:
    """The prune candidates of each layer of a prunable pair of ``model`` among ``layers`` (see
    the module docstring): layer name -> its new candidates (without "keep"). ``inputs``: each
    layer's calibration input; ``variants(modules, errors)``: the modules with their fast
    algorithm variants (:func:`.candidates.algorithm_variants`); ``retained``: filled with each
    layer's calls of what was timed now, for the second window. ``local``: the whole model's
    divergence measured for one count per pair and scaled to the others by their output errors,
    as :func:`.sensitivity.measured_candidates` does for a method's ranks (for large models).
    The Gram matrices every pruning is chosen and refitted from are gathered for all pairs in one
    pass of the model."""
    planned = set(layers)
    out: dict[str, list[Candidate]] = {}
    pairs = [p for p in find_pairs(model) if p.producer in planned and p.consumer in planned]
    floor = vector_floats(calibration.device)
    pairs = [p for p in disjoint(pairs) if prune_counts(p.channels, floor=floor)]
    grams = pair_grams(model, pairs, calibration) if pairs else {}
    for pair in pairs:
        pruned = {r: prune_pairs(model, {pair.producer: r}, grams=grams)
                  for r in prune_counts(pair.channels, floor=floor)}  # fmt: skip
        measured = _divergences(pruned, calibration, reference, logits, local)
        raised = _monotone(measured)
        for name, partner in ((pair.producer, pair.consumer), (pair.consumer, pair.producer)):
            out[name] = _layer_candidates(model, name, partner, pair, pruned, measured, raised,
                                          inputs, batch, fmt, form, deployment, cache,
                                          use_cache, repeats, variants, retained)  # fmt: skip
    return out


def _layer_candidates(model, name, partner, pair, pruned, measured, raised, inputs, batch, fmt,
                      form, deployment, cache, use_cache, repeats, variants, retained):  # fmt: skip
    """One layer's prune candidates, one per count and algorithm."""
    layer = model.get_submodule(name)
    x = inputs[name]
    xb = input_at_batch(x, batch).contiguous(memory_format=fmt)
    consumer = name == pair.consumer
    modules: dict[tuple, nn.Module] = {}
    errors: dict[tuple, float] = {}
    kept_input: dict[int, torch.Tensor] = {}
    for r, result in pruned.items():
        layer_r = result.model.get_submodule(name)
        modules[(PRUNE, r, "direct")] = layer_r.eval().to(memory_format=fmt)
        errors[(PRUNE, r, "direct")] = result.outcomes[0].output_error
        if consumer:
            kept_input[r] = torch.tensor(result.outcomes[0].kept)
    modules, errors = variants(modules, errors)
    own_inputs = {}
    if consumer:
        own_inputs = {key: xb[:, kept_input[key[1]]].contiguous(memory_format=fmt)
                      for key in modules}  # fmt: skip
    timed: dict = {}
    timings = latencies(layer, {KEEP: layer, **modules}, xb, (*xb.shape, *form), cache,
                        use_cache, repeats, deployment, timed, own_inputs)  # fmt: skip
    if retained is not None:
        retained.setdefault(name, {}).update(timed)
    cands = []
    for key in modules:
        _, r, algorithm = key
        own, se, samples = measured[r]
        sample_x = x[:1][:, kept_input[r]] if consumer else x[:1]
        c = count(modules[(PRUNE, r, "direct")], sample_x)
        cands.append(Candidate(
            name, PRUNE, r, c.total.macs, c.total.params, timings[key], raised[r] / 2,
            errors[key], errors[key], algorithm, measured_sensitivity=own / 2,
            sensitivity_se=se / 2, kl_samples=tuple(v / 2 for v in samples), partner=partner,
        ))  # fmt: skip
    return cands
