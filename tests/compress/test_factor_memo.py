"""The memo of factorisations: computed once per weight value and arguments, never shared."""

import copy

import torch
from torch import nn

from leanconv.compress import factor_memo
from leanconv.compress.replace import decompose_layer
from leanconv.decompose.tucker import tucker2


def _counting(weight, calls):
    def compute():
        calls.append(1)
        return tucker2(weight, (3, 2))

    return compute


def test_same_values_compute_once_and_changed_values_again():
    factor_memo.clear()
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    calls = []
    first = factor_memo.factorise(_counting(w, calls), w, "tucker2", (3, 2), 1, 0)
    again = factor_memo.factorise(_counting(w.clone(), calls), w.clone(), "tucker2", (3, 2), 1, 0)
    assert len(calls) == 1 and again is first
    other_rank = factor_memo.factorise(_counting(w, calls), w, "tucker2", (2, 2), 1, 0)
    assert len(calls) == 2 and other_rank is not first
    w2 = w.clone()
    w2[0, 0, 0, 0] += 1e-9
    factor_memo.factorise(_counting(w2, calls), w2, "tucker2", (3, 2), 1, 0)
    assert len(calls) == 3


def test_evicts_least_recently_used_beyond_the_byte_limit(monkeypatch):
    factor_memo.clear()
    monkeypatch.setattr(factor_memo, "MAX_BYTES", 1)
    torch.manual_seed(0)
    a, b = torch.randn(6, 4, 3, 3), torch.randn(6, 4, 3, 3)
    calls = []
    factor_memo.factorise(_counting(a, calls), a, "tucker2", (3, 2))
    factor_memo.factorise(_counting(b, calls), b, "tucker2", (3, 2))
    factor_memo.factorise(_counting(a, calls), a, "tucker2", (3, 2))
    assert len(calls) == 3  # only the newest entry is kept
    assert factor_memo.size() > 0


def test_decompose_layer_reuses_factors_of_a_copy_without_sharing_weights():
    factor_memo.clear()
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1)
    a = decompose_layer(conv, "tucker2", (4, 3))
    held = factor_memo.size()
    b = decompose_layer(copy.deepcopy(conv), "tucker2", (4, 3))
    assert held > 0 and factor_memo.size() == held  # the copy found the original's factors
    x = torch.randn(2, 8, 10, 10)
    torch.testing.assert_close(a.module(x), b.module(x), rtol=0, atol=0)
    assert a.weight_error == b.weight_error
    with torch.no_grad():  # fine-tuning one copy leaves the other (and the memo) alone
        for p in a.module.parameters():
            p.add_(1.0)
    c = decompose_layer(conv, "tucker2", (4, 3))
    torch.testing.assert_close(b.module(x), c.module(x), rtol=0, atol=0)
    assert not torch.equal(a.module(x), c.module(x))
