"""Data for training and calibration: the built-in digits, image folders, CIFAR batches."""

from .bundle import DataBundle, load_data
from .cifar import cifar
from .digits import digits
from .folders import image_folder
from .transforms import Augment, normalise

__all__ = ["Augment", "DataBundle", "cifar", "digits", "image_folder", "load_data", "normalise"]
