"""Hardware-aware planning: one rewrite per layer, chosen globally to meet a target.

For every convolution the planner builds candidates — each decomposition method at several ranks
(ranks from MACs budgets of the layer, :func:`leanconv.decompose.rank.budget_rank`) plus "keep",
and each of those again with its 3x3 convolutions computed by Winograd F(2x2), F(4x4) or F(6x6)
(:mod:`.algorithms`) — and gives each
- its **measured latency** on this machine, on the layer's real input at the deployment batch,
  in its deployment form (:mod:`.deploy`; interleaved medians; cached on disk by geometry, rank,
  batch, layout, threads and device), relative to the layer's original timed with it and put on
  one measurement of all the originals together (:func:`common_window`),
- its **sensitivity**: the KL divergence of the whole model's predictions on a calibration set when
  only that layer is rewritten (Kim et al. 2016 and later work rank layers this way; for a model
  whose outputs are not class logits, their relative squared error, :mod:`.outputs`); a fast
  algorithm adds none to the rewrite it computes (it is exact up to float32 rounding). A
  truncated decomposition at a lower rank keeps a subspace of what a higher rank keeps (SVD and
  HOSVD truncations are nested), so a lower rank is taken to be at least as sensitive as any
  higher rank of the same method (:func:`monotone_sensitivity`): on a small calibration set the
  KL of two small rewrites can come out in the wrong order, and the allocation would then cut
  MACs that buy no time (a VGG-16 layer at Tucker-2 rank 6 measured 0.0011 nats, at rank 8
  0.0018, at the same latency). The per-image divergences are kept (``kl_samples``), and with
  them the standard error of the mean (``sensitivity_se``): on 64 images of the digits the KL of
  one VGG-16 rewrite ranged from 0.0001 to 0.0086 nats between disjoint sets of images,
- its MACs and parameters.

The allocation minimises the summed sensitivity subject to a latency (``speedup``), MACs
(``macs_ratio``) or accuracy-proxy budget, by Lagrangian relaxation: for a multiplier ``lam`` each
layer independently takes ``argmin(sensitivity + lam * cost)``; bisection on ``lam`` finds the
cheapest-in-sensitivity plan that meets the budget (Everett 1963; the standard
rate-distortion allocation), and what it leaves of the budget is spent greedily on the layers
whose more accurate candidates buy the most sensitivity per unit of cost. Latency that no
candidate changes (pooling, activations, the classifier) is measured once, on the model in its
deployment form (batch norms folded, ReLUs fused), and added as a constant, so the predicted
speedup is ``total_before / (fixed + sum of chosen layer latencies)``. If the target cannot be
met, the best plan found is returned with ``met = False``. For a speedup target the plan is then
the one with the most MACs among those within one standard error of the most accurate plan's
summed sensitivity (:mod:`.capacity`).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .. import cache as cache_store
from ..algorithms import native
from ..bench.timing import compare
from ..cost import count
from ..decompose.rank import budget_rank, canonical_method, output_error
from ..errors import LeanconvError
from . import capacity, outputs
from .algorithms import ALGORITHMS, with_algorithm
from .deploy import Deployment
from .measure import FORMATS, input_at_batch
from .replace import decompose_layer
from .surgery import conv_layers, replace_modules
from .verify import capture_inputs

#: The MACs budgets (shares of the layer's MACs) whose ranks each method is tried at.
DEFAULT_RATIOS = (0.06, 0.1, 0.15, 0.25, 0.4, 0.6)
CACHE_FILE = "latency.json"


@dataclass
class Candidate:
    layer: str
    method: str  # "keep" for the original layer
    rank: object
    macs: int
    params: int
    latency_ms: float
    sensitivity: float  # KL(original || rewritten) on the calibration set, in nats (see above)
    weight_error: float = 0.0
    output_error: float = 0.0  # relative error of the layer's own output on calibration inputs
    algorithm: str = "direct"  # or a key of algorithms.ALGORITHMS
    measured_sensitivity: float | None = None  # the KL as measured, before monotone_sensitivity
    sensitivity_se: float = 0.0  # standard error of the measured KL over the calibration images
    # the per-image KL of the measurement (what capacity.plan_sensitivity sums); not saved
    kl_samples: tuple[float, ...] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``keep``, ``tucker2 (12, 24)``, ``keep + winograd4``, ..."""
        text = self.method if self.rank is None else f"{self.method} {self.rank}"
        return text if self.algorithm == "direct" else f"{text} + {self.algorithm}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("kl_samples")
        d["rank"] = list(self.rank) if isinstance(self.rank, tuple) else self.rank
        return d


