"""Each module here registers its models on import."""

from . import resnet, vgg  # noqa: F401
