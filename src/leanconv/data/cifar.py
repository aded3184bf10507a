"""CIFAR-10/100 in the python format (``data_batch_1..5``, ``test_batch`` / ``train``, ``test``).

Those files are pickles. They are read with a restricted unpickler that can build only dicts,
lists, strings, bytes and NumPy arrays (the globals NumPy's own pickles name), so a file that tries
to call anything else is refused instead of executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .bundle import DataBundle, DataError
from .transforms import normalise

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: not part of a CIFAR batch")


def _load_batch(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"CIFAR batch {str(path)!r} is missing")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read CIFAR batch {str(path)!r}: {exc}") from None


def _arrays(batch: dict, path: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    data = batch.get(b"data")
    labels = batch.get(b"labels", batch.get(b"fine_labels" if classes == 100 else b"labels"))
    if data is None or labels is None:
        raise DataError(f"{str(path)!r} has no data/labels entries")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{str(path)!r}: expected N x 3072 images and N labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def cifar(root: str | Path, classes: int = 10) -> DataBundle:
    root = Path(root)
    if classes == 10:
        train_files = sorted(root.glob("data_batch_*"))
        test_files = [root / "test_batch"]
    else:
        train_files, test_files = [root / "train"], [root / "test"]
    if not train_files:
        raise DataError(f"no CIFAR-{classes} training batches in {str(root)!r}")
    train = [_arrays(_load_batch(p), p, classes) for p in train_files]
    test = [_arrays(_load_batch(p), p, classes) for p in test_files]
    x_train = torch.from_numpy(np.concatenate([a for a, _ in train])).float() / 255
    y_train = torch.from_numpy(np.concatenate([b for _, b in train]))
    x_test = torch.from_numpy(np.concatenate([a for a, _ in test])).float() / 255
    y_test = torch.from_numpy(np.concatenate([b for _, b in test]))
    for y, where in ((y_train, "train"), (y_test, "test")):
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise DataError(f"CIFAR-{classes} {where} labels outside 0..{classes - 1}")
    x_train, x_test = normalise(x_train, x_test)
    return DataBundle(
        f"cifar{classes}:{root}",
        TensorDataset(x_train, y_train),
        TensorDataset(x_test, y_test),
        classes,
        (3, 32, 32),
    )