@dataclass
class Plan:
    choices: dict[str, Candidate]
    candidates: dict[str, list[Candidate]]
    fixed_ms: float  # latency of everything no candidate changes
    total_before_ms: float
    macs_before: int
    target: str
    met: bool
    notes: list[str] = field(default_factory=list)
    search: list[dict] = field(default_factory=list)  # trials of an accuracy-budget search
    # the planned model assembled and timed before fine-tuning (closed_loop.plan_for_speedup)
    assembled_ms: float | None = None
    original_ms: float | None = None
    # the standard error of the summed sensitivity as computed when planning (a plan read back
    # from JSON has no per-image divergences to compute it again)
    saved_sensitivity_se: float | None = None

    @property
    def predicted_ms(self) -> float:
        """Constant + the chosen layers' latencies, each measured alone."""
        return self.fixed_ms + sum(c.latency_ms for c in self.choices.values())

    @property
    def layer_sum_speedup(self) -> float:
        return self.total_before_ms / self.predicted_ms if self.predicted_ms else 1.0

    @property
    def predicted_speedup(self) -> float:
        """The assembled model's measured speedup where it was timed, else the layer sum's."""
        if self.assembled_ms and self.original_ms:
            return self.original_ms / self.assembled_ms
        return self.layer_sum_speedup

    @property
    def sensitivity(self) -> tuple[float, float]:
        """The chosen candidates' summed sensitivity and its standard error (nats)."""
        total, se = capacity.plan_sensitivity(self.choices.values())
        return total, se if self.saved_sensitivity_se is None else self.saved_sensitivity_se

    @property
    def macs_after(self) -> int:
        keep = {n: c for n, c in self.choices.items()}
        changed = sum(c.macs - self.candidates[n][0].macs for n, c in keep.items())
        return self.macs_before + changed

    def rewrites(self) -> dict[str, tuple[str, object]]:
        return {n: (c.method, c.rank) for n, c in self.choices.items() if c.method != "keep"}

    def algorithms(self) -> dict[str, str]:
        """Layers whose convolutions run by a fast algorithm, and which one."""
        return {n: c.algorithm for n, c in self.choices.items() if c.algorithm != "direct"}

    def as_dict(self) -> dict:
        sensitivity, sensitivity_se = self.sensitivity
        return {
            "target": self.target,
            "met": self.met,
            "fixed_ms": self.fixed_ms,
            "total_before_ms": self.total_before_ms,
            "predicted_ms": self.predicted_ms,
            "predicted_speedup": self.predicted_speedup,
            "layer_sum_speedup": self.layer_sum_speedup,
            "assembled_ms": self.assembled_ms,
            "original_ms": self.original_ms,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "sensitivity": sensitivity,
            "sensitivity_se": sensitivity_se,
            "notes": self.notes,
            "search": self.search,
            "layers": {n: c.as_dict() for n, c in self.choices.items()},
            "candidates": {n: [c.as_dict() for c in cs] for n, cs in self.candidates.items()},
        }


# ---------------------------------------------------------------------- candidates
def _latency_key(layer: nn.Module, key: tuple, shape, threads: int) -> str:
    method, rank, algorithm = key
    variant = (
        (method, rank) if algorithm == "direct" else (method, rank, algorithm, native.status())
    )
    text = repr((type(layer).__name__, getattr(layer, "weight", torch.empty(0)).shape,
                 getattr(layer, "stride", None), getattr(layer, "padding", None),
                 getattr(layer, "dilation", None), getattr(layer, "groups", None),
                 *variant, tuple(shape), threads, torch.__version__))  # fmt: skip
    return hashlib.sha1(text.encode()).hexdigest()


