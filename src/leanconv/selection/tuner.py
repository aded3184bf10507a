"""Per-layer algorithm selection on the machine at hand: ``accelerate(model, example_input)``.

For each ``nn.Conv2d`` the tuner (1) records the layer's real input from one forward pass of the
example, (2) builds every applicable fast form (direct convolution on a weight packed once for
oneDNN, the narrow direct kernel for layers of at most 64 output channels, Winograd F(2x2),
F(4x4), F(6x6) for small kernels, FFT for large ones), (3) checks each
against the layer's own output (max error relative to the largest output magnitude, must stay
within ``tolerance``), (4) times the survivors against the native layer with interleaved runs
and medians (the forms within 25 % of the fastest a second time), and (5) replaces the layer
with the fastest one only if it beats the native layer by ``margin``. Each ``nn.Linear`` is
tuned the same way against its one fast form, the streaming
matrix-vector kernel (:mod:`leanconv.algorithms.gemv`: at batch 1 a fully connected layer is
bound by reading its weight, which the library's product does with one core). A final
end-to-end measurement guards the promise that the result is never slower than the original:
if it is, the original layers are kept.

With ``deploy`` (the default) the layers are tuned in the model's inference form, the exact
rewrites of :mod:`leanconv.rewrite`: batch norms folded into the convolutions before them
before tuning (a convolution and its norm become one layer: one pass over the output instead of
two); after it, each ReLU that follows a convolution computed in the pass that writes the
convolution's output (the Winograd output transform, the packed oneDNN convolution: a plain
convolution that absorbs a ReLU becomes packed); and the model in the faster of the NCHW and
channels-last layouts: the model is tuned in each, and the two tuned models are timed on the
example (a layout chosen on the native layers alone kept VGG-16 at batch 1 channels-first, where
its 224x224 64-channel layer gains nothing from Winograd). The result
equals the model up to float32 rounding; ``report.max_error`` is its largest deviation on the
example, relative to the largest output.

Timings are cached on disk keyed by input shape, weight shape, geometry, dtype, thread count,
device and torch version, so a second call re-checks errors but times nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .. import cache as cache_store
from ..algorithms import native
from ..bench.timing import compare
from ..modules import FORMATS, capture_inputs, conv_layers, replace_modules
from ..rewrite import fold_batchnorm, fuse_activations
from . import eligibility
from .benchmark import relative_errors

CACHE_FILE = "tuner.json"
RUNOFF = 0.25  # forms within 25 % of the fastest are timed a second time (see _runoff)


@dataclass
class LayerChoice:
    """What the tuner measured and decided for one convolution or fully connected layer."""

    name: str
    geometry: str
    native_ms: float
    candidates: dict[str, float]  # algorithm -> median ms (only those within tolerance)
    errors: dict[str, float]  # algorithm -> relative error on the example
    chosen: str = "native"
    rejected: dict[str, str] = field(default_factory=dict)  # algorithm -> why

    @property
    def speedup(self) -> float:
        if self.chosen == "native":
            return 1.0
        return self.native_ms / self.candidates[self.chosen]


@dataclass
class TuneReport:
    layers: list[LayerChoice]
    native_ms: float = 0.0
    accelerated_ms: float = 0.0
    reverted: bool = False
    cache_hits: int = 0
    notes: list[str] = field(default_factory=list)
    memory_format: str = "contiguous"  # the layout the accelerated model runs in
    folded: list[str] = field(default_factory=list)  # batch norms folded (deploy)
    fused: list[str] = field(default_factory=list)  # ReLUs fused (deploy)
    max_error: float = 0.0  # max |accelerated - original| / max |original| on the example

    @property
    def speedup(self) -> float:
        return self.native_ms / self.accelerated_ms if self.accelerated_ms else 1.0

    def chosen(self) -> list[str]:
        """The layers replaced by a fast form."""
        return [layer.name for layer in self.layers if layer.chosen != "native"]

    def as_dict(self) -> dict:
        return {
            "native_ms": self.native_ms,
            "accelerated_ms": self.accelerated_ms,
            "speedup": self.speedup,
            "reverted": self.reverted,
            "cache_hits": self.cache_hits,
            "notes": self.notes,
            "memory_format": self.memory_format,
            "folded": self.folded,
            "fused": self.fused,
            "max_error": self.max_error,
            "layers": [asdict(layer) | {"speedup": layer.speedup} for layer in self.layers],
        }


def candidate_builders(conv: nn.Conv2d | nn.Linear) -> dict[str, Callable[[], nn.Module]]:
    """The fast forms that apply to ``conv`` (:mod:`.eligibility` with the tuner's limits), by
    name, each as a builder of a module; for an ``nn.Linear``, the streaming kernel's."""
    from ..nn.fast import FFTConv2d, NarrowConv2d, PackedConv2d, WinogradConv2d
    from ..nn.gemv_linear import GemvLinear

    out: dict[str, Callable[[], nn.Module]] = {}
    if isinstance(conv, nn.Linear):
        if native.available():
            out["gemv"] = lambda: GemvLinear.from_linear(conv)
        return out
    if not eligibility.packed(conv):
        return out
    out["packed"] = lambda: PackedConv2d.from_conv(conv)
    if eligibility.narrow(conv) and native.available():
        out["narrow"] = lambda: NarrowConv2d.from_conv(conv)
    if eligibility.winograd(conv, eligibility.WINOGRAD_TUNER):
        for m in (2, 4, 6):
            out[f"winograd{m}"] = lambda m=m: WinogradConv2d.from_conv(conv, tile=m)
    if eligibility.fft(conv, eligibility.FFT_TUNER):
        out["fft"] = lambda: FFTConv2d.from_conv(conv)
    return out


def _key(conv: nn.Conv2d | nn.Linear, x: torch.Tensor, name: str) -> str:
    geometry = (
        ("linear",) if isinstance(conv, nn.Linear)
        else (conv.stride, conv.padding, conv.dilation, conv.groups)
    )  # fmt: skip
    return "|".join(
        map(
            str,
            (
                name,
                tuple(x.shape),
                tuple(conv.weight.shape),
                *geometry,
                conv.bias is not None,
                "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "nchw",
                x.dtype,
                torch.get_num_threads(),
                x.device.type,
                torch.__version__,
                native.build_id(),  # new kernels, new timings
            ),
        )
    )


def _rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    err = relative_errors(y, ref).max().item()
    return err if err == err else float("inf")  # NaN -> inf


def _checked_forms(
    conv: nn.Conv2d,
    builders: dict[str, Callable[[], nn.Module]],
    x: torch.Tensor,
    tolerance: float,
    choice: LayerChoice,
) -> dict[str, nn.Module]:
    """Build each form of ``conv`` and check it on ``x``: the forms within ``tolerance``, with
    each error and each rejection recorded in ``choice``."""
    modules: dict[str, nn.Module] = {}
    with torch.no_grad():
        ref = conv(x)
        for algo, build in builders.items():
            try:
                module = build().to(device=x.device, dtype=x.dtype).eval()
                choice.errors[algo] = _rel_error(module(x), ref)
            except (ValueError, RuntimeError) as exc:
                choice.rejected[algo] = str(exc).splitlines()[0]
                continue
            if choice.errors[algo] <= tolerance:
                modules[algo] = module
            else:
                choice.rejected[algo] = f"error {choice.errors[algo]:.2e} > {tolerance:.0e}"
    return modules


def _timed(
    conv: nn.Conv2d,
    x: torch.Tensor,
    modules: dict[str, nn.Module],
    key: str,
    cache: dict | None,
    report: TuneReport,
    timing: dict,
) -> dict[str, float]:
    """Median ms of the native layer and of each form, from ``cache`` when it holds them all
    (``None``: no cache), else measured interleaved (and cached)."""
    timed = cache.get(key) if cache is not None else None
    if timed is not None and set(modules) <= set(timed):
        report.cache_hits += 1
        return timed
    fns = {"native": lambda c=conv, x=x: c(x)}
    fns |= {a: (lambda m=m, x=x: m(x)) for a, m in modules.items()}
    timed = {a: t.ms for a, t in compare(fns, warmup=2, **timing).items()}
    timed = _runoff(timed, fns, timing)
    if cache is not None:
        cache[key] = timed
    return timed


def _runoff(timed: dict[str, float], fns: dict[str, Callable[[], object]], timing: dict
            ) -> dict[str, float]:  # fmt: skip
    """``timed`` with the close contenders measured a second time: when more than one form runs
    within ``RUNOFF`` of the fastest, those forms and the native layer are timed again
    (interleaved, as before) and each one's time is the mean of its two medians.

    One round of medians leaves a choice between forms a few per cent apart to the machine's
    bursts; in VGG-16 at batch 1, F(2x2) won a 256-channel layer in some runs where F(4x4) ran
    1.4x faster in the others. A second round at another moment halves the variance of exactly
    the comparisons that decide, at the cost of re-timing only them."""
    forms = {a: ms for a, ms in timed.items() if a != "native"}
    fastest = min(forms.values(), default=0.0)
    close = [a for a, ms in forms.items() if ms <= (1 + RUNOFF) * fastest]
    if len(close) < 2:
        return timed
    again = compare({a: fns[a] for a in ("native", *close)}, warmup=1, **timing)
    return timed | {a: (timed[a] + t.ms) / 2 for a, t in again.items()}


def _tune_layer(
    name: str, conv: nn.Conv2d | nn.Linear, x: torch.Tensor, tolerance: float, margin: float,
    cache: dict | None, report: TuneReport, timing: dict,
) -> nn.Module | None:  # fmt: skip
    """Record ``conv``'s :class:`LayerChoice` in ``report``; the fast module chosen, or None."""
    choice = LayerChoice(name, _geometry(conv, x), 0.0, {}, {})
    report.layers.append(choice)
    builders = candidate_builders(conv)
    if not builders:
        return None
    modules = _checked_forms(conv, builders, x, tolerance, choice)
    timed = _timed(conv, x, modules, _key(conv, x, name), cache, report, timing)
    choice.native_ms = timed["native"]
    choice.candidates = {a: timed[a] for a in modules}
    best = min(choice.candidates, key=choice.candidates.get, default=None)
    if best is None or choice.candidates[best] >= (1 - margin) * choice.native_ms:
        return None
    choice.chosen = best
    return modules[best]


def _slower_end_to_end(
    original: nn.Module, model: nn.Module, example: torch.Tensor, report: TuneReport, timing: dict
) -> bool:
    """Time both models on ``example`` into ``report``; True (and every layer back to native in
    the report) when the accelerated one is slower."""
    timings = compare(
        {"native": lambda: original(example), "fast": lambda: model(example)}, warmup=2, **timing
    )
    report.native_ms, report.accelerated_ms = timings["native"].ms, timings["fast"].ms
    if report.accelerated_ms <= report.native_ms:
        return False
    report.reverted = True
    # the model returned is the original as given: nothing folded, fused or moved
    report.memory_format, report.folded, report.fused, report.max_error = "contiguous", [], [], 0.0
    report.notes.append(
        f"end to end {report.accelerated_ms:.2f} ms > native {report.native_ms:.2f} ms: "
        "kept the native layers"
    )
    for layer in report.layers:
        layer.chosen = "native"
    return True


def _max_error(original: nn.Module, model: nn.Module, example: torch.Tensor) -> float:
    with torch.no_grad():
        return _rel_error(model(example), original(example))


def accelerate(
    model: nn.Module,
    example_input: torch.Tensor,
    tolerance: float = 1e-4,
    margin: float = 0.05,
    repeats: int = 7,
    use_cache: bool = True,
    num_threads: int | None = None,
    deploy: bool = True,
) -> tuple[nn.Module, TuneReport]:
    """Return an accelerated copy of ``model`` and the measurements behind each choice.

    ``model`` itself is not modified. Layers stay native unless a fast form is within
    ``tolerance`` (relative error) and at least ``margin`` faster. ``deploy``: tune and return
    the model in its inference form (see the module docstring), tuned in each layout and kept in
    the one whose tuned model runs the example faster.
    """
    original = copy.deepcopy(model).eval()
    timing = dict(repeats=repeats, num_threads=num_threads, device=example_input.device)
    cache = cache_store.load(CACHE_FILE) if use_cache else None
    args = (example_input, tolerance, margin, cache, timing)
    if not deploy:
        model, report = _tuned(copy.deepcopy(original), None, *args)
    else:
        folded, names, _ = fold_batchnorm(copy.deepcopy(original), inplace=True)
        tuned = {fmt: _tuned(copy.deepcopy(folded), fmt, *args) for fmt in FORMATS}
        with torch.no_grad():
            t = compare({fmt: (lambda m=m: m(example_input)) for fmt, (m, _) in tuned.items()},
                        warmup=2, **timing)  # fmt: skip
        fmt = min(t, key=lambda f: t[f].ms)
        model, report = tuned[fmt]
        report.folded = names
        report.notes.append(
            "tuned in each layout, kept the faster: "
            + ", ".join(f"{f} {t[f].ms:.2f} ms" for f in FORMATS)
        )
    if cache is not None:
        cache_store.save(CACHE_FILE, cache)
    report.max_error = _max_error(original, model, example_input)
    changed = bool(report.chosen() or report.folded or report.fused
                   or report.memory_format != "contiguous")  # fmt: skip
    if changed and _slower_end_to_end(original, model, example_input, report, timing):
        return original, report
    return model, report


def _tuned(
    model: nn.Module, layout: str | None, example: torch.Tensor, tolerance: float, margin: float,
    cache: dict | None, timing: dict,
) -> tuple[nn.Module, TuneReport]:  # fmt: skip
    """``model`` (changed in place) with each layer's fastest form, tuned in ``layout`` (a key
    of ``FORMATS``; ``None``: as given, nothing fused), and the report of its choices."""
    report = TuneReport([])
    if layout is not None:
        report.memory_format = layout
        model = model.to(memory_format=FORMATS[layout])
    layers = conv_layers(model, (nn.Conv2d, nn.Linear))
    inputs = capture_inputs(model, layers, example, strict=False)
    chosen = {}
    for name, x in inputs.items():
        fast = _tune_layer(name, model.get_submodule(name), x, tolerance, margin, cache, report,
                           timing)  # fmt: skip
        if fast is not None:
            chosen[name] = fast
    replace_modules(model, chosen, inplace=True)
    if layout is not None:
        # the layers the tuner kept native stay unpacked unless a ReLU is fused into them
        model, report.fused = fuse_activations(model, inplace=True, pack=False)
        model = model.to(memory_format=FORMATS[layout])
    return model, report


def _geometry(conv: nn.Conv2d | nn.Linear, x: torch.Tensor) -> str:
    if isinstance(conv, nn.Linear):
        return f"{conv.in_features}->{conv.out_features} linear @ {tuple(x.shape)}"
    k = "x".join(map(str, conv.kernel_size))
    s = "x".join(map(str, conv.stride))
    return f"{conv.in_channels}->{conv.out_channels} k{k} s{s} g{conv.groups} @ {tuple(x.shape)}"
