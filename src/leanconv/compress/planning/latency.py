"""Each candidate's latency, measured on this machine and kept in a shape-keyed table.

A candidate is timed in its deployment form (:class:`..deploy.Deployment`: convolutions packed,
weights and inputs in its memory format) on the layer's real input at the planning batch,
interleaved with the layer's other candidates (:func:`leanconv.bench.timing.compare`, medians).
The table (``latency.json`` in the cache directory) is keyed by the layer's geometry, the
candidate's method, rank and algorithm, the input shape and layout, the thread count and the
torch version, so a layer of the same shape in another model or another run is not timed again.
:func:`common_window` then puts every layer on one measurement of all the originals together.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import nn

from ...algorithms import native
from ...bench.timing import compare

CACHE_FILE = "latency.json"

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
    measured interleaved with the others (and put in ``cache``)."""
    threads = torch.get_num_threads()
    timings: dict[tuple, float] = {}
    todo = {}
    for key, mod in modules.items():
        ck = _latency_key(layer, key, shape_form, threads)
        if use_cache and ck in cache:
            timings[key] = cache[ck]
        else:
            todo[key] = (ck, deployment.layer(mod))
    if todo:
        measured = compare({str(k): (lambda m=m, xb=xb: m(xb)) for k, (_, m) in todo.items()},
                           warmup=1, repeats=repeats)  # fmt: skip
        for key, (ck, _) in todo.items():
            timings[key] = cache[ck] = measured[str(key)].ms
    return timings


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
