"""Per-layer latency measured on this machine, next to the cost model's figures.

Each leaf module (a module without children) is timed on its own, on the very input it received
during one forward pass of the example, with the harness of :mod:`.timing`. The sum of the layers
is reported next to the end-to-end latency of the whole model, measured in the same run.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from ..cost import Convention, count
from ..modules import capture_calls
from . import allocator
from .roofline import Peak, Roofline, measure_peak, roofline
from .timing import compare, measure


@dataclass
class LayerProfile:
    name: str
    kind: str
    macs: int
    flops: int
    bytes: int
    ms: float
    roof: Roofline | None

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("name", "kind", "macs", "flops", "bytes", "ms")}
        if self.roof is not None:
            out.update(
                gflops=self.roof.achieved_gflops,
                fraction_of_peak=self.roof.fraction_of_peak,
                bound=self.roof.bound,
            )
        return out


@dataclass
class ProfileReport:
    model: str
    input_shape: tuple[int, ...]
    layers: list[LayerProfile]
    total_ms: float
    peak: Peak
    threads: int
    notes: list[str] = field(default_factory=list)
    allocator: str = "default"  # how the memory allocator was set while measuring (allocator.py)

    @property
    def layers_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)

    def share_by_kind(self) -> dict[str, float]:
        """Fraction of the summed layer time per layer kind."""
        total = self.layers_ms or 1.0
        shares: dict[str, float] = OrderedDict()
        for layer in self.layers:
            shares[layer.kind] = shares.get(layer.kind, 0.0) + layer.ms / total
        return dict(sorted(shares.items(), key=lambda kv: -kv[1]))

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "threads": self.threads,
            "allocator": self.allocator,
            "peak": {"gflops": self.peak.gflops, "gbytes": self.peak.gbytes},
            "total_ms": self.total_ms,
            "layers_ms": self.layers_ms,
            "share_by_kind": self.share_by_kind(),
            "layers": [layer.as_dict() for layer in self.layers],
            "notes": list(self.notes),
        }

    def to_table(self):
        from rich.table import Table

        table = Table(
            title=f"{self.model} at {tuple(self.input_shape)}, {self.threads} threads",
            caption=(
                f"end to end {self.total_ms:.3f} ms (sum of layers {self.layers_ms:.3f} ms); "
                f"peak {self.peak.gflops:.0f} GFLOP/s, {self.peak.gbytes:.1f} GB/s, "
                f"ridge {self.peak.ridge:.1f} FLOP/B"
            ),
        )
        for col in ("layer", "kind", "MFLOPs", "ms", "share", "GFLOP/s", "% peak", "bound"):
            table.add_column(col, justify="left" if col in ("layer", "kind", "bound") else "right")
        total = self.layers_ms or 1.0
        for layer in self.layers:
            roof = layer.roof
            table.add_row(
                layer.name,
                layer.kind,
                f"{layer.flops / 1e6:.1f}",
                f"{layer.ms:.3f}",
                f"{100 * layer.ms / total:.1f}%",
                f"{roof.achieved_gflops:.1f}" if roof else "",
                f"{100 * roof.fraction_of_peak:.1f}" if roof else "",
                roof.bound if roof else "",
            )
        return table


def _leaf_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple]:
    """The arguments of each leaf module's first call while ``model`` runs on ``example``."""
    leaves = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    return capture_calls(model, leaves, example)


def profile(
    model: nn.Module,
    example: torch.Tensor,
    name: str = "",
    repeats: int = 10,
    num_threads: int | None = None,
    convention: Convention | None = None,
    peak: Peak | None = None,
) -> ProfileReport:
    """Time every leaf module of ``model`` on ``example`` and set it against its cost and the
    machine's roofline. The model is put in eval mode and not otherwise changed. A model that
    is one graph (TorchScript, ``torch.export``) runs no layer as a module of its own: it gets
    the end-to-end time alone, and a note that says so."""
    notes = []
    try:
        model.eval()
    except NotImplementedError:  # a torch.export program's module: it stays as exported
        notes.append("a torch.export program is measured in the mode it was exported in")
    threads = num_threads or torch.get_num_threads()
    report = count(model, example, convention=convention or Convention(), name=name)
    peak = peak or measure_peak(example.device, example.dtype)
    costs: dict[str, list] = OrderedDict()
    for row in report.rows:
        costs.setdefault(row.name, []).append(row)
    inputs = _leaf_inputs(model, example)
    layers = []
    for lname, args in inputs.items():
        module = model.get_submodule(lname)
        rows = costs.get(lname, [])
        if not rows:  # runs no operation (Identity, Dropout in eval): nothing to time
            continue
        flops = sum(r.flops for r in rows)
        moved = sum(r.bytes for r in rows)
        kind = next((r.kind for r in rows if r.macs), rows[0].kind)
        # in-place modules (ReLU(inplace=True)) would change their saved input: time on a copy
        fn = (lambda m=module, a=args: m(*[x.clone() if torch.is_tensor(x) else x for x in a])) if (
            getattr(module, "inplace", False)
        ) else (lambda m=module, a=args: m(*a))  # fmt: skip
        t = measure(fn, warmup=2, repeats=repeats, num_threads=threads, device=example.device)
        roof = roofline(flops, moved, t.median, peak) if flops else None
        layers.append(
            LayerProfile(lname, kind, sum(r.macs for r in rows), flops, moved, t.ms, roof)
        )
    end_to_end = compare({"model": lambda: model(example)}, 2, repeats, threads, example.device)
    if not layers and report.rows:
        notes.append(
            "no layer ran as a module of its own (a TorchScript or torch.export model is one "
            "graph): only the end-to-end time is measured; for per-layer times give its Python "
            "factory (file.py:factory), or for a compressed model's directory --trust-code "
            "(leanconv.load(path, trust_code=True))"
        )
    return ProfileReport(name, tuple(example.shape), layers, end_to_end["model"].ms, peak, threads,
                         notes, allocator.describe())  # fmt: skip
