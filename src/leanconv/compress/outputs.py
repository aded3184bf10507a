"""Comparing a model's outputs with the original's: whatever the model returns.

A model may return a tensor, a tuple or list of tensors, or a dict of them (nested freely);
:func:`tensors` flattens that into a list in a fixed order. Two ways of comparing follow:

- **class logits** (a classifier, judged by accuracy): the KL divergence of the rewritten model's
  predictions from the original's, ``KL(p || q) = sum_k p_k (log p_k - log q_k)`` with
  ``p = softmax(original)``, ``q = softmax(rewritten)``, per sample (Hinton et al. 2015 distil
  with it; Kim et al. 2016 and later work rank layers by it);
- **any other output** (segmentation maps, detection heads, regression, embeddings): the relative
  squared error per sample, ``e_i = sum_t ||y_t,i - r_t,i||^2 / mean_j ||r_t,j||^2`` summed over
  the output tensors ``t``: scale-free, zero for an exact rewrite, and additive over samples as the
  KL is, so that the planner's standard errors work alike for both.
"""

from __future__ import annotations

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


def reference(out, logits: bool):
    """What :func:`divergence` compares against: log probabilities (float64) of class logits,
    else the output tensors in float64 with their mean squared norm per sample."""
    if logits:
        return F.log_softmax(logits_of(out).double(), 1)
    ts = [t.detach().double() for t in tensors(out)]
    if not ts:
        raise LeanconvError(f"the model returns no tensors ({type(out).__name__})")
    scale = [t.reshape(len(t), -1).pow(2).sum(1).mean().clamp_min(1e-300) for t in ts]
    return ts, scale


def divergence(out, ref, logits: bool) -> Tensor:
    """Per-sample divergence of ``out`` from ``ref`` (:func:`reference`), float64 (see above)."""
    if logits:
        log_q = F.log_softmax(logits_of(out).double(), 1)
        return F.kl_div(log_q, ref, reduction="none", log_target=True).sum(1)
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
