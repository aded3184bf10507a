"""``CostReport``: one row per layer call, totals, and its renderings (rich table, JSON, CSV)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field, replace

from .convention import DEFAULT, Convention


def human(n: int, binary: bool = False) -> str:
    """``1814073344`` -> ``"1.814 G"``; bytes in KiB/MiB/GiB with ``binary``."""
    if binary:
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if n >= size:
                return f"{n / size:.2f} {unit}"
        return f"{n} B"
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return str(n)


@dataclass(frozen=True)
class LayerCost:
    """The cost of one operation call, attributed to the module that ran it.

    ``kind`` names the operation (``conv2d``, ``linear``, ``batch_norm``, ...). ``counted`` is
    False for an operation the counter does not know: its MACs and FLOPs are unknown, not zero.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    flops: int
    bytes: int
    counted: bool = True
    detail: str = ""

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["output_shape"] = list(self.output_shape)
        out["intensity"] = round(self.intensity, 4)
        return out


@dataclass(frozen=True)
class Totals:
    params: int
    macs: int
    flops: int
    bytes: int

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0


@dataclass
class CostReport:
    """Per-layer costs of a model on one input shape, under one :class:`Convention`."""

    rows: list[LayerCost]
    input_shape: tuple[int, ...]
    convention: Convention = DEFAULT
    model: str = ""
    notes: list[str] = field(default_factory=list)
    # how the model ran: "on meta", "under FakeTensorMode", "on the CPU at batch 1, scaled to
    # batch N" or "on the CPU at batch N" (leanconv.cost.trace.count)
    method: str = "on meta"

    # ------------------------------------------------------------------ queries
    @property
    def total(self) -> Totals:
        return Totals(
            params=sum(r.params for r in self.rows),
            macs=sum(r.macs for r in self.rows),
            flops=sum(r.flops for r in self.rows),
            bytes=sum(r.bytes for r in self.rows),
        )

    @property
    def uncounted(self) -> list[LayerCost]:
        return [r for r in self.rows if not r.counted]

    def layer(self, name: str) -> list[LayerCost]:
        """The rows of one module (a module called twice, or running several ops, has several)."""
        return [r for r in self.rows if r.name == name]

    def by_kind(self) -> dict[str, Totals]:
        groups: dict[str, list[LayerCost]] = OrderedDict()
        for r in self.rows:
            groups.setdefault(r.kind, []).append(r)
        return {
            k: Totals(
                *(sum(getattr(r, f) for r in rs) for f in ("params", "macs", "flops", "bytes"))
            )
            for k, rs in groups.items()
        }

    def aggregate(self, depth: int) -> CostReport:
        """Merge rows whose module names agree on their first ``depth`` dotted parts."""
        if depth < 0:
            raise ValueError(f"depth={depth} must be >= 0")
        merged: OrderedDict[str, list[LayerCost]] = OrderedDict()
        for r in self.rows:
            key = ".".join(r.name.split(".")[:depth]) if depth else "(model)"
            key = key or "(model)"
            merged.setdefault(key, []).append(r)
        rows = []
        for key, rs in merged.items():
            kinds = sorted({r.kind for r in rs})
            kind = kinds[0] if len(kinds) == 1 else "block"
            detail = ", ".join(f"{k} x{sum(r.kind == k for r in rs)}" for k in kinds)
            rows.append(_sum_rows(key, kind, rs, all(r.counted for r in rs), detail))
        return replace(self, rows=rows)

    def fold(self, max_rows: int) -> tuple[CostReport, int | None]:
        """At most ``max_rows`` rows, for reading: the rows of one module and kind become one row
        (kind ``"linear x400"``, sums of every column; an RNN makes thousands of rows, a few per
        step). If that is still more than ``max_rows``, modules are merged into their ancestors
        at the deepest depth that fits (depth 0: one row per kind). Returns the folded report and
        that depth (None when every module keeps its own rows); totals are unchanged."""
        if max_rows < 1:
            raise ValueError(f"max_rows={max_rows} must be >= 1")
        deepest = max((len(r.name.split(".")) for r in self.rows if r.name), default=0)
        for depth in range(deepest, -1, -1):
            rows = _fold_rows(self.rows, depth)
            if len(rows) <= max_rows:
                break
        return replace(self, rows=rows), None if depth == deepest else depth

    # ------------------------------------------------------------------ renderings
    def as_dict(self) -> dict:
        t = self.total
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "convention": self.convention.as_dict(),
            "total": {"params": t.params, "macs": t.macs, "flops": t.flops, "bytes": t.bytes},
            "uncounted": sorted({r.detail or r.kind for r in self.uncounted}),
            "notes": list(self.notes),
            "method": self.method,
            "layers": [r.as_dict() for r in self.rows],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def to_csv(self) -> str:
        buf = io.StringIO()
        fields = [
            "name", "kind", "input_shape", "output_shape", "params", "macs", "flops", "bytes",
            "intensity", "counted", "detail",
        ]  # fmt: skip
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for r in self.rows:
            d = r.as_dict()
            d["input_shape"] = "x".join(map(str, r.input_shape))
            d["output_shape"] = "x".join(map(str, r.output_shape))
            writer.writerow({k: d[k] for k in fields})
        return buf.getvalue()

    def to_table(self, title: str | None = None):
        """A ``rich.table.Table`` of the rows and the totals."""
        from rich.table import Table

        table = Table(
            title=title or f"{self.model or 'model'} at input {tuple(self.input_shape)}",
            caption=self.convention.describe(),
            show_footer=True,
        )
        t = self.total
        table.caption = (
            f"{self.convention.describe()}\nexact totals: {t.params:,} params, {t.macs:,} MACs, "
            f"{t.flops:,} FLOPs, {t.bytes:,} bytes"
        )
        table.add_column("layer", footer="total")
        table.add_column("kind")
        table.add_column("output", justify="right")
        table.add_column("params", justify="right", footer=human(t.params))
        table.add_column("MACs", justify="right", footer=human(t.macs))
        table.add_column("FLOPs", justify="right", footer=human(t.flops))
        table.add_column("bytes", justify="right", footer=human(t.bytes, binary=True))
        table.add_column("FLOP/B", justify="right", footer=f"{t.intensity:.1f}")
        for r in self.rows:
            style = None if r.counted else "bold red"
            table.add_row(
                r.name or "(model)",
                r.kind if r.counted else f"uncounted: {r.detail}",
                "x".join(map(str, r.output_shape)),
                human(r.params),
                human(r.macs) if r.counted else "?",
                human(r.flops) if r.counted else "?",
                human(r.bytes, binary=True),
                f"{r.intensity:.1f}" if r.counted else "?",
                style=style,
            )
        return table


