"""Building blocks for efficient convolutions: thin ``nn.Module`` shells over functional cores."""

from .residual import BasicBlock, BottleneckBlock

__all__ = ["BasicBlock", "BottleneckBlock"]