def kl_per_image(logits: torch.Tensor, reference_log_probs: torch.Tensor) -> torch.Tensor:
    """``KL(p_i || q_i)`` for each image ``i``: ``p`` the reference's predictions (log
    probabilities), ``q = softmax(logits)``; float64 (:func:`.outputs.divergence`)."""
    return outputs.divergence(logits, reference_log_probs, logits=True)


def _kl_estimate(per_image: torch.Tensor) -> tuple[float, float, tuple[float, ...]]:
    """Mean, standard error of the mean, and the values."""
    n = per_image.numel()
    se = float(per_image.std() / n**0.5) if n > 1 else 0.0
    return float(per_image.mean()), se, tuple(per_image.tolist())


def _at_least(rank, other) -> bool:
    """``rank`` keeps everything ``other`` keeps (every component at least as large)."""
    if isinstance(rank, tuple) and isinstance(other, tuple) and len(rank) == len(other):
        return all(a >= b for a, b in zip(rank, other))
    if isinstance(rank, int) and isinstance(other, int):
        return rank >= other
    return False


def monotone_sensitivity(cands: list[Candidate]) -> None:
    """Make sensitivity non-increasing in rank within each method, in place: a candidate's
    sensitivity becomes the largest measured at its own or any higher rank of its method (the
    upper envelope; the measured value stays in ``measured_sensitivity``)."""
    for c in cands:
        if c.measured_sensitivity is None:
            c.measured_sensitivity = c.sensitivity
    for c in cands:
        if c.method == "keep":
            continue
        c.sensitivity = max(
            o.measured_sensitivity
            for o in cands
            if o.method == c.method and _at_least(o.rank, c.rank)
        )


def common_window(candidates: dict[str, list[Candidate]], originals_ms: dict[str, float]) -> None:
    """Rescale each layer's candidate latencies, in place, so that its original ("keep", the
    first candidate) takes ``originals_ms[layer]``: what was measured interleaved with it (the
    ratios) is kept, and every layer is put on one common measurement. A layer's candidates are
    timed together, in a few seconds of their own; a shared machine whose speed drifts by 20 %
    over minutes would otherwise make the layer sum add latencies of different moments (on the
    test machine four spatial-SVD layers of VGG-16 ran 24-35 % slower in the assembled model
    than they had been timed while planning, six Tucker-2 chains 5-20 % faster)."""
    for name, cands in candidates.items():
        scale = originals_ms[name] / cands[0].latency_ms if cands[0].latency_ms > 0 else 1.0
        for c in cands:
            c.latency_ms *= scale


