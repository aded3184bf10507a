"""Per-layer algorithm selection on the machine at hand: ``accelerate(model, example_input)``.

For each ``nn.Conv2d`` the tuner (1) records the layer's real input from one forward pass of the
example, (2) builds every applicable fast form (direct convolution on a weight packed once for
oneDNN, Winograd F(2x2), F(4x4), F(6x6) for small kernels, FFT for large ones), (3) checks each
against the layer's own output (max error relative to the largest output magnitude, must stay
within ``tolerance``), (4) times the survivors against the native layer with interleaved runs
and medians, and (5) replaces the layer with the fastest one only if it beats the native layer
by ``margin``. A final end-to-end measurement guards the promise that the result is never slower
than the original: if it is, the original layers are kept.

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
from ..bench.timing import compare

CACHE_FILE = "tuner.json"


@dataclass
class LayerChoice:
    """What the tuner measured and decided for one convolution."""

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

    @property
    def speedup(self) -> float:
        return self.native_ms / self.accelerated_ms if self.accelerated_ms else 1.0

    def as_dict(self) -> dict:
        return {
            "native_ms": self.native_ms,
            "accelerated_ms": self.accelerated_ms,
            "speedup": self.speedup,
            "reverted": self.reverted,
            "cache_hits": self.cache_hits,
            "notes": self.notes,
            "layers": [asdict(layer) | {"speedup": layer.speedup} for layer in self.layers],
        }


def candidate_builders(conv: nn.Conv2d) -> dict[str, Callable[[], nn.Module]]:
    """The fast forms that apply to ``conv``, by name, each as a builder of a module."""
    from ..nn.fast import FFTConv2d, PackedConv2d, WinogradConv2d

    kh, kw = conv.kernel_size
    out: dict[str, Callable[[], nn.Module]] = {}
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return out
    out["packed"] = lambda: PackedConv2d.from_conv(conv)
    small = max(kh, kw) <= 5 and conv.groups == 1 and min(conv.in_channels, conv.out_channels) >= 8
    if small and max(conv.stride) <= 2:
        for m in (2, 4, 6):
            out[f"winograd{m}"] = lambda m=m: WinogradConv2d.from_conv(conv, tile=m)
    if max(kh, kw) >= 7 and conv.stride == (1, 1):
        out["fft"] = lambda: FFTConv2d.from_conv(conv)
    return out


def _key(conv: nn.Conv2d, x: torch.Tensor, name: str) -> str:
    return "|".join(
        map(
            str,
            (
                name,
                tuple(x.shape),
                tuple(conv.weight.shape),
                conv.stride,
                conv.padding,
                conv.dilation,
                conv.groups,
                x.dtype,
                torch.get_num_threads(),
                x.device.type,
                torch.__version__,
            ),
        )
    )


def _rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny)
    err = ((y - ref).abs().max() / scale).item()
    return err if err == err else float("inf")  # NaN -> inf


def _capture_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d:
            handles.append(
                module.register_forward_pre_hook(
                    lambda m, a, name=name: inputs.setdefault(name, a[0].detach())
                )
            )
    try:
        with torch.no_grad():  # not inference_mode: fast modules track the weight's version
            model(example)
    finally:
        for h in handles:
            h.remove()
    return inputs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def accelerate(
    model: nn.Module,
    example_input: torch.Tensor,
    tolerance: float = 1e-4,
    margin: float = 0.05,
    repeats: int = 7,
    use_cache: bool = True,
    num_threads: int | None = None,
) -> tuple[nn.Module, TuneReport]:
    """Return an accelerated copy of ``model`` and the measurements behind each choice.

    ``model`` itself is not modified. Layers stay native unless a fast form is within
    ``tolerance`` (relative error) and at least ``margin`` faster.
    """
    model = copy.deepcopy(model).eval()
    original = copy.deepcopy(model)
    inputs = _capture_inputs(model, example_input)
    cache = cache_store.load(CACHE_FILE) if use_cache else {}
    report = TuneReport([])
    device = example_input.device
    for name, x in inputs.items():
        conv = model.get_submodule(name)
        builders = candidate_builders(conv)
        choice = LayerChoice(name, _geometry(conv, x), 0.0, {}, {})
        report.layers.append(choice)
        if not builders:
            continue
        with torch.no_grad():
            ref = conv(x)
            modules = {}
            for algo, build in builders.items():
                try:
                    module = build().to(device=device, dtype=x.dtype).eval()
                    choice.errors[algo] = _rel_error(module(x), ref)
                except (ValueError, RuntimeError) as exc:
                    choice.rejected[algo] = str(exc).splitlines()[0]
                    continue
                if choice.errors[algo] <= tolerance:
                    modules[algo] = module
                else:
                    choice.rejected[algo] = f"error {choice.errors[algo]:.2e} > {tolerance:.0e}"
        key = _key(conv, x, name)
        timed = cache.get(key) if use_cache else None
        if timed is not None and set(modules) <= set(timed):
            report.cache_hits += 1
        else:
            fns = {"native": lambda c=conv, x=x: c(x)}
            fns |= {a: (lambda m=m, x=x: m(x)) for a, m in modules.items()}
            timings = compare(fns, warmup=2, repeats=repeats, num_threads=num_threads,
                              device=device)  # fmt: skip
            timed = {a: t.ms for a, t in timings.items()}
            cache[key] = timed
        choice.native_ms = timed["native"]
        choice.candidates = {a: timed[a] for a in modules}
        best = min(choice.candidates, key=choice.candidates.get, default=None)
        if best is not None and choice.candidates[best] < (1 - margin) * choice.native_ms:
            choice.chosen = best
            _set(model, name, modules[best])
    if use_cache:
        cache_store.save(CACHE_FILE, cache)
    if any(layer.chosen != "native" for layer in report.layers):
        timings = compare(
            {"native": lambda: original(example_input), "fast": lambda: model(example_input)},
            warmup=2, repeats=repeats, num_threads=num_threads, device=device,
        )  # fmt: skip
        report.native_ms, report.accelerated_ms = timings["native"].ms, timings["fast"].ms
        if report.accelerated_ms > report.native_ms:
            report.reverted = True
            report.notes.append(
                f"end to end {report.accelerated_ms:.2f} ms > native {report.native_ms:.2f} ms: "
                "kept the native layers"
            )
            for layer in report.layers:
                layer.chosen = "native"
            return original, report
    return model, report


def _geometry(conv: nn.Conv2d, x: torch.Tensor) -> str:
    k = "x".join(map(str, conv.kernel_size))
    s = "x".join(map(str, conv.stride))
    return f"{conv.in_channels}->{conv.out_channels} k{k} s{s} g{conv.groups} @ {tuple(x.shape)}"
