"""Checks and linear algebra shared by the decompositions (private).

Every decomposition computes in float64 on the caller's device and returns factors in the
caller's dtype and device; the checks name the layer (``name=``) and the argument.
"""

from __future__ import annotations

import hashlib
import numbers
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._errors import InvalidRankError, InvalidWeightError

F64 = torch.float64


def where(name: str | None) -> str:
    """The message prefix naming a layer: ``"layer 'conv1': "`` (empty without a name)."""
    return f"layer {name!r}: " if name else ""


def check_weight(
    weight: Tensor, name: str | None, ndims: Sequence[int] = (4,), arg: str = "weight"
) -> Tensor:
    """``weight`` detached and in float64, after checking its rank, values and dtype."""
    w = where(name)
    if not isinstance(weight, Tensor):
        raise InvalidWeightError(f"{w}{arg} must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() not in tuple(ndims):
        dims = " or ".join(f"{d}-D" for d in ndims)
        raise InvalidWeightError(f"{w}{arg} must be {dims}, got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise InvalidWeightError(f"{w}{arg} must be a real floating tensor, got {weight.dtype}")
    if weight.numel() == 0:
        raise InvalidWeightError(f"{w}{arg} is empty, shape {tuple(weight.shape)}")
    x = weight.detach().to(F64)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise InvalidWeightError(f"{w}{arg} has {bad} NaN or infinite entries")
    if not bool(x.any()):
        raise InvalidWeightError(f"{w}{arg} is all zeros: there is nothing to decompose")
    return x


def check_int(value, arg: str, name: str | None, minimum: int = 1, maximum: int | None = None,
              why: str = "") -> int:  # fmt: skip
    """``value`` as an int in ``[minimum, maximum]``; bools and non-integers are refused."""
    w = where(name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidRankError(f"{w}{arg}={value!r} must be an integer, got {type(value).__name__}")
    v = int(value)
    if v < minimum:
        raise InvalidRankError(f"{w}{arg}={v} must be at least {minimum}")
    if maximum is not None and v > maximum:
        because = f" ({why})" if why else ""
        raise InvalidRankError(f"{w}{arg}={v} is larger than possible: at most {maximum}{because}")
    return v


def check_fraction(value, arg: str, name: str | None) -> float:
    """A float in ``(0, 1]``."""
    w = where(name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRankError(f"{w}{arg}={value!r} must be a number in (0, 1]")
    v = float(value)
    if not 0.0 < v <= 1.0:
        raise InvalidRankError(f"{w}{arg}={v} must be in (0, 1]")
    return v


def svd(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD ``U, s, Vh``; a very wide or tall matrix is first reduced by QR (backward
    stable, and much faster than LAPACK's SVD of the long matrix on a CPU)."""
    m, n = matrix.shape
    if n > 2 * m:
        q, r = torch.linalg.qr(matrix.T)  # A = R^T Q^T
        u, s, vh = torch.linalg.svd(r.T, full_matrices=False)
        return u, s, vh @ q.T
    if m > 2 * n:
        q, r = torch.linalg.qr(matrix)  # A = Q R
        u, s, vh = torch.linalg.svd(r, full_matrices=False)
        return q @ u, s, vh
    return torch.linalg.svd(matrix, full_matrices=False)


#: How many matrices' spectra :func:`spectrum_once` keeps (the last ones asked for).
SPECTRA_KEPT = 4
_spectra: OrderedDict[tuple, object] = OrderedDict()


def spectrum_once(kind: str, matrix: Tensor, compute: Callable[[Tensor], object]):
    """``compute(matrix)`` (a full SVD or eigendecomposition), or what it returned before for a
    matrix of the same values: every rank of a truncated decomposition truncates the same
    spectrum, and a planner asks for a layer at a dozen ranks (spatial SVD, ``low_rank`` and the
    HOSVD that starts Tucker-2 each factorised once per layer instead of once per rank). The key
    is the SHA-1 of the matrix's bytes with its shape, dtype and device; the last
    :data:`SPECTRA_KEPT` are kept. The result is shared: callers must not change it in place."""
    data = matrix.detach().to("cpu").contiguous().numpy().tobytes()
    key = (kind, tuple(matrix.shape), str(matrix.dtype), str(matrix.device),
           hashlib.sha1(data).hexdigest())  # fmt: skip
    if key in _spectra:
        _spectra.move_to_end(key)
        return _spectra[key]
    result = _spectra[key] = compute(matrix)
    while len(_spectra) > SPECTRA_KEPT:
        _spectra.popitem(last=False)
    return result


def leading_left(matrix: Tensor, rank: int) -> Tensor:
    """The ``rank`` leading left singular vectors of ``matrix``, completed by an orthonormal
    basis of the rest of the space when ``rank`` exceeds ``min(matrix.shape)``.

    A wide matrix (``n >= 2 m``, the unfoldings of HOOI) takes the leading eigenvectors of its
    Gram matrix ``A A^T`` (``m x m``, one matrix product and a symmetric eigensolver): the same
    subspace, 2-2.5x faster than QR and SVD on the test machine, and as accurate in float64 for
    every singular value above ``~1e-8`` of the largest (the Gram matrix squares them; smaller
    ones change the reconstruction by less than that anyway).
    """
    m, n = matrix.shape
    if rank <= min(m, n) and n >= 2 * m and matrix.dtype == F64:
        vectors = torch.linalg.eigh(matrix @ matrix.T)[1]  # eigenvalues ascending
        return vectors[:, m - rank :].flip(1)
    if rank <= min(m, n):
        return svd(matrix)[0][:, :rank]
    u = torch.linalg.svd(matrix, full_matrices=True)[0]
    return u[:, :rank]


def unfold(x: Tensor, mode: int) -> Tensor:
    """Mode-``mode`` unfolding (Kolda & Bader 2009 ordering of the other modes kept in order)."""
    return x.movedim(mode, 0).reshape(x.shape[mode], -1)


def out(t: Tensor, like: Tensor) -> Tensor:
    """``t`` in the dtype and device of the caller's weight, contiguous."""
    return t.to(device=like.device, dtype=like.dtype).contiguous()
