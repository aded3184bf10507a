"""One model for every batch size: a fast layer runs its algorithm only from the batch size at
which it was measured to pay (selection.batch_switch), the same function either way."""

import pytest
import torch
from torch import nn

from leanconv.bench.timing import Timing
from leanconv.compress.model_json import ModelFileError, validate
from leanconv.nn import WinogradConv2d
from leanconv.selection import batch_switch


def _model():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    return nn.Sequential(WinogradConv2d.from_conv(conv, tile=4), nn.ReLU(),
                         nn.Conv2d(8, 4, 1)).eval()  # fmt: skip


def _whole(on: float = 1.0, off: float = 2.0) -> dict:
    """The stand-in timings of a whole-model check (``on``: the layers' choices as fitted)."""
    return {"on": Timing(on, on, on, 1), "off": Timing(off, off, off, 1)}


def _timings(fast_wins_from: int):
    """A stand-in for bench.timing.compare: the algorithm wins from ``fast_wins_from`` images
    (the whole model agrees)."""

    def compare(fns, **_kwargs):
        if "on" in fns:
            return _whole()
        x_batch = fns["fast"].__defaults__[1][0].shape[0]
        fast, direct = (1.0, 2.0) if x_batch >= fast_wins_from else (2.0, 1.0)
        return {"fast": Timing(fast, fast, fast, 1), "direct": Timing(direct, direct, direct, 1)}

    return compare


@pytest.mark.parametrize("wins_from, expected", [(1, 1), (4, 4), (5, 16), (64, 17)])
def test_min_batch_is_the_smallest_size_from_which_the_algorithm_wins(
    monkeypatch, wins_from, expected
):
    monkeypatch.setattr(batch_switch, "compare", _timings(wins_from))
    model = _model()
    switched = batch_switch.fit_min_batch(model, torch.randn(16, 8, 6, 6), (1, 4, 16))
    assert model[0].min_batch == expected
    assert switched == ({} if expected == 1 else {"0": expected})


def test_below_min_batch_the_direct_convolution_runs_the_same_function(monkeypatch):
    model = _model()
    layer = model[0]
    x = torch.randn(8, 8, 6, 6)
    with torch.no_grad():
        by_algorithm = model(x)
        layer.min_batch = 9
        calls = []
        direct = layer._packed_direct
        monkeypatch.setattr(layer, "_packed_direct",
                            lambda t, r=None: calls.append(t.shape[0]) or direct(t, r))  # fmt: skip
        by_direct = model(x)
        assert calls == [8]  # 8 images < min_batch 9: the direct convolution ran
        reference = model.double()(x.double())
    assert (by_direct.double() - reference).abs().max() < 1e-5
    assert (by_algorithm.double() - reference).abs().max() < 1e-4
    assert "min_batch=9" in repr(layer)


@pytest.mark.parametrize("value", [0, -1, "8", 1.5, True])
def test_model_json_refuses_a_bad_min_batch(value):
    description = {"format": "leanconv-model/1", "base": {}, "min_batch": {"layer1.0": value}}
    with pytest.raises(ModelFileError, match=r"min_batch\['layer1.0'\]"):
        validate(description)


def test_every_deployed_batch_size_is_timed_even_beyond_the_example(monkeypatch):
    timed = []

    def compare(fns, **kwargs):
        if "on" in fns:
            return _whole()
        timed.append(fns["fast"].__defaults__[1][0].shape[0])
        return {"fast": Timing(2.0, 2.0, 2.0, 1), "direct": Timing(1.0, 1.0, 1.0, 1)}

    monkeypatch.setattr(batch_switch, "compare", compare)
    model = _model()
    # four images, deployed at 1 and 64: both sizes timed (the images repeated to 64)
    switched = batch_switch.fit_min_batch(model, torch.randn(4, 8, 6, 6), (1, 64))
    assert timed == [1, 64] and switched == {"0": 65}


def test_an_unbatched_example_is_refused():
    from leanconv.errors import InvalidSpecError

    with pytest.raises(InvalidSpecError, match=r"not a batch \(N, C, H, W\)"):
        batch_switch.fit_min_batch(_model(), torch.randn(8, 6, 6), (1, 8))


def _tucker_chain():
    """A model whose one layer is a Tucker-2 chain of three narrow factors."""
    from leanconv.nn import ChainConv2d, NarrowConv2d

    torch.manual_seed(1)
    convs = [nn.Conv2d(16, 8, 1, bias=False), nn.Conv2d(8, 8, 3, padding=1, bias=False),
             nn.Conv2d(8, 16, 1)]  # fmt: skip
    chain = ChainConv2d.from_chain(nn.Sequential(*map(NarrowConv2d.from_conv, convs)))
    return nn.Sequential(chain, nn.ReLU()).eval()


