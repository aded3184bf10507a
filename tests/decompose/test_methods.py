"""The registry of decomposition methods: every part of the library reads one record per method,
so a new method is one declaration (here made in the test) and works everywhere."""

import pytest
import torch
import torch.nn.functional as F

import leanconv
from leanconv.compress.replace import decompose_layer
from leanconv.decompose import METHODS, methods
from leanconv.decompose.rank import budget_rank, factor_specs
from leanconv.errors import LeanconvError
from leanconv.spec import ConvSpec


def test_every_method_is_registered_once_with_its_aliases():
    assert set(METHODS) == {"cp", "tucker2", "tt", "spatial_svd", "low_rank", "depthwise"}
    assert methods.aliases() == {
        "parafac": "cp", "tucker": "tucker2", "tensor_train": "tt", "svd": "spatial_svd",
        "lowrank": "low_rank", "depthwise_separable": "depthwise",
    }  # fmt: skip
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.REGISTRY["cp"])
    with pytest.raises(LeanconvError, match="unknown decomposition method 'nosuch'"):
        methods.get("nosuch")


class _Split:
    """Factors of a toy method: the first ``rank`` output channels, then a selection matrix."""

    def __init__(self, w, rank):
        self.first = w[:rank]
        self.select = torch.eye(w.shape[0], rank, dtype=w.dtype)

    def to_dense(self):
        return torch.einsum("kr,rchw->kchw", self.select, self.first)


def _rows_then_columns(w, rank, groups, name, seed):
    """Exact when ``rank`` is the number of output channels."""
    return _Split(w, rank)


@pytest.fixture
def toy():
    record = methods.register(methods.Method(
        name="toy_split", aliases=("toy",),
        chain=lambda c, k, kh, kw, g, rank: [(c, rank, (kh, kw), "full", g),
                                             (rank, k, 1, "1x1", g)],
        budget_ranks=lambda t, k, c, kh, kw: (t, k),
        factorise=_rows_then_columns,
        weights=lambda f: [f.first, f.select],
    ))  # fmt: skip
    yield record
    methods.REGISTRY.pop("toy_split")


def test_a_new_method_is_one_record(toy):
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=True).double()
    spec = ConvSpec(4, 6, 3, input_size=(8, 8), padding=1, dtype=torch.float64)
    assert [s.kernel_size for s in factor_specs(spec, "toy_split", 6)] == [(3, 3), (1, 1)]
    # the largest rank whose chain costs at most the layer: r (4*9 + 6) <= 6*4*9, r = 5
    assert budget_rank(spec, "toy_split", 1.0) == 5
    d = decompose_layer(conv, "toy", 6)  # by its alias
    assert d.method == "toy_split"
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(d.module(x), F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert type(leanconv.decompose(conv, "toy_split", 6)) is torch.nn.Sequential
