"""Counting the models people have: several inputs, integer inputs, data-dependent forwards,
TorchScript and torch.export archives. Expected counts are closed forms written out here."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import leanconv
from leanconv.errors import ForwardError, ModelLoadError, UnsafeFileError
from leanconv.loading import load_model


class TwoInputs(nn.Module):
    """Two tensor inputs and a keyword: a(x) * scale + b(y)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(6, 4)

    def forward(self, x, y, scale: float = 1.0):
        return self.a(x) * scale + self.b(y)


def two_inputs_macs(n):
    return n * 8 * 4 + n * 6 * 4


class Text(nn.Module):
    """int64 token ids -> embedding -> Conv1d (kernel 3, no padding) -> Linear."""

    def __init__(self):
        super().__init__()
        self.emb, self.conv, self.fc = nn.Embedding(100, 16), nn.Conv1d(16, 32, 3), nn.Linear(32, 5)

    def forward(self, ids):
        h = self.conv(self.emb(ids).transpose(1, 2))
        return self.fc(h.mean(-1))


def text_macs(n, length):
    return n * 32 * 16 * 3 * (length - 2) + n * 32 * 5


class Item(nn.Module):
    """Calls .item() and branches on it: cannot run on meta or under FakeTensorMode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.abs().max().item() > 1e30:
            return y * 0
        return y


def item_macs(n, h=10, w=10):
    return n * 8 * 3 * 9 * (h - 2) * (w - 2)


class Arange(nn.Module):
    """Makes a CPU tensor inside forward (torch.arange): fails on meta, runs under fake tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        return y + torch.arange(y.shape[-1], dtype=y.dtype)


CASES = [
    # model, the arguments given to count, expected MACs, the way it must be counted
    (TwoInputs, ((3, 8), (3, 6)), {"scale": 2.0}, two_inputs_macs(3), "on meta"),
    (Text, (torch.randint(0, 100, (2, 20)),), {}, text_macs(2, 20), "on meta"),
    (Item, ((4, 3, 10, 10),), {}, item_macs(4), "on the CPU at batch 1, scaled to batch 4"),
    (Arange, ((4, 3, 10, 10),), {}, item_macs(4), "under FakeTensorMode"),
]


@pytest.mark.parametrize("cls, args, kwargs, macs, way", CASES)
def test_the_api_counts_each_model_exactly(cls, args, kwargs, macs, way):
    torch.manual_seed(0)
    report = leanconv.count(cls(), *args, **kwargs)
    assert report.total.macs == macs and report.method == way
    assert not report.uncounted
    assert report.total.params == sum(p.numel() for p in cls().parameters())
    if way != "on meta":
        assert any(way in n for n in report.notes)  # the report says which way was used


def test_argument_forms():
    model = TwoInputs()
    x, y = torch.randn(3, 8), torch.randn(3, 6)
    want = two_inputs_macs(3)
    assert leanconv.count(model, (x, y)).total.macs == want  # a tuple of tensors: two arguments
    assert leanconv.count(model, [(3, 8), (3, 6)]).total.macs == want  # a list of shapes
    assert leanconv.count(model, x, "3,6", scale=0.5).total.macs == want
    assert leanconv.count(nn.Linear(8, 4), (5, 8)).total.macs == 5 * 8 * 4  # one shape
    with pytest.raises(ForwardError, match="missing 1 required positional argument"):
        leanconv.count(model, (3, 8))  # a missing argument: the model's own error, one line


def test_batch_scaling_is_exact_only_where_linear():
    class Quadratic(nn.Module):  # MACs grow with batch^2: must be counted at the batch itself
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum().item() > 1e30:
                return x
            h = self.fc(x)
            return h @ h.t()

    report = leanconv.count(Quadratic(), (6, 4))
    assert report.total.macs == 6 * 4 * 4 + 6 * 4 * 6 and report.method == "on the CPU at batch 6"


def test_compiled_model_counts_its_module():
    model = Text()
    compiled = torch.compile(model)
    assert leanconv.count(compiled, torch.randint(0, 100, (2, 20))).total.macs == text_macs(2, 20)


def _archives(tmp_path, cls, args):
    """The model traced and scripted to TorchScript, and exported with torch.export."""
    torch.manual_seed(0)
    model = cls().eval()
    real = tuple(torch.randn(a) if isinstance(a, tuple) else a for a in args)
    paths = {}
    traced = torch.jit.trace(model, real)
    traced.save(str(tmp_path / "traced.pt"))
    paths["traced"] = tmp_path / "traced.pt"
    try:
        torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
        paths["scripted"] = tmp_path / "scripted.pt"
    except Exception:  # some forwards do not script (kwargs defaults are fine; .item() is)
        pass
    try:
        torch.export.save(torch.export.export(model, real), str(tmp_path / "exported.pt2"))
        paths["exported"] = tmp_path / "exported.pt2"
    except Exception:  # data-dependent forwards do not export without guards
        pass
    return paths


@pytest.mark.parametrize("cls, args, macs", [
    (TwoInputs, ((3, 8), (3, 6)), two_inputs_macs(3)),
    (Text, (torch.randint(0, 100, (2, 20)),), text_macs(2, 20)),
    (Arange, ((4, 3, 10, 10),), item_macs(4)),
])  # fmt: skip
def test_archives_count_exactly(tmp_path, cls, args, macs):
    paths = _archives(tmp_path, cls, args)
    assert "traced" in paths
    for kind, path in paths.items():
        # as a user loads them (TorchScript onto the CPU by default): counting moves nothing
        module = torch.jit.load(str(path)) if kind != "exported" else torch.export.load(
            str(path)).module()  # fmt: skip
        report = leanconv.count(module, *args)
        assert report.total.macs == macs, kind
        assert not [r for r in report.rows if r.kind == "unused"], kind
        assert report.total.params == sum(p.numel() for p in cls().parameters()), kind


def test_bad_model_files_are_diagnosed(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "empty.jit").write_bytes(b"")
    (tmp_path / "x.pt2").write_bytes(b"not a zip at all")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(ModelLoadError, match="is empty"):
        load_model(str(tmp_path / "empty.pt"))
    with pytest.raises(ModelLoadError, match="is empty"):
        load_model(str(tmp_path / "empty.jit"))
    with pytest.raises(ModelLoadError, match="not a zip archive, so not a torch.export"):
        load_model(str(tmp_path / "x.pt2"))
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(str(tmp_path / "dir.pt"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    torch.save({"w": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(UnsafeFileError, match="pickled state dict"):
        load_model(str(tmp_path / "state.pt"))


def test_functional_ops_on_each_way():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 3, 3, 3))

        def forward(self, x):
            y = F.conv2d(x, self.w)
            return y + torch.arange(y.shape[-1], dtype=y.dtype) if x.shape[0] else y

    report = leanconv.count(Functional(), (2, 3, 10, 10))
    assert report.total.macs == item_macs(2) and report.method == "under FakeTensorMode"
