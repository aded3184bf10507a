"""What the model definitions share: the checks of their common arguments, width scaling, the
convolution-batch-norm-ReLU layers and the initialisation of the torchvision references."""

from __future__ import annotations

from torch import nn

from ...nn._common import conv_norm_act, relu


def check_model(name: str, num_classes: int, width: float) -> None:
    """``ValueError`` naming the model when ``num_classes`` or ``width`` is not positive."""
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes={num_classes} must be positive")
    if width <= 0:
        raise ValueError(f"{name}: width={width} must be positive")


def scaled(channels: int, width: float) -> int:
    """``channels * width``, rounded, at least 1."""
    return max(1, int(round(channels * width)))


def conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, act=relu) -> list[nn.Module]:
    """``k x k`` convolution (padding ``k // 2``, no bias), batch norm and ``act()``."""
    return conv_norm_act(c_in, c_out, k, stride, k // 2, activation=act)


def init_weights(model: nn.Module, linear: bool = False) -> None:
    """Kaiming-normal (fan out) convolutions and unit batch norms; with ``linear``, linear layers
    drawn from ``N(0, 0.01)`` with zero bias (else PyTorch's default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif linear and isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
