"""Factorisations computed once per process: a bounded memo keyed by the weight's values.

A decomposition is a pure function of the weight and its arguments (method, rank, groups,
seed), and one compression asks for the same ones many times: the planner decomposes every layer
at every candidate rank, the closed loop decomposes each plan it times (up to six), and the
pipeline decomposes the chosen plan once more. Tucker-2 by HOOI is the costly one (half of the
demo's planning time went to it, most of it repeated). :func:`factorise` computes each once: the
key is the SHA-1 of the float64 weight's bytes with its shape and device and the arguments, so a
copy of the model (``copy.deepcopy``) finds the factors of the original; a weight changed by
fine-tuning does not. Entries are dropped least recently used beyond :data:`MAX_BYTES` of
factors. Callers must not change the factors in place (``replace.decompose_layer`` builds its
modules from copies).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields, is_dataclass

import torch

#: The memo's limit on the bytes of the factors it keeps.
MAX_BYTES = 512 * 2**20

_memo: OrderedDict[tuple, tuple[object, int]] = OrderedDict()

__all__ = ["MAX_BYTES", "clear", "factorise", "size"]


def _key(weight: torch.Tensor, args: tuple) -> tuple:
    data = weight.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    digest = hashlib.sha1(data).hexdigest()
    return (digest, tuple(weight.shape), str(weight.device), *map(repr, args))


def _nbytes(factors) -> int:
    if isinstance(factors, torch.Tensor):
        return factors.numel() * factors.element_size()
    if isinstance(factors, list | tuple):
        return sum(_nbytes(f) for f in factors)
    if is_dataclass(factors):
        return sum(_nbytes(getattr(factors, f.name)) for f in fields(factors))
    return 0


def factorise(compute: Callable[[], object], weight: torch.Tensor, *args):
    """``compute()``, or what it returned before for the same weight values and ``args``."""
    key = _key(weight, args)
    if key in _memo:
        _memo.move_to_end(key)
        return _memo[key][0]
    factors = compute()
    _memo[key] = (factors, _nbytes(factors))
    while size() > MAX_BYTES and len(_memo) > 1:
        _memo.popitem(last=False)
    return factors


def size() -> int:
    """Bytes of factors held now."""
    return sum(n for _, n in _memo.values())


def clear() -> None:
    _memo.clear()
