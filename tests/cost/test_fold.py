"""``CostReport.fold``: a long report shortened for reading, with the same totals."""

import pytest
import torch
from torch import nn

import leanconv


class Steps(nn.Module):
    """Many op calls in one module (as an RNN makes), two of them uncounted ops."""

    def __init__(self, steps):
        super().__init__()
        self.cell = nn.Linear(4, 4)
        self.steps = steps

    def forward(self, x):
        for _ in range(self.steps):
            x = torch.tanh(self.cell(x))
        return torch.special.bessel_j0(x) + torch.special.bessel_y0(x)


def test_rows_of_one_module_and_kind_are_summed():
    report = leanconv.count(Steps(150), (2, 4))
    folded, depth = report.fold(200)
    assert depth is None and folded.total == report.total
    by_name = {(r.name, r.kind) for r in folded.rows}
    assert ("cell", "linear x150") in by_name and ("", "activation x150") in by_name
    uncounted = sorted(r.detail for r in folded.uncounted)
    # unknown ops stay apart, by name
    assert uncounted == ["special_bessel_j0", "special_bessel_y0"]
    assert len(folded.rows) < 10


def test_too_many_modules_are_merged_into_their_ancestors():
    model = nn.Sequential(*(nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(150)))
    report = leanconv.count(model, (2, 4))
    assert len(report.rows) == 300
    folded, depth = report.fold(200)
    assert depth == 0 and folded.total == report.total
    assert [(r.name, r.kind) for r in folded.rows] == [("", "linear x150"), ("", "activation x150")]
    assert folded.rows[0].params == sum(p.numel() for p in model.parameters())
    kept, depth = report.fold(300)
    assert depth is None and len(kept.rows) == 300
    with pytest.raises(ValueError, match="max_rows=0"):
        report.fold(0)
