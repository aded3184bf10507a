"""Before/after measurements in one harness: accuracy, parameters, MACs, latency per batch size.

Latencies of the models are measured interleaved (:func:`leanconv.bench.compare`) so that
load from elsewhere on a shared machine hits all alike and their ratios stay meaningful. Each model
is measured in both memory formats (NCHW and channels-last, :data:`FORMATS`); its latency is that
of the faster format, so a speedup never comes from a layout the original could have used too.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..bench.timing import compare
from ..cost import count
from ..modules import FORMATS, input_at_batch
from .evaluate import ACCURACY, Metric


@dataclass
class ModelFigures:
    metric: float  # the task's metric (higher is better): accuracy in percent by default
    params: int
    macs: int  # per image
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> median ms
    # memory format -> batch size -> median ms (latency_ms holds the faster format's)
    latency_by_format: dict[str, dict[int, float]] = field(default_factory=dict)
    metric_name: str = "accuracy"

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy in percent for a classifier judged by it, else ``None``."""
        return self.metric if self.metric_name == "accuracy" else None

    def as_dict(self) -> dict:
        d = asdict(self)
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy
        d["latency_ms"] = {str(k): v for k, v in self.latency_ms.items()}
        d["latency_by_format"] = {
            f: {str(k): v for k, v in by.items()} for f, by in self.latency_by_format.items()
        }
        return d

    def best_format(self) -> str:
        """The memory format that was faster at the largest batch measured."""
        if not self.latency_by_format:
            return "contiguous"
        batch = max(self.latency_ms)
        return min(self.latency_by_format, key=lambda f: self.latency_by_format[f][batch])


def in_format(model: nn.Module, memory_format: str) -> nn.Module:
    """``model`` (a copy) with its 4-D weights in ``memory_format``: PyTorch's convolutions then
    run in that layout whatever the input's, and the layout carries through the network."""
    return copy.deepcopy(model).to(memory_format=FORMATS[memory_format])


def static_figures(model: nn.Module, data, example: torch.Tensor,
                   metric: Metric = ACCURACY) -> ModelFigures:  # fmt: skip
    """The metric on ``data``, and parameters and MACs per sample counted on ``example[:1]``."""
    report = count(model, example[:1])
    return ModelFigures(metric(model, data), report.total.params, report.total.macs,
                        metric_name=metric.name)  # fmt: skip


def measure_latency(
    models: dict[str, nn.Module],
    sample_shape: tuple[int, ...],
    batch_sizes=(1, 64),
    repeats: int = 10,
    seed: int = 0,
    images: torch.Tensor | None = None,
) -> dict[str, dict[int, float]]:
    """Median latency in ms of each model at each batch size, all measured interleaved (see
    :func:`measure_formats` for both memory formats), on ``images`` (repeated or cut to each
    batch size; Gaussian noise when not given): real images are what a model serves, and what
    the closed loop times plans on."""
    out: dict[str, dict[int, float]] = {name: {} for name in models}
    g = torch.Generator().manual_seed(seed)
    for batch in batch_sizes:
        if images is not None:
            x = input_at_batch(images, batch)
        else:
            x = torch.randn((batch, *sample_shape), generator=g)
        for m in models.values():
            m.eval()
        timings = compare({n: (lambda m=m, x=x: m(x)) for n, m in models.items()}, warmup=2,
                          repeats=repeats, min_time=0.5)  # fmt: skip
        for name, t in timings.items():
            out[name][batch] = t.ms
    return out


def measure_formats(
    models: dict[str, nn.Module],
    figures: dict[str, ModelFigures],
    sample_shape: tuple[int, ...],
    batch_sizes=(1, 64),
    repeats: int = 10,
    images: torch.Tensor | None = None,
    rounds: int = 1,
) -> None:
    """Measure every model in both memory formats, interleaved, into ``figures[name]``:
    ``latency_by_format`` and ``latency_ms`` (the faster format per batch); inputs as in
    :func:`measure_latency`. With ``rounds``, the whole measurement is repeated that many times
    and each latency is the median of the rounds' medians: one round of a ~30 ms model lasts a
    few seconds, and a burst of load from elsewhere that long slowed a compressed demo model by
    40 % in the pipeline's report (2.27x, where five rounds in a fresh process gave 2.75-2.95x;
    docs/benchmarks.md)."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be at least 1")
    variants = {f"{name}/{fmt}": in_format(m, fmt) for name, m in models.items() for fmt in FORMATS}
    each = [measure_latency(variants, sample_shape, batch_sizes, repeats, images=images)
            for _ in range(rounds)]  # fmt: skip
    times = {v: {b: statistics.median(r[v][b] for r in each) for b in batch_sizes}
             for v in variants}  # fmt: skip
    for name in models:
        by = {fmt: times[f"{name}/{fmt}"] for fmt in FORMATS}
        figures[name].latency_by_format = by
        figures[name].latency_ms = {b: min(by[f][b] for f in FORMATS) for b in batch_sizes}
