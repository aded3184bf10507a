"""Weights files as training scripts save them (``weights.read_state_dict``): the state dict
found under whatever key a checkpoint uses, each step said, and a clear refusal naming the keys
where it is ambiguous or absent."""

import pytest
import torch
from torch import nn

from leanconv.errors import ModelLoadError
from leanconv.weights import read_state_dict


def _state():
    return nn.Linear(3, 2).state_dict()


def test_a_checkpoint_with_its_own_key_for_the_state_dict(tmp_path):
    """One state dict under a key of the script's own (``model_state``) next to plain values:
    read, and said."""
    state = _state()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 15, "model_state": state, "best_acc": 0.9}, path)
    got, said = read_state_dict(path)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    assert said == ["read the state dict under the checkpoint key 'model_state' (the only state "
                    "dict in the checkpoint)"]  # fmt: skip


def test_a_known_key_wins_over_other_state_dicts(tmp_path):
    """``model`` next to an ``ema`` copy: the known key is read (as before)."""
    state, ema = _state(), {k: v + 1 for k, v in _state().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"model": state, "ema": ema}, path)
    got, said = read_state_dict(path)
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert said == ["read the state dict under the checkpoint key 'model'"]


def test_several_or_no_state_dicts_are_refused_by_name(tmp_path):
    path = tmp_path / "two.pth"
    torch.save({"student": _state(), "teacher": _state(), "step": 3}, path)
    with pytest.raises(ModelLoadError, match=r"several state dicts \('student', 'teacher'\)"):
        read_state_dict(path)
    path = tmp_path / "none.pth"
    torch.save({"epoch": 1, "lr": 0.1}, path)
    with pytest.raises(ModelLoadError, match=r"without a state dict .*its keys: 'epoch', 'lr'"):
        read_state_dict(path)
