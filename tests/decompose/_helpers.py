"""Kernels of known structure for the decomposition tests."""

from __future__ import annotations

import torch

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def cp_kernel(g, shape, rank):
    """A kernel of CP rank ``rank`` (generic factors)."""
    factors = [randn(g, n, rank) for n in shape]
    return torch.einsum("kr,cr,ir,jr->kcij", *factors)


def tucker_kernel(g, shape, r_out, r_in):
    k, c, kh, kw = shape
    core = randn(g, r_out, r_in, kh, kw)
    return torch.einsum("srij,ks,cr->kcij", core, randn(g, k, r_out), randn(g, c, r_in))
