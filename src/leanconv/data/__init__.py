"""Data for training and calibration: the built-in digits, image folders, CIFAR batches."""

from .bundle import DataBundle
from .cifar import cifar
from .digits import digits
from .folders import image_folder
from .load import load_data
from .transforms import Augment, normalise

__all__ = ["Augment", "DataBundle", "cifar", "digits", "image_folder", "load_data", "normalise"]
