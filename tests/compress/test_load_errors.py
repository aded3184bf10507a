"""``leanconv.load`` on damaged files: one clear ``LeanconvError`` naming the file."""

import pytest
import torch

import leanconv
from leanconv import zoo
from leanconv.compress import serialize


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = zoo.create("resnet18_cifar", width=0.25).eval()
    out = tmp_path / "m"
    serialize.save(model, out, {"zoo": "resnet18_cifar", "kwargs": {"width": 0.25}}, {})
    return out


def test_truncated_safetensors_is_a_clear_error(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    for size in (len(data) // 2, 0, 8, len(data) - 1):  # half, empty, header cut, last byte
        weights.write_bytes(data[:size])
        with pytest.raises(leanconv.errors.LeanconvError) as info:
            leanconv.load(saved)
        message = str(info.value)
        assert "model.safetensors" in message, (size, message)
        assert "truncated" in message or "unreadable" in message, (size, message)
