"""The planner's candidates: every way each convolution could run, with its cost and its harm.

For every convolution the planner builds candidates in separate steps:

1. **rewrites** (:func:`rewrites`): the layer kept, and each decomposition method at the rank of
   each MACs budget of the layer (:func:`leanconv.decompose.rank.budget_rank`, each rank once);
2. **algorithm variants** (:func:`algorithm_variants`): each of those again with its 3x3
   convolutions computed by Winograd F(2x2), F(4x4) or F(6x6) (:mod:`..algorithms`);
3. **latency** (:mod:`.latency`): each measured on this machine, on the layer's real input at the
   planning batch, in its deployment form (a rewrite in both of its forms, factors on oneDNN or
   on the narrow kernel, the faster credited), cached by shape; once every layer is done, the
   candidates an allocation can choose timed again in a second window (the mean of the two
   ratios to the kept layer kept), and all put on one measurement of the originals together;
4. **sensitivity** (:mod:`.sensitivity`): the KL divergence of the whole model's predictions on a
   calibration set with only that layer rewritten, made monotone in rank;

and each candidate carries its MACs and parameters. :func:`build_candidates` runs the steps layer
by layer (keeping each finished layer, so an interrupted run resumes) and measures what no
candidate changes (the fixed latency) and the whole model (the total), in two windows around the
second window of the candidates, the mean of the two kept.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ... import cache as cache_store
from ...bench.timing import compare
from ...cost import count
from ...decompose import methods as registry
from ...decompose.rank import budget_rank, canonical_method
from ...errors import LeanconvError
from ...modules import FORMATS, input_at_batch
from ...spec import ConvSpec
from .. import outputs
from ..algorithms import ALGORITHMS, with_algorithm
from ..deploy import Deployment
from ..replace import decompose_layer
from ..surgery import conv_layers
from ..verify import capture_inputs
from .latency import CACHE_FILE, common_window, frontier, latencies, second_window
from .pair_candidates import KEEP_SHARES, PRUNE, pair_candidates, vector_floats
from .plan import KEEP, Candidate
from .sensitivity import measured_candidates, monotone_sensitivity

#: The MACs budgets (shares of the layer's MACs) whose ranks each method is tried at.
DEFAULT_RATIOS = (0.06, 0.1, 0.15, 0.25, 0.4, 0.6)

#: The decompositions planned with by default. ``low_rank`` (a ``kh x kw`` convolution to R
#: channels, then a 1x1) keeps its first factor as wide as the layer's input: it runs near the
#: dense layer's rate where Tucker-2's thin factors do not, and adding it took the demo from 0.67
#: to 0.91 of its MACs reduction in speed, with a smaller accuracy drop (docs/benchmarks.md).
DEFAULT_METHODS = ("tucker2", "spatial_svd", "low_rank", PRUNE)

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_RATIOS",
    "PRUNE",
    "algorithm_variants",
    "build_candidates",
    "planned_method",
    "rewrites",
    "within_error",
]


def planned_method(name: str, where: str = "methods") -> str:
    """``name`` as the planner knows it: ``"prune"`` (pruning convolution pairs,
    :mod:`.pair_candidates`) or a decomposition's registered name (its aliases accepted);
    raises for anything else, listing the valid names."""
    if str(name).strip().lower() == PRUNE:
        return PRUNE
    try:
        return canonical_method(name, where)
    except LeanconvError as exc:
        raise type(exc)(f"{exc}; or {PRUNE!r} (pruning convolution pairs)") from None


def build_candidates(
    model: nn.Module,
    calibration: torch.Tensor,
    layers: list[str] | None = None,
    methods: tuple[str, ...] = DEFAULT_METHODS,
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    batch: int = 64,
    align: int = 0,
    local: bool = False,
    repeats: int = 5,
    use_cache: bool = True,
    algorithms: tuple[str, ...] = tuple(ALGORITHMS),
    deployment: Deployment = Deployment(),
    log=None,
    logits: bool = True,
    done: dict[str, list[Candidate]] | None = None,
    on_layer=None,
) -> tuple[dict[str, list[Candidate]], float, float]:
    """Candidates per layer (the first is "keep"), the fixed latency and the total latency.

    ``logits``: the model returns class logits (sensitivities are KL divergences); otherwise its
    outputs are compared by relative squared error (:mod:`..outputs`). ``done``: the candidates of
    layers measured before (a resumed run), not measured again; ``on_layer(name, candidates)``
    is called as each layer is finished (to keep them).

    Latencies are measured in the ``deployment`` form (:class:`..deploy.Deployment`: convolutions
    packed, weights and inputs in its memory format); the total is that of the model as given in
    the faster of its own layout and the deployment's.

    ``algorithms``: the fast algorithms to try on every candidate that has an eligible 3x3
    convolution (``()``: decompositions only). ``align``: each rank also aligned to that many
    channels (:func:`aligned`; 0: the ratios' ranks only). ``local``: one whole-model
    divergence per method and layer, the other rewrites' sensitivities scaled from their output
    errors (:func:`.sensitivity.measured_candidates`; for large models).

    The fixed latency (everything no candidate changes) is measured on the model in its deployment
    form (batch norms folded, ReLUs fused); the total is the model as given, so the predicted
    speedup covers both the rewrites and the deployment form.
    """
    methods = tuple(planned_method(m) for m in methods)  # unknown names raise
    prune = PRUNE in methods
    methods = tuple(m for m in methods if m != PRUNE)
    memory_format = deployment.memory_format
    fmt = FORMATS[memory_format]
    form = (memory_format, "packed" if deployment.fuse else "plain")
    given = copy.deepcopy(model).eval()
    model = copy.deepcopy(model).eval().to(memory_format=fmt)
    layers = layers if layers is not None else conv_layers(model)
    inputs = capture_inputs(model, layers, calibration)
    with torch.no_grad():
        reference = outputs.reference(model(calibration), logits)
    if log and getattr(reference, "temperature", 1.0) > 1.0:
        log(f"      the original's predictions are saturated on the calibration images (mean "
            f"top-1 probability above {outputs.CONFIDENCE}): sensitivities are compared at "
            f"temperature {reference.temperature:.2f}, where rewrites that keep each image's "
            "class still differ")  # fmt: skip
    cache = cache_store.load(CACHE_FILE) if use_cache else {}
    out: dict[str, list[Candidate]] = {}
    retained: dict[str, dict] = {}  # each layer's frontier measured now: timed again below
    originals: dict[str, object] = {}  # each layer's original on its input, timed again below
    for i, name in enumerate(layers):
        layer = model.get_submodule(name)
        x = inputs[name]
        xb = input_at_batch(x, batch).contiguous(memory_format=fmt)
        base = count(layer, x[:1])  # per sample, as the model totals
        if done and name in done:
            out[name] = done[name]
            originals[name] = lambda m=deployment.layer(layer), xb=xb: m(xb)
            if log:
                log(f"  planned {i + 1}/{len(layers)} {name}: {len(done[name]) - 1} candidates, "
                    "measured before the interruption")  # fmt: skip
            continue
        modules, errors = rewrites(layer, name, x, methods, ratios, fmt, align)
        modules, errors = algorithm_variants(modules, errors, algorithms, fmt)
        kept: dict = {}  # the calls of what was measured now, for the second window
        timings = latencies(layer, modules, xb, (*xb.shape, *form), cache, use_cache, repeats,
                            deployment, kept)  # fmt: skip
        originals[name] = lambda m=deployment.layer(layer), xb=xb: m(xb)
        measured = measured_candidates(model, name, layer, x, modules, errors, timings,
                                       calibration, reference, logits, local)  # fmt: skip
        cands = monotone_sensitivity(measured)
        out[name] = cands
        on_frontier = {c.key for c in frontier(cands)} | {KEEP}
        retained[name] = {key: call for key, call in kept.items() if key in on_frontier}
        if on_layer is not None:
            on_layer(name, cands)
        if log:
            keep = cands[0].latency_ms
            log(f"  planned {i + 1}/{len(layers)} {name}: {len(cands) - 1} candidates, "
                f"{base.total.macs / 1e6:.1f} MMACs per sample, {keep:.2f} ms at batch "
                f"{batch}")  # fmt: skip
    if prune:
        _add_pair_candidates(out, retained, model, layers, inputs, calibration, reference, logits,
                             batch, fmt, form, deployment, cache, use_cache, repeats,
                             algorithms, done, on_layer, log, local)  # fmt: skip
    xb_model = input_at_batch(calibration, batch)
    deployed = deployment.apply(model)
    whole = {"given": lambda: given(xb_model), "model": lambda: model(xb_model),
             "deployed": lambda: deployed(xb_model),
             **{f"layer {n}": f for n, f in originals.items()}}  # fmt: skip
    # the originals and the models in two windows too, around the frontier's second one: the
    # latency no candidate changes is a difference of two of them, and one burst of load had
    # made it 7.6 ms where other runs measured 1.9-2.4 (docs/benchmarks.md)
    first = compare(whole, warmup=1, repeats=repeats)
    again = sum(len(r) - 1 for r in retained.values() if len(r) > 1)
    if log and again:
        log(f"  timing again the {again} candidates that an allocation can choose (each layer's "
            "frontier of latency and sensitivity), in a second window")  # fmt: skip
    for name, kept in retained.items():
        out[name] = second_window(out[name], kept, cache, repeats)
    retained.clear()
    if use_cache:
        cache_store.save(CACHE_FILE, cache)
    second = compare(whole, warmup=1, repeats=repeats)
    ms = {name: (first[name].ms + second[name].ms) / 2 for name in whole}
    out = common_window(out, {n: ms[f"layer {n}"] for n in originals})
    total = min(ms["given"], ms["model"])
    conv_total = sum(cs[0].latency_ms for cs in out.values())
    # what no candidate changes, as it will run deployed (batch norms folded, ReLUs fused)
    fixed = max(0.0, ms["deployed"] - conv_total)
    return out, fixed, total


def _add_pair_candidates(out, retained, model, layers, inputs, calibration, reference, logits,
                         batch, fmt, form, deployment, cache, use_cache, repeats, algorithms,
                         done, on_layer, log, local) -> None:  # fmt: skip
    """Each prunable pair's candidates (:mod:`.pair_candidates`) added to its two layers' in
    ``out``, the frontier's calls to ``retained``; pairs whose layers an interrupted run had
    finished with theirs are not measured again."""
    resumed = {n for n, cs in (done or {}).items() if any(c.method == PRUNE for c in cs)}
    timed: dict[str, dict] = {}
    new = pair_candidates(model, [n for n in layers if n not in resumed], inputs, calibration,
                          reference, logits, batch, fmt, form, deployment, cache, use_cache,
                          repeats, lambda m, e: algorithm_variants(m, e, algorithms, fmt),
                          timed, local)  # fmt: skip
    for name, extra in new.items():
        cands = out[name] + extra
        out[name] = cands
        on_frontier = {c.key for c in frontier(cands)} | {KEEP}
        calls = {**retained.get(name, {}), **timed.get(name, {})}
        retained[name] = {key: call for key, call in calls.items() if key in on_frontier}
        if on_layer is not None:
            on_layer(name, cands)
    if log and new:
        pairs = len(new) // 2
        shares = ", ".join(f"{s:g}" for s in KEEP_SHARES)
        log(f"  pruned pairs: {pairs} pair(s) of convolutions, {sum(map(len, new.values()))} "
            f"candidates (each pair at {shares} of its channels, in multiples of 8 and at least "
            f"{vector_floats(calibration.device)}, the second layer refitted by least "
            "squares)")  # fmt: skip


def within_error(candidates: dict[str, list[Candidate]], max_error: float) -> dict:
    """Each layer's candidates without those whose output error on the calibration inputs is
    above ``max_error`` or not finite. Surgery (:func:`..verify.decompose_model`) rolls such a
    rewrite back, so a plan counting on its speed would be built and measured without it: an
    untrained ResNet-50's plans had layer sums of 2.1x-5.8x and measured 1.1x-1.2x assembled,
    most of their rewrites rolled back (random weights have flat spectra)."""
    return {
        name: [c for c in cands if c.method == "keep" or c.output_error <= max_error]
        for name, cands in candidates.items()
    }  # NaN compares false: dropped


def aligned(rank, multiple: int):
    """``rank`` with each component rounded to the nearest multiple of ``multiple`` (at least
    ``multiple``): the channel counts that vector units and GEMM kernels are blocked for."""
    if not multiple:
        return rank
    snap = lambda r: max(multiple, multiple * round(r / multiple))  # noqa: E731
    return tuple(snap(r) for r in rank) if isinstance(rank, tuple) else snap(rank)


def _ranks(spec: ConvSpec, method, ratios, align: int) -> list:
    """The ranks of ``method`` for the MACs ratios, each once, and each again aligned to
    ``align`` channels (the rank a ratio gives is rarely a multiple of 8: 22, 34, 57) where the
    method's rank counts channels."""
    if not registry.get(method).channel_ranks:
        align = 0
    out = []
    for ratio in ratios:
        try:
            rank = budget_rank(spec, method, ratio)
        except (LeanconvError, ValueError):
            continue
        for r in (rank, aligned(rank, align)):
            if r not in out:
                out.append(r)
    return out


def rewrites(layer, name, x, methods, ratios, fmt, align: int = 0) -> tuple[dict, dict]:
    """The rewrites of one layer, keyed ``(method, rank, "direct")``: the layer kept, and each
    method at the rank of each MACs ratio and at that rank aligned to ``align`` channels (0: not
    aligned), each rank once, ranks that a method cannot take skipped; and the relative weight
    error of each."""
    modules: dict[tuple, nn.Module] = {KEEP: layer}
    errors: dict[tuple, float] = {KEEP: 0.0}
    try:
        spec = ConvSpec.from_module(layer, tuple(x.shape), name)
    except (LeanconvError, ValueError):
        return modules, errors  # not a convolution the methods take: kept as it is
    for method in methods:
        for rank in _ranks(spec, method, ratios, align):
            try:
                d = decompose_layer(layer, method, rank, name=name, input_size=tuple(x.shape[2:]))
            except (LeanconvError, ValueError):
                continue
            modules[(d.method, d.rank, "direct")] = d.module.eval().to(memory_format=fmt)
            errors[(d.method, d.rank, "direct")] = d.weight_error
    return modules, errors


def algorithm_variants(modules: dict, errors: dict, algorithms, fmt) -> tuple[dict, dict]:
    """``modules`` and, for each, a variant run by each fast algorithm that applies to it (same
    weight error: the algorithms are exact)."""
    modules, errors = dict(modules), dict(errors)
    for (method, rank, _), mod in list(modules.items()):
        for algorithm in algorithms:
            fast = with_algorithm(mod, algorithm)
            if fast is not None:
                modules[(method, rank, algorithm)] = fast.eval().to(memory_format=fmt)
                errors[(method, rank, algorithm)] = errors[(method, rank, "direct")]
    return modules, errors
