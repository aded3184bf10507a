"""Each candidate's latency, measured on this machine and kept in a shape-keyed table.

A candidate is timed in its deployment form (:class:`..deploy.Deployment`: convolutions packed,
weights and inputs in its memory format) on the layer's real input at the planning batch,
interleaved with the layer's other candidates (:func:`leanconv.bench.timing.compare`, medians).
The table (``latency.json`` in the cache directory) is keyed by the layer's geometry, the
candidate's method, rank and algorithm, the input shape and layout, the thread count and the
torch version, so a layer of the same shape in another model or another run is not timed again.
:func:`common_window` then puts every layer on one measurement of all the originals together.

A rewrite runs deployed in one of two forms (:data:`FORMS`), and the deployment keeps whichever
it measures faster (:meth:`..deploy.Deployment.measured`): its factors on oneDNN, or those that
the narrow direct kernel computes on it, in one pass where they follow each other. So a rewrite
is timed in both, and credited with the faster. Timed by oneDNN alone, the candidates' ladder was
not the one deployed: oneDNN runs channel counts that are not multiples of 8 or 16 slowly, and
the narrow kernel does not mind them (on a 24-channel layer at 40x40, the spatial SVD of rank 24
ran 1.22x faster than the layer by oneDNN and 1.72x on the kernel, rate 0.82 against 1.14),
so the plans leaned on the thin, aligned ranks that oneDNN runs well.

A layer's candidates are timed together in a few seconds, and on a shared machine a few
seconds can be unrepresentative: load from elsewhere slows memory-heavy forms (Winograd's
transforms, thin chains) more than oneDNN's dense layers, so the ratios themselves move. In two
demo runs of one day, the same 32-channel layer by Winograd F(4x4) measured 1.18x and 1.56x
faster than by oneDNN, and the plan built on the first ran 0.67 of its MACs reduction, the one
built on the second 1.04 (docs/benchmarks.md). So once every layer has been timed, each layer's
:func:`frontier` (the only candidates an allocation can choose) is timed again with the kept
layer, in a second window minutes after the first, and credited with the mean of its two ratios
to the kept layer (:func:`second_window`).

Dominated candidates are pruned before they are fully timed: every candidate first runs twice,
and one whose faster run took more than :data:`PRUNE_SLOWER` times the kept layer's median is
slower *and* less accurate than keeping the layer, so no plan can prefer it; it keeps that
measurement and is not timed again; likewise a form of a candidate that ran :data:`PRUNE_SLOWER`
times slower than its other form. Only the others are timed ``repeats`` times, interleaved with
the kept layer.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import nn

from ...algorithms import native
from ...bench.timing import compare
from .plan import KEEP

CACHE_FILE = "latency.json"

#: The deployed forms a rewrite is timed in, the faster credited: its factors on oneDNN, and its
#: factors on the narrow direct kernel where that computes them (one pass for those in a row).
#: Part of the table's key: a latency measured in one form only is not reused.
FORMS = ("packed", "narrow")

#: A candidate whose faster of two first runs takes more than this times the kept layer's is not
#: timed further (a run on a shared machine can be 10-20 % slow; the faster of two, and the
#: margin, keep near-ties).
PRUNE_SLOWER = 1.3

__all__ = ["CACHE_FILE", "FORMS", "common_window", "frontier", "latencies", "second_window"]


def _latency_key(layer: nn.Module, key: tuple, shape, threads: int) -> str:
    method, rank, algorithm = key
    variant = (
        (method, rank) if algorithm == "direct" else (method, rank, algorithm, native.status())
    )
    if key != KEEP:  # the faster of two deployed forms (FORMS)
        variant = (*variant, FORMS, native.status())
    text = repr((type(layer).__name__, getattr(layer, "weight", torch.empty(0)).shape,
                 getattr(layer, "stride", None), getattr(layer, "padding", None),
                 getattr(layer, "dilation", None), getattr(layer, "groups", None),
                 *variant, tuple(shape), threads, torch.__version__))  # fmt: skip
    return hashlib.sha1(text.encode()).hexdigest()


def latencies(layer, modules, xb, shape_form, cache, use_cache, repeats, deployment,
              retained: dict | None = None, inputs: dict | None = None):  # fmt: skip
    """Each candidate module's latency (ms) in its deployment form on ``xb``: from ``cache``, or
    measured interleaved with the others (and put in ``cache``); a rewrite whose factors the
    narrow kernel computes is timed in both forms and credited with the faster; candidates that
    their first two runs show to be :data:`PRUNE_SLOWER` times slower than the kept layer are
    not timed further (see the module). ``retained``: filled with ``key -> (table key, call)``
    of each candidate measured now, the call running its faster form (for
    :func:`second_window`). ``inputs``: a candidate's own input where it is not ``xb`` (the
    consumer of a pruned pair reads only the channels kept)."""
    inputs = inputs or {}
    threads = torch.get_num_threads()
    timings: dict[tuple, float] = {}
    todo = {}
    calls = {}  # (key, form) -> call
    for key, mod in modules.items():
        # a candidate on its own input is keyed by that input too (a pruned consumer reads fewer
        # channels than the layer it replaces, whose shape the key otherwise carries)
        own = (*shape_form, "input", *inputs[key].shape) if key in inputs else shape_form
        ck = _latency_key(layer, key, own, threads)
        if use_cache and ck in cache:
            timings[key] = cache[ck]
            continue
        todo[key] = ck
        for form, built in _forms(key, mod, deployment).items():
            calls[(key, form)] = lambda m=built, xb=inputs.get(key, xb): m(xb)
    if not todo:
        return timings
    if KEEP in modules and KEEP not in todo:  # the reference runs with the others
        calls[(KEEP, "packed")] = lambda m=deployment.layer(modules[KEEP]), xb=xb: m(xb)
    first = _compare(calls, warmup=1, repeats=2)
    keep_ms = first[(KEEP, "packed")].ms if KEEP in modules else None
    best = {key: min(t.best for (k, _), t in first.items() if k == key) for key in todo}

    def timed_further(key, form) -> bool:
        """Not a candidate whose faster form is slower than keeping the layer, nor a form
        slower than the candidate's other in its first runs."""
        if key == KEEP:
            return True
        dominated = keep_ms is not None and best[key] * 1e3 > PRUNE_SLOWER * keep_ms
        return not dominated and first[(key, form)].best <= PRUNE_SLOWER * best[key]

    rest = {kf: fn for kf, fn in calls.items() if timed_further(*kf)}
    measured = _compare(rest, warmup=0, repeats=repeats) if repeats > 1 else {}
    for key, ck in todo.items():
        forms = [(t, kf) for kf, t in measured.items() if kf[0] == key]
        forms = forms or [(t, kf) for kf, t in first.items() if kf[0] == key]
        fastest, kf = min(forms, key=lambda tf: tf[0].ms)
        timings[key] = cache[ck] = fastest.ms
        if retained is not None:
            retained[key] = (ck, calls[kf])
    if retained is not None and KEEP in modules and KEEP not in retained:
        retained[KEEP] = (None, calls[(KEEP, "packed")])
    return timings


