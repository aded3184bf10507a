"""Is the original model's score plausible on this data? Stop before any work if it is not.

An original that scores near chance is almost never a bad model: its inputs were prepared
differently from its training (size, normalisation), its classes are numbered in another order,
or the weights are not its trained ones. Compressing it would plan, fine-tune and report
numbers that mean nothing (a user's model measured 11.50 % for its own 98.50 %), so the run
stops, naming the likely causes with the numbers behind them.
"""

from __future__ import annotations

import torch

from ..data.bundle import DataBundle
from ..errors import LeanconvError
from .evaluate import Metric
from .measure import ModelFigures


class ImplausibleModelError(LeanconvError, ValueError):
    """The original model scores so low on the data that its inputs or weights are wrong."""


def plausibility_threshold(chance: float) -> float:
    """The score a classifier must beat: twice chance, or halfway from chance to 100 % when
    twice chance would be more (fewer than four classes)."""
    return min(2 * chance, (chance + 100) / 2)


def check_plausible(before: ModelFigures, metric: Metric, data: DataBundle, example: torch.Tensor,
                    min_metric: float | None) -> None:  # fmt: skip
    """Stop before any planning when the original scores below ``min_metric`` or, without it,
    near chance (:func:`plausibility_threshold`), naming the likely causes with the numbers."""
    chance = metric.chance(data.num_classes)
    if min_metric is not None:
        if before.metric >= min_metric:
            return
        why = f"below --min-metric {min_metric:g}"
    elif chance is not None and before.metric < plausibility_threshold(chance):
        why = f"near chance ({chance:.2f}% for {data.num_classes} classes)"
    else:
        return
    x = example.double()
    dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0]
    mean, std = x.mean(dims).tolist(), x.std(dims).tolist()
    prep = data.preprocessing
    made = ", ".join(f"{k} {v}" for k, v in prep.items() if k not in ("data", "classes") and v)
    lines = [
        f"the original model scores {before.metric:.2f}{metric.unit} {metric.name} on the test "
        f"data, {why}: its inputs are probably not prepared as in its training, or the weights "
        "are not its trained ones. Likely causes:",
        f"  input size: the model gets {'x'.join(map(str, example.shape[1:]))} "
        f"({example.dtype}); was it trained at another size?",
        "  normalisation: the inputs have per-channel mean "
        + ", ".join(f"{v:.3f}" for v in mean[:4]) + " and std "
        + ", ".join(f"{v:.3f}" for v in std[:4])
        + (f" ({made})" if made else "")
        + "; ImageNet-normalised inputs have mean ~0 and std ~1, raw pixels 0..1 mean ~0.45",
    ]  # fmt: skip
    if prep.get("classes"):
        names = prep["classes"]
        lines.append(
            "  class order: class i is the i-th folder ("
            + ", ".join(f"{i}={n}" for i, n in enumerate(names[:6]))
            + (", ..." if len(names) > 6 else "")
            + "); was it trained with another order? (--classes A,B,C gives it)"
        )
    lines.append("  weights: are they the trained ones (--weights)?")
    lines.append(
        "Give --input-size, --resize/--crop, --normalize or --mean/--std, --classes as in "
        "training; --min-metric sets the score to reach (0 skips this check)."
    )
    raise ImplausibleModelError("\n".join(lines))
