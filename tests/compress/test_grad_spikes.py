"""SpikeClip: each step's gradient norm bounded by a multiple of the median of the previous ones,
checked against norms computed with torch.linalg.vector_norm."""

import math

import pytest
import torch

from leanconv.compress.finetune import FinetuneConfig
from leanconv.compress.grad_spikes import SpikeClip


def grads(*values: float) -> list[torch.Tensor]:
    """Parameters whose gradients hold ``values`` (two tensors, to check the global norm)."""
    params = [torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)]
    params[0].grad = torch.tensor(values[:2], dtype=torch.float32)
    params[1].grad = torch.tensor(values[2:], dtype=torch.float32)
    return params


def norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])))


def test_first_step_is_free_then_spikes_are_cut_to_factor_times_the_median():
    clip = SpikeClip(2.0)
    assert clip.threshold() == math.inf
    for g in ([3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]):  # norms 5, 1, 2: none cut
        params = grads(*g)
        assert clip(params) == pytest.approx(norm(grads(*g)))
        assert norm(params) == pytest.approx(norm(grads(*g)))
    assert clip.threshold() == pytest.approx(2.0 * 2.0)  # median of 5, 1, 2
    spike = grads(30.0, 40.0, 0.0)  # norm 50
    assert clip(spike) == pytest.approx(50.0)
    assert norm(spike) == pytest.approx(4.0, rel=1e-5)
    torch.testing.assert_close(spike[0].grad, torch.tensor([2.4, 3.2]), rtol=1e-5, atol=1e-6)
    assert clip.state() == pytest.approx([5.0, 1.0, 2.0, 50.0])


def test_bound_window_off_and_non_finite():
    clip = SpikeClip(3.0, window=2, norms=[1.0, 100.0, 2.0])  # only the last two are kept
    assert clip.state() == [100.0, 2.0] and clip.threshold() == pytest.approx(153.0)
    params = grads(0.0, 0.0, 10.0)
    clip(params, bound=1.0)  # a fixed bound below the spike rule's wins
    assert norm(params) == pytest.approx(1.0, rel=1e-5)
    off = SpikeClip(0.0, norms=[1.0])
    params = grads(0.0, 0.0, 1e6)
    assert off(params) == pytest.approx(1e6) and norm(params) == pytest.approx(1e6)
    before = off.state()
    assert math.isnan(off(grads(float("nan"), 0.0, 0.0)))
    assert off.state() == before  # a non-finite norm never joins the history


def test_setting_is_checked():
    for bad in (-1.0, 0.5):
        with pytest.raises(ValueError, match="--spike-clip"):
            FinetuneConfig(spike_clip=bad)
    with pytest.raises(ValueError, match="momentum"):
        FinetuneConfig(momentum=1.0)
    FinetuneConfig(momentum=0.0, spike_clip=0.0)  # plain SGD, no clipping: allowed
