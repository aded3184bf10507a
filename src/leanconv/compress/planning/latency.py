"""Each candidate's latency, measured on this machine and kept in a shape-keyed table.

A candidate is timed in its deployment form (:class:`..deploy.Deployment`: convolutions packed,
weights and inputs in its memory format) on the layer's real input at the planning batch,
interleaved with the layer's other candidates (:func:`leanconv.bench.timing.compare`, medians).
The table (``latency.json`` in the cache directory) is keyed by the layer's geometry, the
candidate's method, rank and algorithm, the input shape and layout, the thread count and the
torch version, so a layer of the same shape in another model or another run is not timed again.
:func:`common_window` then puts every layer on one measurement of all the originals together.

Dominated candidates are pruned before they are fully timed: every candidate first runs twice,
and one whose faster run took more than :data:`PRUNE_SLOWER` times the kept layer's median is
slower *and* less accurate than keeping the layer, so no plan can prefer it; it keeps that
measurement and is not timed again. Only the others are timed ``repeats`` times, interleaved with
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

#: A candidate whose faster of two first runs takes more than this times the kept layer's is not
#: timed further (a run on a shared machine can be 10-20 % slow; the faster of two, and the
#: margin, keep near-ties).
PRUNE_SLOWER = 1.3

__all__ = ["CACHE_FILE", "common_window", "latencies"]


def _latency_key(layer: nn.Module, key: tuple, shape, threads: int) -> str:
    method, rank, algorithm = key
    variant = (
        (method, rank) if algorithm == "direct" else (method, rank, algorithm, native.status())
    )
    text = repr((type(layer).__name__, getattr(layer, "weight", torch.empty(0)).shape,
                 getattr(layer, "stride", None), getattr(layer, "padding", None),
                 getattr(layer, "dilation", None), getattr(layer, "groups", None),
                 *variant, tuple(shape), threads, torch.__version__))  # fmt: skip
    return hashlib.sha1(text.encode()).hexdigest()


def latencies(layer, modules, xb, shape_form, cache, use_cache, repeats, deployment):
    """Each candidate module's latency (ms) in its deployment form on ``xb``: from ``cache``, or
    measured interleaved with the others (and put in ``cache``); candidates that their first two
    runs show to be :data:`PRUNE_SLOWER` times slower than the kept layer are not timed further
    (see the module)."""
    threads = torch.get_num_threads()
    timings: dict[tuple, float] = {}
    todo = {}
    for key, mod in modules.items():
        ck = _latency_key(layer, key, shape_form, threads)
        if use_cache and ck in cache:
            timings[key] = cache[ck]
        else:
            todo[key] = (ck, deployment.layer(mod))
    if not todo:
        return timings
    calls = {key: (lambda m=m, xb=xb: m(xb)) for key, (_, m) in todo.items()}
    if KEEP in modules and KEEP not in calls:  # the reference runs with the others
        calls[KEEP] = lambda m=deployment.layer(modules[KEEP]), xb=xb: m(xb)
    first = _compare(calls, warmup=1, repeats=2)
    keep_ms = first[KEEP].ms if KEEP in first else None
    slow = {
        k for k in todo if keep_ms and k != KEEP and first[k].best * 1e3 > PRUNE_SLOWER * keep_ms
    }
    rest = {key: fn for key, fn in calls.items() if key not in slow}
    measured = _compare(rest, warmup=0, repeats=repeats) if repeats > 1 else {}
    for key, (ck, _) in todo.items():
        ms = (measured if key in measured else first)[key].ms
        timings[key] = cache[ck] = ms
    return timings


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
