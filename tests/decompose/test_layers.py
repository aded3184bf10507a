"""Decomposed factors dropped into the factorised layers of :mod:`leanconv.nn.factorised` give
the original convolution back (exact ranks), with its stride, padding and bias."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leanconv.decompose.cp import cp
from leanconv.decompose.depthwise import depthwise_separable
from leanconv.decompose.svd import low_rank, spatial_svd
from leanconv.decompose.tt import tensor_train
from leanconv.decompose.tucker import tucker2
from leanconv.nn.factorised import CPConv2d, TTConv2d, TuckerConv2d

from ._helpers import F64, cp_kernel, gen, randn, rel


def _conv(weight):
    k, c, kh, kw = weight.shape
    conv = nn.Conv2d(c, k, (kh, kw), stride=(2, 1), padding=(1, 2), bias=True).double()
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def test_layers_from_exact_factors_match_the_convolution():
    g = gen(1)
    x = randn(g, 2, 6, 9, 8)
    w = cp_kernel(g, (8, 6, 3, 3), 3)
    conv = _conv(w)
    ref = conv(x)
    layers = [
        CPConv2d.from_factors(cp(w, 3, 1000, 1e-15, ridge=0), like=conv),
        TuckerConv2d.from_factors(tucker2(w, (3, 3)), like=conv),
        TTConv2d.from_factors(tensor_train(w, tol=1e-12), like=conv),
    ]
    with torch.no_grad():
        for layer in layers:
            assert layer.bias is not None and layer.stride == (2, 1)
            assert rel(layer(x), ref.detach()) < 1e-10, type(layer).__name__
    assert layers[1].core.dtype == F64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_factors_stay_on_the_callers_device():
    w = cp_kernel(gen(2), (8, 6, 3, 3), 2).float().cuda()
    results = [
        cp(w, 2, 50),
        tucker2(w, 2),
        tensor_train(w, 2),
        spatial_svd(w, 2),
        low_rank(w, 2),
        depthwise_separable(w, 1),
    ]
    for f in results:
        dense = f.to_dense()
        assert dense.is_cuda and dense.dtype == torch.float32
