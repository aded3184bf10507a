"""PreciseBN: running statistics recomputed for the current weights, checked against statistics
computed by hand layer by layer in float64; and fine-tuning evaluating (and keeping) them."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from leanconv.compress import precise_bn
from leanconv.compress.evaluate import accuracy
from leanconv.compress.finetune import FinetuneConfig, finetune
from leanconv.data import DataBundle


def two_bn_model(dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Dropout(dropout), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3),
    ).double()  # fmt: skip


def by_hand(model: nn.Sequential, x: torch.Tensor, batch: int) -> list[tuple]:
    """The equal-weight average over batches of each BatchNorm's batch mean and unbiased
    variance, the layers run in training-mode normalisation, computed with plain tensor ops."""
    conv1, _, bn1, _, conv2, bn2 = model
    sums = [[0, 0], [0, 0]]
    chunks = x.split(batch)
    for xb in chunks:
        h = F.conv2d(xb, conv1.weight, conv1.bias, padding=1)
        for i, (bn, conv) in enumerate(((bn1, conv2), (bn2, None))):
            mean = h.mean((0, 2, 3))
            var_b = h.var((0, 2, 3), unbiased=False)
            sums[i][0] = sums[i][0] + mean
            sums[i][1] = sums[i][1] + h.var((0, 2, 3), unbiased=True)
            h = (h - mean[:, None, None]) / torch.sqrt(var_b[:, None, None] + bn.eps)
            h = h * bn.weight[:, None, None] + bn.bias[:, None, None]
            if conv is not None:
                h = F.conv2d(h.relu(), conv.weight, conv.bias)
    return [(m / len(chunks), v / len(chunks)) for m, v in sums]


def shifted_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64) * 3 + 5
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))


def test_statistics_are_the_average_over_batches_of_the_current_weights():
    model = two_bn_model()
    data = shifted_data()
    model.train()
    with torch.no_grad():  # running averages of other weights: stale
        model(torch.randn(8, 2, 6, 6, dtype=torch.float64))
        model[0].weight.mul_(2)
    model.eval()
    loader = DataLoader(data, batch_size=8)  # a loader: its own batches, in its order
    used = precise_bn.recompute(model, loader, batch_size=99, samples=10_000)
    assert used == 40
    want = by_hand(model, data.tensors[0], 8)
    for bn, (mean, var) in zip((model[2], model[5]), want, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-10)
        assert bn.momentum == 0.1  # restored
    assert not model.training and not any(m.training for m in model.modules())


def test_samples_cap_dropout_off_and_flags_restored():
    model = two_bn_model(dropout=0.5)
    data = shifted_data(n=40)
    model.train()
    model[1].eval()  # a mix of flags, each to come back as it was
    flags = [m.training for m in model.modules()]
    used = precise_bn.recompute(model, DataLoader(data, batch_size=8), samples=20)
    assert used == 20
    assert [m.training for m in model.modules()] == flags
    first = copy.deepcopy(model.state_dict())
    precise_bn.recompute(model, DataLoader(data, batch_size=8), samples=20)  # no dropout: same
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, first[k], rtol=0, atol=0)
    plain = two_bn_model(dropout=0.0)
    plain.load_state_dict(model.state_dict())
    want = by_hand(plain, data.tensors[0][:20], 8)
    torch.testing.assert_close(model[2].running_mean, want[0][0], rtol=1e-10, atol=1e-10)


def test_nothing_to_do_or_nothing_usable_leaves_statistics_alone():
    calls = []
    plain = nn.Sequential(nn.Linear(3, 2))
    plain.register_forward_hook(lambda *a: calls.append(1))
    assert precise_bn.recompute(plain, TensorDataset(torch.randn(4, 3), torch.zeros(4))) == 0
    assert not calls  # no pass at all without BatchNorm

    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].running_mean.fill_(0.5)
    one = TensorDataset(torch.randn(1, 3), torch.zeros(1))  # a batch of 1: no statistics
    assert precise_bn.recompute(model, one) == 0
    assert torch.equal(model[1].running_mean, torch.full((2,), 0.5))
    assert precise_bn.recompute(model, TensorDataset(torch.randn(9, 3), torch.zeros(9)), 4) == 8

    untracked = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1, track_running_stats=False))
    assert precise_bn.batch_norms(untracked) == []


def test_a_dataset_sorted_by_class_is_sampled_across_it():
    x = torch.cat([torch.zeros(64, 1, 2, 2), torch.full((64, 1, 2, 2), 10.0)])  # class 0, then 1
    model = nn.Sequential(nn.BatchNorm2d(1))
    precise_bn.recompute(model, TensorDataset(x, torch.zeros(128)), batch_size=16, samples=64)
    assert 2.0 < model[0].running_mean.item() < 8.0  # not 0: the first half's alone


def bn_classifier(classes=3):
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))  # fmt: skip


def small_data(n=48, classes=3, seed=0):
    """A few dozen images whose class moves the mean brightness: few steps per epoch."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) + 2 * y[:, None, None, None].float()
    half = n * 3 // 4
    return DataBundle("small", TensorDataset(x[:half], y[:half]), TensorDataset(x[half:], y[half:]),
                      classes, (1, 8, 8))  # fmt: skip