def _fold_rows(rows: list[LayerCost], depth: int) -> list[LayerCost]:
    """Rows grouped by (module name cut to ``depth`` dotted parts, kind; the op for an uncounted
    row), in order of first appearance; a group of several rows becomes one row of their sums."""
    groups: OrderedDict[tuple[str, str, str], list[LayerCost]] = OrderedDict()
    for r in rows:
        name = ".".join(r.name.split(".")[:depth])
        groups.setdefault((name, r.kind, "" if r.counted else r.detail), []).append(r)
    return [
        replace(rs[0], name=name) if len(rs) == 1 else _summed(name, kind, op, rs)
        for (name, kind, op), rs in groups.items()
    ]


def _summed(name: str, kind: str, op: str, rs: list[LayerCost]) -> LayerCost:
    """One row for the ``len(rs)`` rows of a module and kind (``op``: an uncounted op's name)."""
    n = len(rs)
    ops = Counter(r.detail for r in rs)  # in order of first appearance
    detail = f"{op} x{n}" if op else ", ".join(f"{d} x{c}" for d, c in ops.items())
    return _sum_rows(name, kind if op else f"{kind} x{n}", rs, not op, detail)


def _sum_rows(name: str, kind: str, rs: list[LayerCost], counted: bool, detail: str) -> LayerCost:
    """One row standing for ``rs``: their sums, the first's input and the last's output."""
    return LayerCost(
        name=name, kind=kind, input_shape=rs[0].input_shape, output_shape=rs[-1].output_shape,
        params=sum(r.params for r in rs), macs=sum(r.macs for r in rs),
        flops=sum(r.flops for r in rs), bytes=sum(r.bytes for r in rs), counted=counted,
        detail=detail,
    )  # fmt: skip
