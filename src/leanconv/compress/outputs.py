"""Comparing a model's outputs with the original's: whatever the model returns.

A model may return a tensor, a tuple or list of tensors, or a dict of them (nested freely);
:func:`tensors` flattens that into a list in a fixed order. Two ways of comparing follow:

- **class logits** (a classifier, judged by accuracy): the KL divergence of the rewritten model's
  predictions from the original's, ``KL(p || q) = sum_k p_k (log p_k - log q_k)`` with
  ``p = softmax(original)``, ``q = softmax(rewritten)``, per sample (Hinton et al. 2015 distil
  with it; Kim et al. 2016 and later work rank layers by it);
  A classifier trained to near-zero loss predicts with its softmax saturated (a user's model
  gave a mean top-1 probability of 0.9999995 and a median margin of 25 nats between its top two
  logits): its KL from any rewrite that keeps each image's class is ~e^-25, and one that flips a
  class is ~11 nats, so the divergence no longer tells rewrites apart. The reference is then
  softened by a temperature ``T`` (:func:`temperature`: the smallest ``T >= 1`` that brings the
  mean top-1 probability down to :data:`CONFIDENCE`, 1 for a model already below it) and the
  divergence is ``T^2 KL(softmax(r/T) || softmax(y/T))``, Hinton et al.'s distillation form,
  which equals the plain KL at ``T = 1``;
- **any other output** (segmentation maps, detection heads, regression, embeddings): the relative
  squared error per sample, ``e_i = sum_t ||y_t,i - r_t,i||^2 / mean_j ||r_t,j||^2`` summed over
  the output tensors ``t``: scale-free, zero for an exact rewrite, and additive over samples as the
  KL is, so that the planner's standard errors work alike for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import LeanconvError


def tensors(out) -> list[Tensor]:
    """The tensors of a model's output, in order (dicts by insertion order)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in tensors(v)]
    if isinstance(out, tuple | list):
        return [t for v in out for t in tensors(v)]
    return []


def logits_of(out, where: str = "the model") -> Tensor:
    """The ``(N, K)`` class logits a classifier returns; raises naming what it returned."""
    if isinstance(out, Tensor) and out.dim() == 2:
        return out
    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    raise LeanconvError(
        f"{where} returns {shape}, not (N, classes) logits: accuracy needs class logits; for "
        "another task pass metric=callable(model, loader) -> float"
    )


#: The mean top-1 probability above which the reference's predictions count as saturated and are
#: softened for comparing (see the module docstring). A classifier trained on the digits to
#: 99.6 % accuracy predicts at 0.990 on its calibration images and is compared as it is.
CONFIDENCE = 0.99


@dataclass(frozen=True)
class LogitsReference:
    """A classifier's predictions to compare with: ``log softmax(logits / temperature)``."""

    log_probs: Tensor
    temperature: float = 1.0


def temperature(logits: Tensor, confidence: float = CONFIDENCE) -> float:
    """The smallest ``T >= 1`` at which ``softmax(logits / T)`` has a mean top-1 probability of
    at most ``confidence`` (found by bisection to 0.1 %); 1 where it already has. The top-1
    probability of each row falls as ``T`` grows, towards 1/K."""
    z = logits.detach().double()

    def mean_top1(t: float) -> float:
        return float(F.softmax(z / t, 1).max(1).values.mean())

    if z.shape[1] < 2 or mean_top1(1.0) <= confidence:
        return 1.0
    lo, hi = 1.0, 2.0
    while mean_top1(hi) > confidence and hi < 1e6:
        lo, hi = hi, 2 * hi
    while hi / lo > 1.001:
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if mean_top1(mid) > confidence else (lo, mid)
    return hi


def reference(out, logits: bool):
    """What :func:`divergence` compares against: for class logits a :class:`LogitsReference`
    (log probabilities in float64, softened by :func:`temperature` where saturated), else the
    output tensors in float64 with their mean squared norm per sample."""
    if logits:
        z = logits_of(out).double()
        t = temperature(z)
        return LogitsReference(F.log_softmax(z / t, 1), t)
    ts = [t.detach().double() for t in tensors(out)]
    if not ts:
        raise LeanconvError(f"the model returns no tensors ({type(out).__name__})")
    scale = [t.reshape(len(t), -1).pow(2).sum(1).mean().clamp_min(1e-300) for t in ts]
    return ts, scale


def divergence(out, ref, logits: bool) -> Tensor:
    """Per-sample divergence of ``out`` from ``ref`` (:func:`reference`; for logits, log
    probabilities alone are taken at temperature 1), float64 (see above)."""
    if logits:
        if not isinstance(ref, LogitsReference):
            ref = LogitsReference(ref)
        t = ref.temperature
        log_q = F.log_softmax(logits_of(out).double() / t, 1)
        return t * t * F.kl_div(log_q, ref.log_probs, reduction="none", log_target=True).sum(1)
    ts, scale = ref
    got = tensors(out)
    if len(got) != len(ts):
        raise LeanconvError(f"the rewritten model returns {len(got)} tensors, not {len(ts)}")
    total = torch.zeros(len(ts[0]), dtype=torch.float64, device=ts[0].device)
    for y, r, s in zip(got, ts, scale, strict=True):
        total = total + (y.double() - r).reshape(len(r), -1).pow(2).sum(1) / s
    return total


def relative_error(out, ref_out) -> float:
    """``||y - r|| / ||r||`` over all output tensors together (Frobenius norms)."""
    ys, rs = tensors(out), tensors(ref_out)
    num = sum(float((y.double() - r.double()).pow(2).sum()) for y, r in zip(ys, rs, strict=True))
    den = sum(float(r.double().pow(2).sum()) for r in rs)
    return (num / max(den, 1e-300)) ** 0.5


def distillation(student, teacher, temperature: float, logits: bool) -> Tensor:
    """The distillation term: ``T^2 KL(softmax(t/T) || softmax(s/T))`` (batch mean) for class
    logits; else the relative squared error of every output tensor, summed over tensors:
    ``||s - t||^2 / ||t||^2`` (both float32)."""
    if logits:
        t = temperature
        return t * t * F.kl_div(
            F.log_softmax(logits_of(student).float() / t, dim=1),
            F.log_softmax(logits_of(teacher).float() / t, dim=1),
            reduction="batchmean", log_target=True,
        )  # fmt: skip
    total = None
    for s, r in zip(tensors(student), tensors(teacher), strict=True):
        r = r.float()
        term = (s.float() - r).pow(2).sum() / r.pow(2).sum().clamp_min(1e-12)
        total = term if total is None else total + term
    return total
