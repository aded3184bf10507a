"""Each module here registers its models on import."""

from . import inception, mobilenet, resnet, shufflenet, vgg  # noqa: F401
