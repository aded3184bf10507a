"""Sensitivities of a classifier whose softmax is saturated: compared at a temperature.
Reference: the plain KL computed here in float64, and the temperature's defining property."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leanconv.compress import outputs


def _plain_kl(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    p = F.log_softmax(ref.double(), 1)
    q = F.log_softmax(out.double(), 1)
    return (p.exp() * (p - q)).sum(1)


def test_a_calibrated_classifier_is_compared_as_it_is():
    torch.manual_seed(0)
    ref = torch.randn(64, 10)  # mean top-1 probability far below 0.99
    reference = outputs.reference(ref, logits=True)
    assert reference.temperature == 1.0
    out = ref + 0.3 * torch.randn(64, 10)
    got = outputs.divergence(out, reference, logits=True)
    assert torch.allclose(got, _plain_kl(out, ref), rtol=1e-10, atol=1e-12)


def test_a_saturated_classifier_is_softened_to_the_confidence():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (64,))
    ref = torch.randn(64, 4) + 25.0 * F.one_hot(labels, 4)  # margins of about 25 nats
    t = outputs.temperature(ref)
    assert t > 1.0
    mean_top1 = lambda t: float(F.softmax(ref.double() / t, 1).max(1).values.mean())  # noqa: E731
    assert mean_top1(t) <= outputs.CONFIDENCE < mean_top1(t / 1.002)
    small, large = ref + 0.5 * torch.randn(64, 4), ref + 3.0 * torch.randn(64, 4)
    # the plain KL cannot tell the two apart (both ~e^-20); at the temperature they differ
    assert float(_plain_kl(large, ref).mean()) < 1e-6
    reference = outputs.reference(ref, logits=True)
    d_small = outputs.divergence(small, reference, logits=True).mean()
    d_large = outputs.divergence(large, reference, logits=True).mean()
    assert d_large > 10 * d_small > 0
    # T^2 KL(softmax(r/T) || softmax(y/T)), by its definition
    want = t * t * _plain_kl(large.double() / t, ref.double() / t)
    assert torch.allclose(outputs.divergence(large, reference, logits=True), want, rtol=1e-9)
