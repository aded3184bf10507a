"""Each candidate's sensitivity: how much the whole model's predictions move when only that layer
is rewritten.

The sensitivity of a rewrite is the mean over a calibration set of the per-image divergence
``KL(p_i || q_i)`` of the rewritten model's predictions ``q`` from the original's ``p`` (Kim et
al. 2016 and later work rank layers this way; for a model whose outputs are not class logits,
their relative squared error, :mod:`..outputs`). The per-image values are kept
(``kl_samples``), and with them the standard error of the mean (``sensitivity_se``): on 64
images of the digits the KL of one VGG-16 rewrite ranged from 0.0001 to 0.0086 nats between
disjoint sets of images. A fast algorithm adds none to the rewrite it computes (it is exact up
to float32 rounding).

A truncated decomposition at a lower rank keeps a subspace of what a higher rank keeps (SVD and
HOSVD truncations are nested), so a lower rank is taken to be at least as sensitive as any higher
rank of the same method (:func:`monotone_sensitivity`): on a small calibration set the KL of two
small rewrites can come out in the wrong order, and the allocation would then cut MACs that buy
no time (a VGG-16 layer at Tucker-2 rank 6 measured 0.0011 nats, at rank 8 0.0018, at the same
latency).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ...cost import count
from ...decompose.rank import output_error
from .. import outputs
from ..surgery import replace_modules
from .plan import KEEP, Candidate

__all__ = [
    "LOCAL_ERROR_FLOOR",
    "kl_per_image",
    "local_divergences",
    "measured_candidates",
    "model_divergence",
    "monotone_sensitivity",
]

#: Output errors at or below this (relative) are float rounding, not a ratio to scale by.
LOCAL_ERROR_FLOOR = 1e-6
#: A rewrite's output error is measured on enough of the calibration images to cover this many
#: spatial positions of the layer's input (at least :data:`ERROR_IMAGES` images; all of them
#: where they cover fewer): a ratio of norms over ~10^6-10^7 values, which more images do not
#: change (the first ResNet-50 layers see 3,136 positions per image).
ERROR_POSITIONS = 16384
ERROR_IMAGES = 8
#: An exact algorithm's output error (float32 rounding around its rewrite's) is measured on this
#: many images.
ROUNDING_IMAGES = 2


def kl_per_image(logits: torch.Tensor, reference_log_probs: torch.Tensor) -> torch.Tensor:
    """``KL(p_i || q_i)`` for each image ``i``: ``p`` the reference's predictions (log
    probabilities), ``q = softmax(logits)``; float64 (:func:`..outputs.divergence`)."""
    return outputs.divergence(logits, reference_log_probs, logits=True)


def _estimate(per_image: torch.Tensor) -> tuple[float, float, tuple[float, ...]]:
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


def monotone_sensitivity(cands: list[Candidate]) -> list[Candidate]:
    """The candidates with sensitivity non-increasing in rank within each method: a candidate's
    sensitivity becomes the largest measured at its own or any higher rank of its method (the
    upper envelope; the measured value is kept in ``measured_sensitivity``)."""
    measured = [
        c if c.measured_sensitivity is not None
        else dataclasses.replace(c, measured_sensitivity=c.sensitivity)
        for c in cands
    ]  # fmt: skip
    return [
        c if c.method == "keep"
        else dataclasses.replace(c, sensitivity=max(
            o.measured_sensitivity for o in measured
            if o.method == c.method and _at_least(o.rank, c.rank)))
        for c in measured
    ]  # fmt: skip


def model_divergence(model, calibration, reference, logits) -> tuple:
    """``(mean, standard error, per-image values)`` of ``model``'s divergence from
    ``reference`` on the calibration images."""
    with torch.no_grad():
        return _estimate(outputs.divergence(model(calibration), reference, logits))


def _whole_model(model, name, module, calibration, reference, logits) -> tuple:
    """The divergence of the whole model with only layer ``name`` replaced by ``module``."""
    trial = replace_modules(model, {name: module}, inplace=False)
    return model_divergence(trial, calibration, reference, logits)


def _scaled(anchor: tuple, factor: float) -> tuple:
    mean, se, samples = anchor
    return mean * factor, se * factor, tuple(v * factor for v in samples or ())


def local_divergences(layer_errors: dict[tuple, float], measure) -> dict[tuple, tuple]:
    """Sensitivities of a layer's direct rewrites from their own output errors: per method, the
    whole-model divergence is measured for one anchor (the rewrite of median output error) and
    the others are scaled by ``(error / anchor's error)^2``, the second-order behaviour of a
    divergence in a small perturbation of one layer's output. A rewrite whose output error is
    not finite or at most :data:`LOCAL_ERROR_FLOOR` (a full-rank one) is measured itself."""
    out: dict[tuple, tuple] = {}
    by_method: dict[str, list[tuple]] = {}
    for key, error in layer_errors.items():
        if math.isfinite(error) and error > LOCAL_ERROR_FLOOR:
            by_method.setdefault(key[0], []).append(key)
        else:  # (nearly) exact or not finite: no ratio to scale by, measured on its own
            out[key] = measure(key)
    for keys in by_method.values():
        ordered = sorted(keys, key=layer_errors.get)
        anchor = ordered[len(ordered) // 2]
        measured = measure(anchor)
        base = layer_errors[anchor]
        for key in keys:
            ratio = (layer_errors[key] / base) ** 2
            out[key] = measured if key == anchor else _scaled(measured, ratio)
    return out


def error_inputs(x: torch.Tensor) -> torch.Tensor:
    """The calibration inputs of a layer that its rewrites' output errors are measured on (see
    :data:`ERROR_POSITIONS`)."""
    positions = x.shape[-1] * x.shape[-2] if x.dim() == 4 else 1
    return x[: max(ERROR_IMAGES, -(-ERROR_POSITIONS // positions))]


def measured_candidates(model, name, layer, x, modules, errors, timings, calibration, reference,
                        logits, local: bool = False) -> list[Candidate]:  # fmt: skip
    """The :class:`Candidate` of each module of layer ``name``: its sensitivity (the whole
    model's divergence on the calibration inputs with only this layer rewritten; with ``local``,
    measured for one rewrite per method and the others' scaled by their output errors,
    :func:`local_divergences`), output error (on :func:`error_inputs`), MACs and latency
    (``timings``)."""
    xs = error_inputs(x)
    out_err = {k: 0.0 if k == KEEP else output_error(
                   layer, m, xs if k[2] == "direct" else xs[:ROUNDING_IMAGES], name=name)
               for k, m in modules.items()}  # fmt: skip
    direct = [k for k in modules if k != KEEP and k[2] == "direct"]

    def measure(key):
        return _whole_model(model, name, modules[key], calibration, reference, logits)

    if local:
        sensitivity = local_divergences({k: out_err[k] for k in direct}, measure)
    else:
        sensitivity = {k: measure(k) for k in direct}
    sensitivity[KEEP] = (0.0, 0.0, None)
    cands = []
    for key in modules:
        method, rank, algorithm = key
        # an exact algorithm: the sensitivity of the rewrite it computes (its float32 rounding,
        # ~1e-5 of the output, shows in the output error), so that among equally accurate
        # candidates the allocation takes the fastest
        sens = sensitivity[(method, rank, "direct")]
        # MACs and params per image, as the model totals; a fast algorithm keeps the
        # conventional count of the convolution it computes
        c = count(modules[(method, rank, "direct")], x[:1])
        cands.append(Candidate(name, method, rank, c.total.macs, c.total.params, timings[key],
                               sens[0], errors[key], out_err[key], algorithm,
                               sensitivity_se=sens[1], kl_samples=sens[2]))  # fmt: skip
    return cands