def test_finetuned_model_ends_with_the_statistics_of_its_weights():
    data = small_data()
    model = bn_classifier()
    cfg = FinetuneConfig(epochs=2, batch_size=16, lr=0.2, augment=False, progress=False)
    result = finetune(model, data, None, cfg, log=None)
    reference = copy.deepcopy(model)
    precise_bn.recompute(reference, data.train, batch_size=16)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, reference.state_dict()[k])
    assert accuracy(model, data.test) == result.history[-1].metric

    off = bn_classifier()
    cfg_off = FinetuneConfig(epochs=2, batch_size=16, lr=0.2, augment=False, progress=False,
                             bn_samples=0)  # fmt: skip
    finetune(off, data, None, cfg_off, log=None)
    assert not torch.allclose(off[1].running_mean, model[1].running_mean)  # EMA: other values
    with pytest.raises(ValueError, match="--bn-samples -1"):
        FinetuneConfig(bn_samples=-1)


def test_weights_before_finetuning_are_kept_when_no_epoch_does_as_well(tmp_path):
    data = small_data(n=120)
    model = bn_classifier()
    finetune(model, data, None, FinetuneConfig(epochs=8, batch_size=16, lr=0.1, augment=False,
                                               progress=False), log=None)  # fmt: skip
    start = copy.deepcopy(model)
    wrong = lambda out, y: F.cross_entropy(out, (y + 1) % 3)  # noqa: E731  trains away
    cfg = FinetuneConfig(epochs=2, batch_size=16, lr=0.1, augment=False, progress=False,
                         validation=0.25, checkpoint=tmp_path / "c.pt")  # fmt: skip
    lines = []
    result = finetune(model, data, None, cfg, log=lines.append, loss=wrong)
    assert result.start_validation > max(r.validation_metric for r in result.history)
    assert result.best_epoch == 0 and result.best_metric == result.start_metric
    assert lines[0].startswith("before fine-tuning: validation ")
    precise_bn.recompute(start, data.holdout(0.25, cfg.seed).train, 16)
    for k, v in model.state_dict().items():  # the start's weights, their statistics recomputed
        torch.testing.assert_close(v, start.state_dict()[k])
    assert accuracy(model, data.test) == result.start_metric

    resumed = copy.deepcopy(start)  # the checkpoint carries the start's figures
    cfg_more = FinetuneConfig(**{**cfg.__dict__, "epochs": 3, "resume": True})
    again = finetune(resumed, data, None, cfg_more, log=None, loss=wrong)
    assert again.start_validation == result.start_validation and len(again.history) == 3
