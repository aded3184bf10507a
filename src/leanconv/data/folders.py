"""Image folders: ``root/<class>/<image>``, or ``root/train/<class>/...`` beside a held-out split
``root/test/...`` (or ``val/``, ``valid/``, ``validation/``: torchvision's ImageNet layout).

Label ``i`` is the ``i``-th class folder in sorted order (as torchvision's ``ImageFolder``
numbers them) unless ``classes`` gives the order the model was trained with.

Images are read lazily, one at a time, by a ``DataLoader`` with worker processes: memory does not
grow with the number of images. Each image is converted to RGB (``grayscale=True``: to one channel,
Pillow's ``L`` mode, ``0.299 R + 0.587 G + 0.114 B`` as torchvision's ``Grayscale``), then prepared
as the user says and as torchvision's standard evaluation transforms do, and as nothing else:

- ``resize=N``: the shorter side resized to ``N`` (aspect ratio kept, bilinear with antialiasing,
  Pillow's ``resize``), then ``crop=N``: the centre ``N x N`` crop (the ImageNet evaluation recipe
  is ``resize=256, crop=224``);
- ``input_size=(H, W)``: every image resized to exactly ``H x W``; by default the images' own size,
  which must then be the same for all of them (checked from the files' headers before any work);
- pixel values scaled to [0, 1], then ``normalize``: ``"none"`` (the default: as ``ToTensor``
  leaves them), ``"imagenet"`` (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225), ``"dataset"``
  (the training images' own per-channel mean and standard deviation), or explicit ``mean`` and
  ``std``: ``(x - mean) / std`` per channel.

What was used is recorded in the bundle's ``preprocessing`` (and from there in ``report.json`` and
the saved model's JSON). Without train/ and held-out sub-folders a fixed stratified split is made;
a train/ folder of class folders with no held-out split beside it is an error that says so.
Empty folders, unreadable files and images of different sizes are errors that name the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .batches import DataError
from .bundle import DataBundle

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE = ("none", "imagenet", "dataset")


class Preprocess:
    """One image file -> a normalised ``C x H x W`` float32 tensor, ``C`` 3 (RGB) or 1
    (``grayscale``; see the module docstring)."""

    def __init__(self, resize=None, crop=None, input_size=None, mean=None, std=None,
                 grayscale=False):  # fmt: skip
        self.resize, self.crop, self.input_size = resize, crop, input_size
        self.grayscale = grayscale
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)[:, None, None]

    def image(self, path: Path):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.grayscale else "RGB")
                if self.resize:
                    w, h = img.size
                    s = self.resize / min(w, h)
                    size = (self.resize, round(h * s)) if w <= h else (round(w * s), self.resize)
                    img = img.resize(size, Image.BILINEAR)
                if self.crop:
                    w, h = img.size
                    top, left = round((h - self.crop) / 2), round((w - self.crop) / 2)
                    img = img.crop((left, top, left + self.crop, top + self.crop))
                if self.input_size and img.size != (self.input_size[1], self.input_size[0]):
                    img = img.resize((self.input_size[1], self.input_size[0]), Image.BILINEAR)
                w, h = img.size
                data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot read image {str(path)!r}: {exc}") from None
        return data.view(h, w, self.channels).permute(2, 0, 1).float() / 255.0

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def __call__(self, path: Path) -> torch.Tensor:
        x = self.image(path)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def describe(self) -> dict:
        def values(t):
            return None if t is None else [round(float(v), 6) for v in t.flatten()]

        return {
            "resize": self.resize, "crop": self.crop,
            "input_size": list(self.input_size) if self.input_size else None,
            "mean": values(self.mean), "std": values(self.std), "grayscale": self.grayscale,
        }  # fmt: skip


class ImageFiles(Dataset):
    """``(image, label)`` samples read from ``files`` when asked for, by ``preprocess``."""

    def __init__(self, files: list[Path], labels: list[int], preprocess: Preprocess):
        self.files, self.labels, self.preprocess = files, labels, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.preprocess(self.files[i]), self.labels[i]


#: The names a held-out split's folder may have beside ``train/``, in the order looked for.
HELD_OUT = ("test", "val", "valid", "validation")


def _splits(root: Path) -> tuple[Path, Path] | None:
    """``(train, held_out)`` folders when ``root`` is split so; ``None`` when it is not (its
    sub-folders are the classes); an error for a train/ folder of class folders alone."""
    train = root / "train"
    if not train.is_dir():
        return None
    held = next((root / n for n in HELD_OUT if (root / n).is_dir()), None)
    if held is not None:
        return train, held
    if any(p.is_dir() for p in train.iterdir()):
        others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "train")
        raise DataError(
            f"image folder {str(root)!r} has a train/ folder of classes but no held-out split "
            f"beside it (looked for {', '.join(n + '/' for n in HELD_OUT)}; found "
            f"{', '.join(o + '/' for o in others) or 'nothing else'}): rename the held-out "
            "folder, or put the class folders directly under the root for a fixed split"
        )
    return None


def _scan(root: Path, classes: list[str] | None, given: bool = False
          ) -> tuple[list[Path], list[int], list[str]]:  # fmt: skip
    """The images under ``root``'s class folders and their labels: label ``i`` for the folder
    ``classes[i]`` (by default the folders in sorted order). ``given``: ``classes`` came from
    the user (``--classes``), so the errors name that option."""
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    names = classes or [p.name for p in found]
    if not names:
        raise DataError(f"image folder {str(root)!r} has no class sub-folders")
    if classes is not None:
        extra = sorted({p.name for p in found} - set(classes))
        missing = [c for c in classes if not (root / c).is_dir()]
        source = "--classes" if given else "the training folder"
        wrong = [f"has classes {extra} that {source} does not have"] if extra else []
        if missing and given:
            wrong.append(f"has no folder for {missing}, which --classes names")
        if wrong:
            raise DataError(f"{str(root)!r} {' and '.join(wrong)} (its class folders: "
                            f"{[p.name for p in found]})")  # fmt: skip
    files, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        images = sorted(p for p in folder.glob("*") if p.suffix.lower() in EXTENSIONS)
        if not images:
            nested = any(p.is_dir() for p in folder.iterdir()) if folder.is_dir() else False
            hint = " (it holds folders: are its classes one level deeper?)" if nested else ""
            raise DataError(f"class folder {str(folder)!r} holds no images{hint}")
        files += images
        labels += [label] * len(images)
    return files, labels, names


def _common_size(files: list[Path], prep: Preprocess) -> tuple[int, int]:
    """The ``(H, W)`` every image has after ``resize`` and ``crop``, read from the headers
    (a crop is the size); raises naming two images that differ."""
    from PIL import Image, UnidentifiedImageError

    if prep.crop:
        return (prep.crop, prep.crop)
    sizes: dict[tuple[int, int], Path] = {}
    for path in files:
        try:
            with Image.open(path) as img:
                w, h = img.size
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot read image {str(path)!r}: {exc}") from None
        if prep.resize:
            s = prep.resize / min(w, h)
            w, h = (prep.resize, round(h * s)) if w <= h else (round(w * s), prep.resize)
        sizes.setdefault((h, w), path)
        if len(sizes) > 1:
            (s0, p0), (s1, p1) = sizes.items()
            raise DataError(
                f"the images have different sizes ({s0[0]}x{s0[1]} in {str(p0)!r}, "
                f"{s1[0]}x{s1[1]} in {str(p1)!r}): give --input-size H[,W], or --resize N "
                "--crop N"
            )
    return next(iter(sizes))


def _dataset_statistics(files: list[Path], prep: Preprocess, workers: int):
    """Per-channel mean and standard deviation of the images as ``prep`` makes them (one pass)."""
    loader = DataLoader(ImageFiles(files, [0] * len(files), prep), batch_size=64,
                        num_workers=workers)  # fmt: skip
    total = total_sq = None
    count = 0
    for x, _ in loader:
        x = x.double()
        s, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(max(v, 1e-6) for v in std.tolist())


def _split(files, labels, test_fraction: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(files), generator=g).tolist()
    cut = max(1, round(len(files) * test_fraction))
    held = set(perm[:cut])
    train = [(f, lab) for i, (f, lab) in enumerate(zip(files, labels)) if i not in held]
    test = [(f, lab) for i, (f, lab) in enumerate(zip(files, labels)) if i in held]
    if not train:
        raise DataError("too few images to split into training and test images")
    return (
        [f for f, _ in train],
        [lab for _, lab in train],
        [f for f, _ in test],
        [lab for _, lab in test],
    )


def default_workers() -> int:
    """Worker processes that read images: one per core, at most 4, none on a single core."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if n < 2 else min(4, n)


