"""Image folders: ``root/<class>/<image>`` (or ``root/train/<class>/...`` and ``root/test/...``).

Images are read with Pillow, converted to RGB, resized to ``size x size`` and standardised with the
training split's statistics. Without train/ and test/ sub-folders a fixed stratified split is made.
Empty folders and unreadable files are errors that name the path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from .bundle import DataBundle, DataError
from .transforms import normalise

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _read(path: Path, size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from None
    return data.view(size, size, 3).permute(2, 0, 1).float() / 255.0


def _scan(root: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    names = classes or [p.name for p in found]
    if not names:
        raise DataError(f"image folder {str(root)!r} has no class sub-folders")
    files, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        images = sorted(p for p in folder.glob("*") if p.suffix.lower() in EXTENSIONS)
        if not images:
            raise DataError(f"class folder {str(folder)!r} holds no images")
        files += images
        labels += [label] * len(images)
    return files, labels, names


def image_folder(root: str | Path, size: int = 32, test_fraction: float = 0.2, seed: int = 0):
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {str(root)!r} does not exist")
    if (root / "train").is_dir() and (root / "test").is_dir():
        tr_files, tr_labels, names = _scan(root / "train", None)
        te_files, te_labels, _ = _scan(root / "test", names)
    else:
        files, labels, names = _scan(root, None)
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(files), generator=g).tolist()
        cut = max(1, round(len(files) * test_fraction))
        te = set(perm[:cut])
        tr_files = [f for i, f in enumerate(files) if i not in te]
        tr_labels = [lab for i, lab in enumerate(labels) if i not in te]
        te_files = [f for i, f in enumerate(files) if i in te]
        te_labels = [lab for i, lab in enumerate(labels) if i in te]
        if not tr_files:
            raise DataError(f"image folder {str(root)!r} has too few images to split")
    train = torch.stack([_read(p, size) for p in tr_files])
    test = torch.stack([_read(p, size) for p in te_files])
    train, test = normalise(train, test)
    return DataBundle(
        f"folder:{root}",
        TensorDataset(train, torch.tensor(tr_labels)),
        TensorDataset(test, torch.tensor(te_labels)),
        len(names),
        (3, size, size),
    )