def frontier(cands: list) -> list:
    """The candidates no other of the layer beats: none is at least as fast and at least as
    accurate (lower latency and sensitivity, one of them strictly). Only these can be chosen by
    an allocation that weighs latency against sensitivity."""

    def beaten(c) -> bool:
        return any(
            o.latency_ms <= c.latency_ms
            and o.sensitivity <= c.sensitivity
            and (o.latency_ms < c.latency_ms or o.sensitivity < c.sensitivity)
            for o in cands
        )

    return [c for c in cands if not beaten(c)]


def second_window(cands: list, retained: dict, cache: dict, repeats: int) -> list:
    """``cands`` (one layer's, the first the kept layer) with each candidate of the
    :func:`frontier` that was measured in this run (``retained``, from :func:`latencies`) timed
    again, interleaved with the kept layer, and credited with the mean of its two ratios to the
    kept layer (see the module docstring); the table keeps the mean."""
    keep = cands[0]
    again = {c.key for c in frontier(cands) if c.key != KEEP and c.key in retained}
    if not again or KEEP not in retained or keep.latency_ms <= 0:
        return cands
    calls = {KEEP: retained[KEEP][1], **{key: retained[key][1] for key in again}}
    second = _compare(calls, warmup=1, repeats=repeats)
    out = []
    for c in cands:
        if c.key in again:
            ratio = (c.latency_ms / keep.latency_ms + second[c.key].ms / second[KEEP].ms) / 2
            c = dataclasses.replace(c, latency_ms=keep.latency_ms * ratio)
            cache[retained[c.key][0]] = c.latency_ms
        out.append(c)
    return out


def _forms(key: tuple, module: nn.Module, deployment) -> dict[str, nn.Module]:
    """The deployed forms of one candidate (:data:`FORMS`): ``"packed"`` (oneDNN,
    :meth:`..deploy.Deployment.layer`) and, for a rewrite whose factors the narrow kernel
    computes, ``"narrow"`` (:meth:`..deploy.Deployment.narrow_layer`)."""
    forms = {"packed": deployment.layer(module)}
    if key != KEEP:
        narrow = deployment.narrow_layer(module)
        if narrow is not None:
            forms["narrow"] = narrow
    return forms


def _compare(calls: dict[tuple, object], warmup: int, repeats: int) -> dict:
    """:func:`compare` for tuple keys."""
    keys = {str(key): key for key in calls}
    out = compare({str(key): fn for key, fn in calls.items()}, warmup=warmup, repeats=repeats)
    return {keys[name]: timing for name, timing in out.items()}


def common_window(candidates: dict[str, list], originals_ms: dict[str, float]) -> dict[str, list]:
    """Each layer's candidates with their latencies rescaled so that its original ("keep", the
    first candidate) takes ``originals_ms[layer]``: what was measured interleaved with it (the
    ratios) is kept, and every layer is put on one common measurement. A layer's candidates are
    timed together, in a few seconds of their own; a shared machine whose speed drifts by 20 %
    over minutes would otherwise make the layer sum add latencies of different moments (on the
    test machine four spatial-SVD layers of VGG-16 ran 24-35 % slower in the assembled model
    than they had been timed while planning, six Tucker-2 chains 5-20 % faster)."""
    out = {}
    for name, cands in candidates.items():
        scale = originals_ms[name] / cands[0].latency_ms if cands[0].latency_ms > 0 else 1.0
        out[name] = [dataclasses.replace(c, latency_ms=c.latency_ms * scale) for c in cands]
    return out