def image_folder(
    root: str | Path,
    size: int | None = None,
    *,
    input_size: tuple[int, int] | int | None = None,
    resize: int | None = None,
    crop: int | None = None,
    normalize: str = "none",
    mean=None,
    std=None,
    test_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
    classes: list[str] | None = None,
    grayscale: bool = False,
) -> DataBundle:
    """The images under ``root`` as a bundle of two ``DataLoader``s (see the module docstring).
    ``size`` is ``input_size=(size, size)``. ``classes``: the class folders' names in the order
    of the model's outputs (the labels it was trained with); by default their sorted order, as
    torchvision's ``ImageFolder`` numbers them. ``grayscale``: one input channel (``mean`` and
    ``std`` then one value each)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {str(root)!r} does not exist")
    input_size = input_size if input_size is not None else size
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    for name, v in (("resize", resize), ("crop", crop)):
        if v is not None and v < 1:
            raise DataError(f"--{name} {v} must be a positive number of pixels")
    if input_size is not None and min(input_size) < 1:
        raise DataError(f"--input-size {input_size} must be positive")
    if normalize not in NORMALIZE:
        raise DataError(f"--normalize {normalize!r} is not one of {', '.join(NORMALIZE)}")
    if (mean is None) != (std is None):
        raise DataError("give --mean and --std together")
    channels = 1 if grayscale else 3
    wanted = "one value (--grayscale)" if grayscale else "three values (R,G,B)"
    for name, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) != channels:
            raise DataError(f"--{name} needs {wanted}, got {len(v)}")
    if grayscale and normalize == "imagenet":
        raise DataError("--normalize imagenet is for RGB images: with --grayscale give --mean "
                        "and --std (one value each) or --normalize dataset")  # fmt: skip
    if std is not None and min(std) <= 0:
        raise DataError(f"--std {','.join(map(str, std))}: every value must be positive")
    if mean is not None and normalize != "none":
        raise DataError("give --normalize or --mean/--std, not both")
    if classes is not None:
        classes = [str(c) for c in classes]
        twice = sorted({c for c in classes if classes.count(c) > 1})
        if twice or not classes:
            raise DataError(f"--classes names {twice} more than once" if twice else
                            "--classes is empty")  # fmt: skip
    splits = _splits(root)
    if splits is not None:
        tr_files, tr_labels, names = _scan(splits[0], classes, given=classes is not None)
        te_files, te_labels, _ = _scan(splits[1], names, given=classes is not None)
    else:
        files, labels, names = _scan(root, classes, given=classes is not None)
        tr_files, tr_labels, te_files, te_labels = _split(files, labels, test_fraction, seed)
    prep = Preprocess(resize, crop, tuple(input_size) if input_size else None,
                      grayscale=grayscale)  # fmt: skip
    if prep.input_size is None:
        prep.input_size = _common_size(tr_files + te_files, prep)
    workers = default_workers() if workers is None else workers
    if normalize == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif normalize == "dataset":
        mean, std = _dataset_statistics(tr_files, prep, workers)
    prep = Preprocess(resize, crop, prep.input_size, mean, std, grayscale)
    train = DataLoader(ImageFiles(tr_files, tr_labels, prep), batch_size=batch_size, shuffle=True,
                       num_workers=workers)  # fmt: skip
    test = DataLoader(ImageFiles(te_files, te_labels, prep), batch_size=batch_size,
                      num_workers=workers)  # fmt: skip
    record = {"data": f"folder:{root}", "normalize": normalize if mean is None or normalize !=
              "none" else "mean/std", "classes": names, **prep.describe()}  # fmt: skip
    return DataBundle(f"folder:{root}", train, test, len(names), (channels, *prep.input_size),
                      record)  # fmt: skip