def _run_timings(run_wins_from: int | None):
    """A stand-in for bench.timing.compare: the chain's factors in one pass win against oneDNN
    from ``run_wins_from`` images (None: never)."""

    def compare(fns, **_kwargs):
        if "on" in fns:
            return _whole()
        x = fns["fast"].__defaults__[0].__defaults__[2][0]
        won = run_wins_from is not None and x.shape[0] >= run_wins_from
        fast, direct = (1.0, 2.0) if won else (2.0, 1.0)
        return {"fast": Timing(fast, fast, fast, 1), "direct": Timing(direct, direct, direct, 1)}

    return compare


@pytest.mark.parametrize("run_wins_from, expected", [(1, 1), (4, 4), (16, 16), (None, 17)])
def test_a_chain_s_narrow_factors_are_fitted_together(monkeypatch, run_wins_from, expected):
    """A chain's narrow factors run the kernel together from the size on which their pass won
    against oneDNN at that size and every larger one; where it never won, none runs it (and the
    deployment turns them back into packed layers)."""
    monkeypatch.setattr(batch_switch, "compare", _run_timings(run_wins_from))
    model = _tucker_chain()
    batch_switch.fit_min_batch(model, torch.randn(16, 16, 6, 6), (1, 4, 16), chains=False)
    layers = [model[0][i] for i in range(3)]
    assert [layer.min_batch for layer in layers] == [expected] * 3
    assert model[0].min_batch == 1  # the chain's own switch is left as it was


def test_a_chain_and_a_layer_given_a_residual_are_timed_with_it(monkeypatch):
    """A residual block's chain and layer are called with the shortcut as a second argument,
    which the narrow pass and the Winograd layer add as they write: both forms are timed with
    it, as they run in the model."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.chain = _tucker_chain()[0]
            self.fast = WinogradConv2d.from_conv(nn.Conv2d(16, 16, 3, padding=1))

        def forward(self, x):
            return self.fast(self.chain(x, x), x)

    seen = []

    def compare(fns, **_kwargs):
        if "on" in fns:
            return _whole()
        first = fns["fast"].__defaults__[0]
        run = not isinstance(first, nn.Module)  # a chain's run: its timing function
        args = first.__defaults__[2] if run else fns["fast"].__defaults__[1]
        seen.append(len(args))
        with torch.no_grad():
            assert torch.allclose(fns["fast"](), fns["direct"](), atol=1e-4)
        return {"fast": Timing(1.0, 1.0, 1.0, 1), "direct": Timing(2.0, 2.0, 2.0, 1)}

    monkeypatch.setattr(batch_switch, "compare", compare)
    block = Block().eval()
    with torch.no_grad():
        batch_switch.fit_min_batch(block, torch.randn(4, 16, 6, 6), (1, 4), chains=False)
    assert seen == [2] * 4  # the Winograd layer, then the chain's run, at sizes 1 and 4


@pytest.mark.parametrize("loses_in_model_at, expected", [((), 1), ((1,), 4), ((1, 4), 16)])
def test_a_layer_that_wins_alone_but_not_in_the_model_runs_direct_there(
    monkeypatch, loses_in_model_at, expected
):
    """Timed alone the algorithm wins at every size; where the whole model with it is slower
    than with the direct convolution, it runs from the next size on. The largest size is not
    checked again (the plan's own size)."""
    checked = []

    def compare(fns, **_kwargs):
        if "on" in fns:
            layer = model[0]
            fns["on"]()
            on = layer.min_batch  # as fitted: the algorithm runs at the size checked
            fns["off"]()
            size = layer.min_batch - 1  # off: direct at the size checked
            checked.append((size, on))
            return _whole(2.0, 1.0) if size in loses_in_model_at else _whole(1.0, 2.0)
        return {"fast": Timing(1.0, 1.0, 1.0, 1), "direct": Timing(2.0, 2.0, 2.0, 1)}

    monkeypatch.setattr(batch_switch, "compare", compare)
    model = _model()
    with torch.no_grad():
        switched = batch_switch.fit_min_batch(model, torch.randn(16, 8, 6, 6), (1, 4, 16))
    assert model[0].min_batch == expected
    assert switched == ({} if expected == 1 else {"0": expected})
    # each size below the largest checked with the layer running its algorithm there
    assert [size for size, _ in checked] == [1, 4]
    assert all(on <= size for size, on in checked)