def build_candidates(
    model: nn.Module,
    calibration: torch.Tensor,
    layers: list[str] | None = None,
    methods: tuple[str, ...] = ("tucker2", "spatial_svd"),
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    batch: int = 64,
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
    outputs are compared by relative squared error (:mod:`.outputs`). ``done``: the candidates of
    layers measured before (a resumed run), not measured again; ``on_layer(name, candidates)``
    is called as each layer is finished (to keep them).

    Latencies are measured in the ``deployment`` form (:class:`.deploy.Deployment`: convolutions
    packed, weights and inputs in its memory format); the total is that of the model as given in
    the faster of its own layout and the deployment's.

    ``algorithms``: the fast algorithms to try on every candidate that has an eligible 3x3
    convolution (``()``: decompositions only).

    The fixed latency (everything no candidate changes) is measured on the model in its deployment
    form (batch norms folded, ReLUs fused); the total is the model as given, so the predicted
    speedup covers both the rewrites and the deployment form.
    """
    methods = tuple(canonical_method(m, "methods") for m in methods)  # unknown names raise
    memory_format = deployment.memory_format
    fmt = FORMATS[memory_format]
    form = (memory_format, "packed" if deployment.fuse else "plain")
    given = copy.deepcopy(model).eval()
    model = copy.deepcopy(model).eval().to(memory_format=fmt)
    layers = layers if layers is not None else conv_layers(model)
    inputs = capture_inputs(model, layers, calibration)
    with torch.no_grad():
        reference = outputs.reference(model(calibration), logits)
    cache = cache_store.load(CACHE_FILE) if use_cache else {}
    out: dict[str, list[Candidate]] = {}
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
        modules, errors = _rewrites(layer, name, x, methods, ratios, algorithms, fmt)
        timings = _latencies(layer, modules, xb, (*xb.shape, *form), cache, use_cache,
                             repeats, deployment)  # fmt: skip
        originals[name] = lambda m=deployment.layer(layer), xb=xb: m(xb)
        cands = _measured(model, name, layer, x, modules, errors, timings, calibration,
                          reference, logits)  # fmt: skip
        monotone_sensitivity(cands)
        out[name] = cands
        if on_layer is not None:
            on_layer(name, cands)
        if log:
            keep = cands[0].latency_ms
            log(f"  planned {i + 1}/{len(layers)} {name}: {len(cands) - 1} candidates, "
                f"{base.total.macs / 1e6:.1f} MMACs per sample, {keep:.2f} ms at batch "
                f"{batch}")  # fmt: skip
    if use_cache:
        cache_store.save(CACHE_FILE, cache)
    xb_model = input_at_batch(calibration, batch)
    deployed = deployment.apply(model)
    models = {"given": lambda: given(xb_model), "model": lambda: model(xb_model),
              "deployed": lambda: deployed(xb_model)}  # fmt: skip
    timings = compare({**models, **{f"layer {n}": f for n, f in originals.items()}},
                      warmup=1, repeats=repeats)  # fmt: skip
    common_window(out, {n: timings[f"layer {n}"].ms for n in originals})
    total = min(timings["given"].ms, timings["model"].ms)
    conv_total = sum(cs[0].latency_ms for cs in out.values())
    # what no candidate changes, as it will run deployed (batch norms folded, ReLUs fused)
    fixed = max(0.0, timings["deployed"].ms - conv_total)
    return out, fixed, total


def _rewrites(layer, name, x, methods, ratios, algorithms, fmt):
    """The candidate modules of one layer, keyed ``(method, rank, algorithm)``: the layer kept,
    each method at the rank of each MACs ratio (each rank once), and each of those again run by
    each fast algorithm that applies; and the weight error of each."""
    from ..spec import ConvSpec

    keep = ("keep", None, "direct")
    modules: dict[tuple, nn.Module] = {keep: layer}
    errors: dict[tuple, float] = {keep: 0.0}
    for method in methods:
        seen = set()
        for ratio in ratios:
            try:
                spec = ConvSpec.from_module(layer, tuple(x.shape), name)
                rank = budget_rank(spec, method, ratio)
            except (LeanconvError, ValueError):
                continue
            if rank in seen:
                continue
            seen.add(rank)
            try:
                d = decompose_layer(layer, method, rank, name=name, input_size=tuple(x.shape[2:]))
            except (LeanconvError, ValueError):
                continue
            modules[(d.method, d.rank, "direct")] = d.module.eval().to(memory_format=fmt)
            errors[(d.method, d.rank, "direct")] = d.weight_error
    for (method, rank, _), mod in list(modules.items()):
        for algorithm in algorithms:
            fast = with_algorithm(mod, algorithm)
            if fast is not None:
                modules[(method, rank, algorithm)] = fast.eval().to(memory_format=fmt)
                errors[(method, rank, algorithm)] = errors[(method, rank, "direct")]
    return modules, errors


def _latencies(layer, modules, xb, shape_form, cache, use_cache, repeats, deployment):
    """Each candidate's latency in its deployment form on ``xb``: from the cache, or measured
    interleaved with the others (and cached)."""
    threads = torch.get_num_threads()
    timings: dict[tuple, float] = {}
    todo = {}
    for key, mod in modules.items():
        ck = _latency_key(layer, key, shape_form, threads)
        if use_cache and ck in cache:
            timings[key] = cache[ck]
        else:
            todo[key] = (ck, deployment.layer(mod))
    if todo:
        measured = compare({str(k): (lambda m=m, xb=xb: m(xb)) for k, (_, m) in todo.items()},
                           warmup=1, repeats=repeats)  # fmt: skip
        for key, (ck, _) in todo.items():
            timings[key] = cache[ck] = measured[str(key)].ms
    return timings


def _measured(model, name, layer, x, modules, errors, timings, calibration, reference, logits):
    """The :class:`Candidate` of each module: its sensitivity (the whole model's divergence on
    the calibration inputs with only this layer rewritten), output error, MACs and latency."""
    cands = []
    sensitivity: dict[tuple, tuple] = {}
    for key, mod in modules.items():
        method, rank, algorithm = key
        if key == ("keep", None, "direct"):
            sens, out_err = (0.0, 0.0, None), 0.0
        else:
            if algorithm == "direct":
                trial = replace_modules(model, {name: mod}, inplace=False)
                with torch.no_grad():
                    sens = _kl_estimate(outputs.divergence(trial(calibration), reference, logits))
            else:
                # an exact algorithm: the sensitivity of the rewrite it computes (its float32
                # rounding, ~1e-5 of the output, shows in the output error), so that among
                # equally accurate candidates the allocation takes the fastest
                sens = sensitivity[(method, rank, "direct")]
            out_err = output_error(layer, mod, x, name=name)
        sensitivity[key] = sens
        # MACs and params per image, as the model totals; a fast algorithm keeps the
        # conventional count of the convolution it computes
        c = count(modules[(method, rank, "direct")], x[:1])
        cands.append(Candidate(name, method, rank, c.total.macs, c.total.params, timings[key],
                               sens[0], errors[key], out_err, algorithm, sensitivity_se=sens[1],
                               kl_samples=sens[2]))  # fmt: skip
    return cands


# ---------------------------------------------------------------------- allocation
def _pick(cands: dict[str, list[Candidate]], lam: float, cost) -> dict[str, Candidate]:
    """Each layer's ``argmin sensitivity + lam * cost``; ties go to the lower cost, then to the
    lower latency (a Winograd variant ties with its rewrite on sensitivity and MACs)."""
    return {
        n: min(cs, key=lambda c: (c.sensitivity + lam * cost(c), cost(c), c.latency_ms))
        for n, cs in cands.items()
    }


def _fill(
    plan: dict[str, Candidate], cands: dict[str, list[Candidate]], cost, spare: float
) -> dict[str, Candidate]:
    """Spend what the Lagrangian plan leaves of the budget: it only reaches plans on the convex
    hull of (cost, sensitivity), so it can stop well under the budget. Repeatedly switch the
    layer whose more accurate candidate buys the most sensitivity per unit of cost and still
    fits (the greedy repair of multiple-choice knapsack)."""
    plan = dict(plan)
    while True:
        best, best_rate = None, 0.0
        for name, cs in cands.items():
            now = plan[name]
            for c in cs:
                extra = cost(c) - cost(now)
                gain = now.sensitivity - c.sensitivity
                if gain > 0 and 0 < extra <= spare and gain / extra > best_rate:
                    best, best_rate = (name, c, extra), gain / extra
        if best is None:
            return plan
        name, c, extra = best
        plan[name] = c
        spare -= extra


def _lagrangian(
    objective: dict[str, list[Candidate]], cost, total, budget: float
) -> tuple[dict[str, Candidate], bool]:
    """The least-sensitive plan whose ``total`` meets ``budget`` (the multiplier found by
    bisection, what it leaves spent by :func:`_fill`), and whether it meets it; else the
    cheapest plan found."""
    lo, hi = 0.0, 1.0
    best = _pick(objective, hi, cost)
    for _ in range(60):  # grow the multiplier until the budget is met (or cannot be)
        if total(best) <= budget:
            break
        hi *= 4
        best = _pick(objective, hi, cost)
    met = total(best) <= budget + 1e-12
    if met:
        for _ in range(60):  # bisection: the smallest multiplier that still meets the budget
            mid = (lo + hi) / 2
            trial = _pick(objective, mid, cost)
            if total(trial) <= budget:
                hi, best = mid, trial
            else:
                lo = mid
        best = _fill(best, objective, cost, budget - total(best))
    return best, met


def allocate(
    candidates: dict[str, list[Candidate]],
    fixed_ms: float,
    total_ms: float,
    macs_before: int,
    speedup: float | None = None,
    macs_ratio: float | None = None,
    max_sensitivity: float | None = None,
    prefer_capacity: bool = True,
) -> Plan:
    """Choose one candidate per layer (see the module docstring). For a ``speedup`` target with
    ``prefer_capacity``, the plan is the one with the most MACs among those within one standard
    error of the most accurate plan's sensitivity (:mod:`.capacity`)."""
    given = [v is not None for v in (speedup, macs_ratio, max_sensitivity)]
    if sum(given) != 1:
        raise ValueError("give exactly one target: speedup, macs_ratio or max_sensitivity")
    if speedup is not None:
        if speedup <= 0:
            raise ValueError(f"speedup={speedup} must be positive")
        target = f"speedup {speedup:g}x"
        budget = total_ms / speedup - fixed_ms
        cost = lambda c: c.latency_ms  # noqa: E731

        def total(plan):
            return sum(c.latency_ms for c in plan.values())
    elif macs_ratio is not None:
        if not 0 < macs_ratio <= 1:
            raise ValueError(f"macs_ratio={macs_ratio} must be in (0, 1]")
        target = f"MACs ratio {macs_ratio:g}"
        other = macs_before - sum(cs[0].macs for cs in candidates.values())
        budget = macs_ratio * macs_before - other
        cost = lambda c: c.macs  # noqa: E731

        def total(plan):
            return sum(c.macs for c in plan.values())
    else:
        target = f"sensitivity <= {max_sensitivity:g}"
        # fastest plan whose summed sensitivity stays within the budget: swap roles
        budget = max_sensitivity
        cost = lambda c: c.sensitivity  # noqa: E731

        def total(plan):
            return sum(c.sensitivity for c in plan.values())

    if max_sensitivity is not None:
        lat = {n: [Candidate(**{**asdict(c), "sensitivity": c.latency_ms}) for c in cs]
               for n, cs in candidates.items()}  # fmt: skip
        objective = lat
    else:
        objective = candidates
    best, met = _lagrangian(objective, cost, total, budget)
    rule_note = None
    if met and speedup is not None and prefer_capacity:
        accurate = best
        solve = lambda c: _lagrangian(c, cost, total, budget)[0]  # noqa: E731
        best = capacity.prefer_capacity(best, objective, solve)
        if best is not accurate:
            s0, se0 = capacity.plan_sensitivity(accurate.values())
            s1 = capacity.plan_sensitivity(best.values())[0]
            more = capacity.macs_kept(best.values()) / capacity.macs_kept(accurate.values())
            rule_note = (f"one-standard-error rule: the layers keep {more:.2f}x the MACs of the "
                         f"most accurate plan for the budget, at a summed sensitivity of "
                         f"{s1:.4g} nats against its {s0:.4g} +- {se0:.2g}")  # fmt: skip
    choices = {n: next(c for c in candidates[n]
                       if (c.method, c.rank, c.algorithm) == (b.method, b.rank, b.algorithm))
               for n, b in best.items()}  # fmt: skip
    plan = Plan(choices, candidates, fixed_ms, total_ms, macs_before, target, met)
    if rule_note:
        plan.notes.append(rule_note)
    if not met:
        plan.notes.append(f"the target ({target}) cannot be met with these candidates; "
                          "this is the cheapest plan found")  # fmt: skip
    return plan
