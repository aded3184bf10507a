"""The saved ``torch.export`` program of a model whose weights are channels-last (as the compress
pipeline saves its model) are saved without torch's warning that a group of tensors has no
complete one; weights that are views of one storage are saved too; both load back computing the
model. Reference: the model itself."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import leanconv
from leanconv.compress import serialize
from leanconv.errors import LeanconvError


def _sliced() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    shared = torch.randn(40)  # both weights are views of it, neither covers it whole
    with torch.no_grad():
        net[0].weight = nn.Parameter(shared[:24].view(4, 6))
        net[2].weight = nn.Parameter(shared[24:36].view(3, 4))
    return net


def test_channels_last_weights_saved_whole(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        path = serialize.save(net, tmp_path / "m", {}, force=True, example=x[:2])
    back = leanconv.load(path)
    with torch.no_grad():
        assert torch.allclose(back(x), net(x), atol=1e-6)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)  # untouched


def test_views_saved_whole_in_the_program(tmp_path):
    net = _sliced()
    x = torch.randn(5, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        path = serialize.save(net, tmp_path / "m", {}, force=True, example=x[:2])
    assert (path / "model.pt2").is_file()
    back = leanconv.load(path)  # no factory: the program
    with torch.no_grad():
        assert torch.allclose(back(x), net(x), atol=1e-6)
    assert net[0].weight.untyped_storage().nbytes() == 40 * 4  # the caller's model untouched


def test_a_loaded_program_takes_eval_and_refuses_train(tmp_path):
    """Users call ``model.eval()`` on what they load: on the program (whose own ``eval`` raises
    ``NotImplementedError``) it is a no-op, ``train()`` a clear error, and copies keep both."""
    net = _sliced()
    x = torch.randn(5, 6)
    path = serialize.save(net, tmp_path / "m", {}, force=True, example=x[:2])
    back = leanconv.load(path)
    assert back.eval() is back and not back.training
    assert not any(m.training for m in back.modules())
    with torch.no_grad():
        assert torch.allclose(back(x), net(x), atol=1e-6)
    with pytest.raises(LeanconvError, match="cannot be put in training mode.*factory"):
        back.train()
    twin = copy.deepcopy(back)
    assert twin.eval() is twin
