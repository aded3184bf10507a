"""Before/after measurements in one harness: accuracy, parameters, MACs, latency per batch size.

Latencies of the two models are measured interleaved (:func:`leanconv.bench.compare`) so that
load from elsewhere on a shared machine hits both alike and their ratio stays meaningful.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from ..bench.timing import compare
from ..cost import count
from .evaluate import accuracy


@dataclass
class ModelFigures:
    accuracy: float
    params: int
    macs: int  # per image
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> median ms

    def as_dict(self) -> dict:
        d = asdict(self)
        d["latency_ms"] = {str(k): v for k, v in self.latency_ms.items()}
        return d


def static_figures(model: nn.Module, dataset: Dataset, sample_shape) -> ModelFigures:
    report = count(model, (1, *sample_shape))
    return ModelFigures(accuracy(model, dataset), report.total.params, report.total.macs)


def measure_latency(
    models: dict[str, nn.Module],
    sample_shape: tuple[int, ...],
    batch_sizes=(1, 64),
    repeats: int = 10,
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """Median latency in ms of each model at each batch size, all measured interleaved."""
    out: dict[str, dict[int, float]] = {name: {} for name in models}
    g = torch.Generator().manual_seed(seed)
    for batch in batch_sizes:
        x = torch.randn((batch, *sample_shape), generator=g)
        for m in models.values():
            m.eval()
        timings = compare({n: (lambda m=m, x=x: m(x)) for n, m in models.items()}, warmup=2,
                          repeats=repeats, min_time=0.5)  # fmt: skip
        for name, t in timings.items():
            out[name][batch] = t.ms
    return out
