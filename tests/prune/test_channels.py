"""Channel selection and least-squares refit against independent references: patches cut by
slicing, ``torch.linalg.lstsq`` and ``F.conv2d`` in float64."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from leanconv.prune import channel_energy, input_gram, refit_weight, select_channels


def patches(x, k, stride, padding, dilation):
    """The unfolded input cut by slicing (no ``F.unfold``): rows are output positions, columns
    ``(channel, tap)`` in the weight's order."""
    x = F.pad(x.double(), (padding,) * 4)
    n, c, h, w = x.shape
    oh = (h - dilation * (k - 1) - 1) // stride + 1
    ow = (w - dilation * (k - 1) - 1) // stride + 1
    cols = []
    for ch in range(c):
        for i in range(k):
            for j in range(k):
                y0, x0 = i * dilation, j * dilation
                cut = x[:, ch, y0 : y0 + stride * (oh - 1) + 1 : stride,
                        x0 : x0 + stride * (ow - 1) + 1 : stride]  # fmt: skip
                cols.append(cut.reshape(-1))
    return torch.stack(cols, 1)


@given(
    c=st.integers(1, 4),
    k=st.sampled_from([1, 3]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
)
def test_gram_is_that_of_the_patches(c, k, stride, padding, dilation):
    g = torch.Generator().manual_seed(c * 7 + k)
    batches = [torch.randn(2, c, 7, 6, generator=g), torch.randn(1, c, 7, 6, generator=g)]
    gram = input_gram(batches, k, stride, padding, dilation)
    a = torch.cat([patches(x, k, stride, padding, dilation) for x in batches])
    torch.testing.assert_close(gram, a.T @ a, rtol=1e-12, atol=1e-10)


def test_energy_is_the_norm_of_each_channels_output_part():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 9, 9, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    energy = channel_energy(input_gram([x], 3, 1, 1), w)
    for c in range(5):
        part = F.conv2d(x[:, c : c + 1], w[:, c : c + 1], padding=1)
        assert float(energy[c]) == pytest.approx(float(part.pow(2).sum()), rel=1e-10)


def test_refit_is_the_least_squares_solution():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, 8, 8, generator=g)
    w = torch.randn(5, 6, 3, 3, generator=g)
    kept = torch.tensor([0, 2, 3, 5])
    v = refit_weight(input_gram([x], 3, 2, 1), w, kept)
    a = patches(x, 3, 2, 1, 1)
    y = a @ w.double().reshape(5, -1).T
    cols = torch.cat([torch.arange(c * 9, c * 9 + 9) for c in kept.tolist()])
    expected = torch.linalg.lstsq(a[:, cols], y).solution.T.reshape(5, 4, 3, 3)
    torch.testing.assert_close(v.double(), expected, rtol=1e-5, atol=1e-5)
    assert v.dtype == torch.float32 and v.shape == (5, 4, 3, 3)


def test_dropped_channels_that_are_combinations_of_kept_ones_are_refitted_exactly():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(3, 3, 10, 10, generator=g, dtype=torch.float64)
    mix = torch.randn(2, 3, generator=g, dtype=torch.float64)
    x = torch.cat([base, torch.einsum("dc,nchw->ndhw", mix, base)], 1)  # channels 3, 4 dependent
    w = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64)
    kept = torch.tensor([0, 1, 2])
    v = refit_weight(input_gram([x], 3, 1, 1), w, kept)
    torch.testing.assert_close(F.conv2d(x[:, kept], v, padding=1), F.conv2d(x, w, padding=1),
                               rtol=1e-7, atol=1e-7)  # fmt: skip


def test_keeping_every_channel_returns_the_weight():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 8, 8, generator=g)
    w = torch.randn(2, 3, 3, 3, generator=g)
    v = refit_weight(input_gram([x], 3, 1, 1), w, torch.arange(3))
    torch.testing.assert_close(v, w, rtol=1e-4, atol=1e-5)


def test_a_channel_that_is_always_zero_is_dropped_first_and_the_refit_stays_finite():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 6, 6, generator=g)
    x[:, 1] = 0  # a dead channel (a ReLU that never fires)
    w = torch.randn(3, 4, 3, 3, generator=g)
    gram = input_gram([x], 3, 1, 1)
    assert 1 not in select_channels(gram, w, 3).tolist()
    assert torch.isfinite(refit_weight(gram, w, torch.tensor([0, 1, 2]))).all()


def test_selection_is_the_largest_energies_in_order_and_checks_its_count():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 6, 6, generator=g)
    x[:, 3] *= 10
    x[:, 0] *= 5
    w = torch.randn(2, 5, 1, 1, generator=g).abs() + 0.5
    gram = input_gram([x], 1)
    assert select_channels(gram, w, 2).tolist() == [0, 3]
    with pytest.raises(ValueError, match="keep=0"):
        select_channels(gram, w, 0)
    with pytest.raises(ValueError, match="keep=6"):
        select_channels(gram, w, 6)


def test_no_calibration_input_is_an_error():
    with pytest.raises(ValueError, match="no calibration inputs"):
        input_gram([], 3)


def test_the_gram_taken_a_few_images_at_a_time_is_the_same(monkeypatch):
    from leanconv.prune import channels

    x = torch.randn(5, 3, 9, 9, generator=torch.Generator().manual_seed(7))
    whole = input_gram([x], 3, 1, 1)
    monkeypatch.setattr(channels, "CHUNK_VALUES", 27 * 81 * 2)  # two images at a time
    torch.testing.assert_close(input_gram([x], 3, 1, 1), whole, rtol=1e-12, atol=1e-10)
