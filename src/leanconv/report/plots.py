"""The plots of a compression report (matplotlib, Agg backend, PNG written atomically)."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

from ..atomic import write_bytes_atomic


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue(), force=True)
    return path


@contextmanager
def _axes(path: Path, figsize: tuple[float, float]):
    """The axes of a new figure to draw on; the figure is written to ``path`` when the block
    ends, and closed."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
        _save(fig, path)
    finally:
        plt.close(fig)


def _layer_axes(path: Path, names: list[str]):
    """:func:`_axes` wide enough for one group of bars per layer in ``names``."""
    return _axes(path, (max(6, 0.45 * len(names)), 4))


def _layer_ticks(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)


def candidates_plot(plan, path: Path) -> Path:
    """Every candidate of every layer: latency against sensitivity, the chosen ones marked."""
    with _axes(path, (7, 4.5)) as ax:
        for name, cands in plan.candidates.items():
            xs = [c.latency_ms for c in cands]
            ys = [max(c.sensitivity, 1e-6) for c in cands]
            ax.scatter(xs, ys, s=12, alpha=0.5)
            chosen = plan.choices[name]
            ax.scatter([chosen.latency_ms], [max(chosen.sensitivity, 1e-6)], s=60, marker="*",
                       color="black")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("layer latency (ms, measured)")
        ax.set_ylabel("sensitivity: KL of model outputs (nats)")
        ax.set_title(
            f"candidates per layer (stars: chosen); predicted {plan.predicted_speedup:.2f}x"
        )
    return path


def layer_latency_plot(plan, path: Path) -> Path:
    """Per-layer latency before (original) and after (chosen candidate), as planned."""
    names = list(plan.choices)
    before = [plan.candidates[n][0].latency_ms for n in names]
    after = [plan.choices[n].latency_ms for n in names]
    with _layer_axes(path, names) as ax:
        idx = range(len(names))
        ax.bar([i - 0.2 for i in idx], before, width=0.4, label="before")
        ax.bar([i + 0.2 for i in idx], after, width=0.4, label="after")
        _layer_ticks(ax, names)
        ax.set_ylabel("ms, each layer timed alone")
        ax.legend()
        ax.set_title("per-layer latency (planning batch, deployment layout)")
    return path


def rank_plot(plan, path: Path) -> Path:
    """Per-layer MACs kept (chosen MACs / original MACs), labelled with method and rank."""
    names = list(plan.choices)
    kept = [plan.choices[n].macs / max(1, plan.candidates[n][0].macs) for n in names]
    with _layer_axes(path, names) as ax:
        bars = ax.bar(range(len(names)), kept)
        for bar, n in zip(bars, names, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), plan.choices[n].label,
                    rotation=90, ha="center", va="bottom", fontsize=6)  # fmt: skip
        _layer_ticks(ax, names)
        ax.set_ylabel("MACs kept")
        ax.set_ylim(0, 1.35)
        ax.set_title("rank choice per layer")
    return path
