import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from leanconv.data import Augment, cifar, digits, image_folder, load_data
from leanconv.data.bundle import DataError


def test_digits_split_is_fixed_stratified_and_standardised():
    a, b = digits(), digits()
    assert len(a.train) + len(a.test) == 1797
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    counts = torch.bincount(a.test.tensors[1], minlength=10)
    assert counts.min() >= 40 and counts.max() <= 48  # ~25% of each class (174..183 images)
    x = a.train.tensors[0]
    assert x.shape[1:] == (3, 32, 32)
    assert x.mean().abs() < 1e-5 and (x.std() - 1).abs() < 1e-2


def _png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 12), colour).save(path)


def test_image_folder_reads_classes_and_splits(tmp_path):
    for i in range(5):
        _png(tmp_path / "cat" / f"{i}.png", (255, 0, 0))
        _png(tmp_path / "dog" / f"{i}.png", (0, 0, 255))
    bundle = image_folder(tmp_path, size=8, workers=0)
    assert bundle.num_classes == 2
    assert len(bundle.train.dataset) + len(bundle.test.dataset) == 10
    x, y = (torch.cat(t) for t in zip(*bundle.train, strict=True))
    assert x.shape[1:] == (3, 8, 8)
    red = x[y == 0][:, 0].mean() > x[y == 1][:, 0].mean()  # cat images are red
    assert red


def test_image_folder_with_train_and_test(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", (i * 40, 0, 0))
    bundle = load_data(f"folder:{tmp_path}", size=6)
    assert (len(bundle.train.dataset), len(bundle.test.dataset)) == (6, 4)


@pytest.mark.parametrize("held", ["val", "validation"])
def test_image_folder_with_train_and_val(tmp_path, held):
    """torchvision's ImageNet layout: the held-out split named val/ (or validation/)."""
    for split, n in (("train", 3), (held, 1)):
        for cls in ("a", "b", "c"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", (i * 40, 0, 0))
    bundle = load_data(f"folder:{tmp_path}", size=6)
    assert (len(bundle.train.dataset), len(bundle.test.dataset)) == (9, 3)
    assert bundle.preprocessing["classes"] == ["a", "b", "c"]


def test_image_folder_numbers_classes_in_the_order_given(tmp_path):
    """A model trained with its own label order (a hand-written Dataset): --classes gives it,
    in both splits; by default the sorted order, as torchvision's ImageFolder."""
    colours = {"disc": (255, 0, 0), "box": (0, 255, 0), "kite": (0, 0, 255)}
    for split in ("train", "test"):
        for cls, colour in colours.items():
            for i in range(2):
                _png(tmp_path / split / cls / f"{i}.png", colour)
    default = image_folder(tmp_path, workers=0)
    assert default.preprocessing["classes"] == ["box", "disc", "kite"]
    bundle = image_folder(tmp_path, workers=0, classes=["disc", "box", "kite"])
    assert bundle.preprocessing["classes"] == ["disc", "box", "kite"]
    for loader in (bundle.train, bundle.test):
        x, y = (torch.cat(t) for t in zip(*loader, strict=True))
        for label, colour in enumerate(colours.values()):  # label i: the i-th class given
            channel = colour.index(255)
            assert (x[y == label][:, channel] == 1).all()
    with pytest.raises(DataError, match=r"has no folder for \['cow'\], which --classes names"):
        image_folder(tmp_path, workers=0, classes=["disc", "box", "kite", "cow"])
    with pytest.raises(DataError, match=r"has classes \['kite'\] that --classes does not have"):
        image_folder(tmp_path, workers=0, classes=["disc", "box"])
    with pytest.raises(DataError, match=r"--classes names \['box'\] more than once"):
        image_folder(tmp_path, workers=0, classes=["box", "disc", "box", "kite"])


def test_image_folder_train_without_a_held_out_split_says_so(tmp_path):
    for split in ("train", "holdout"):
        _png(tmp_path / split / "a" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"no held-out split.*found holdout/"):
        image_folder(tmp_path)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images$"):
        image_folder(tmp_path / "empty")
    _png(tmp_path / "deep" / "all" / "cls" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="holds no images .*one level deeper"):
        image_folder(tmp_path / "deep")
    _png(tmp_path / "bad" / "cls" / "ok.png", (1, 2, 3))
    (tmp_path / "bad" / "cls" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        image_folder(tmp_path / "bad")


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist()}  # fmt: skip
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    return batch


def test_cifar_batches(tmp_path):
    first = _cifar_batch(tmp_path / "data_batch_1", 7, 0)
    _cifar_batch(tmp_path / "data_batch_2", 5, 1)
    _cifar_batch(tmp_path / "test_batch", 4, 2)
    bundle = cifar(tmp_path)
    assert (len(bundle.train), len(bundle.test)) == (12, 4)
    assert bundle.train.tensors[1][:7].tolist() == first[b"labels"]
    raw = torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)).float()
    x0 = bundle.train.tensors[0][0]
    # standardisation is affine per channel: correlation with the raw pixels is 1
    corr = torch.corrcoef(torch.stack([raw[0].flatten(), x0[0].flatten()]))[0, 1]
    assert corr > 0.9999


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_refuses_a_malicious_pickle(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    _cifar_batch(tmp_path / "test_batch", 2, 0)
    with pytest.raises(DataError, match="refusing to unpickle"):
        cifar(tmp_path)


def test_augment_is_deterministic_and_keeps_shape():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    a = Augment(pad=2, flip=True)(x, torch.Generator().manual_seed(1))
    b = Augment(pad=2, flip=True)(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert torch.equal(Augment(pad=0)(x), x)


def test_bad_data_spec():
    with pytest.raises(DataError, match="digits, folder:PATH"):
        load_data("imagenet")


def _noise_png(path, w, h, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _all(loader):
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_image_folder_prepares_images_only_as_asked(tmp_path):
    # reference: the same steps written out with Pillow and NumPy (torchvision's Resize(N) on a
    # PIL image, CenterCrop(N), ToTensor, Normalize)
    raw = {}
    for i in range(6):
        path = tmp_path / "train" / f"c{i % 2}" / f"{i}.png"
        raw[path] = _noise_png(path, 40, 30, i)
    for i in range(2):
        path = tmp_path / "test" / f"c{i}" / f"t{i}.png"
        raw[path] = _noise_png(path, 40, 30, 10 + i)
    own = image_folder(tmp_path, workers=0)  # nothing asked: the images as they are, 0..1
    x, y = _all(own.test)
    assert own.input_shape == (3, 30, 40) and own.preprocessing["normalize"] == "none"
    want = [torch.from_numpy(raw[p]).permute(2, 0, 1).float() / 255 for p in own.test.dataset.files]
    torch.testing.assert_close(x, torch.stack(want), rtol=0, atol=0)
    assert y.tolist() == [0, 1]

    bundle = image_folder(tmp_path, resize=24, crop=20, normalize="imagenet", workers=0)
    x, _ = _all(bundle.test)
    assert bundle.input_shape == (3, 20, 20)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for got, path in zip(x, bundle.test.dataset.files, strict=True):
        img = Image.fromarray(raw[path]).resize((32, 24), Image.BILINEAR)  # shorter side 24
        img = img.crop((6, 2, 26, 22))  # centre 20x20 of 32x24
        ref = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(got, (ref - mean) / std, rtol=0, atol=1e-6)

    stats = image_folder(tmp_path, normalize="dataset", workers=0)
    x, _ = _all(stats.train)
    every = torch.stack([torch.from_numpy(raw[p]).permute(2, 0, 1).double() / 255
                         for p in stats.train.dataset.files])  # fmt: skip
    torch.testing.assert_close(torch.tensor(stats.preprocessing["mean"]).double(),
                               every.mean((0, 2, 3)), rtol=0, atol=1e-6)  # fmt: skip
    assert x.double().mean((0, 2, 3)).abs().max() < 1e-5  # standardised by its own statistics

    given = image_folder(tmp_path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), workers=0)
    x, _ = _all(given.test)
    ref = torch.stack([torch.from_numpy(raw[p]).permute(2, 0, 1).float() / 255
                       for p in given.test.dataset.files])  # fmt: skip
    scale = torch.tensor([0.25, 0.5, 1.0])[:, None, None]
    torch.testing.assert_close(x, (ref - 0.5) / scale, rtol=0, atol=1e-6)
    assert given.preprocessing["normalize"] == "mean/std"


def test_image_folder_reads_grayscale(tmp_path):
    # reference: ITU-R 601 luma of the stored RGB pixels (what Pillow's "L" mode and
    # torchvision's Grayscale compute, up to Pillow's integer rounding), and an 8-bit gray PNG
    raw = {}
    for i in range(4):
        path = tmp_path / "train" / f"c{i % 2}" / f"{i}.png"
        raw[path] = _noise_png(path, 20, 16, i)
    gray = np.random.default_rng(9).integers(0, 256, (16, 20), dtype=np.uint8)
    (tmp_path / "test" / "c0").mkdir(parents=True)
    Image.fromarray(gray, mode="L").save(tmp_path / "test" / "c0" / "g.png")
    raw[tmp_path / "test" / "c1" / "rgb.png"] = _noise_png(tmp_path / "test" / "c1" / "rgb.png",
                                                           20, 16, 7)  # fmt: skip

    def luma(pixels):
        if pixels.ndim == 2:
            return torch.from_numpy(pixels).double()[None] / 255
        rgb = torch.from_numpy(pixels).double().permute(2, 0, 1)
        return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None] / 255

    raw[tmp_path / "test" / "c0" / "g.png"] = gray
    bundle = image_folder(tmp_path, grayscale=True, mean=(0.5,), std=(0.25,), workers=0)
    assert bundle.input_shape == (1, 16, 20) and bundle.preprocessing["grayscale"] is True
    for loader in (bundle.train, bundle.test):
        x = torch.stack([image for image, _ in loader.dataset])  # in file order (no shuffling)
        assert x.shape[1:] == (1, 16, 20)
        want = torch.stack([(luma(raw[p]) - 0.5) / 0.25 for p in loader.dataset.files])
        torch.testing.assert_close(x.double(), want, rtol=0, atol=1.01 / 255 / 0.25)

    stats = image_folder(tmp_path, grayscale=True, normalize="dataset", workers=0)
    assert len(stats.preprocessing["mean"]) == 1 and len(stats.preprocessing["std"]) == 1
    assert image_folder(tmp_path, workers=0).input_shape == (3, 16, 20)  # RGB unless asked
    for kwargs, words in (
        ({"mean": (0.5,) * 3, "std": (1.0,) * 3}, "one value"),
        ({"normalize": "imagenet"}, "imagenet is for RGB images"),
    ):
        with pytest.raises(DataError, match=words):
            image_folder(tmp_path, grayscale=True, workers=0, **kwargs)


def test_image_folder_refuses_mixed_sizes_and_bad_settings(tmp_path):
    _noise_png(tmp_path / "a" / "1.png", 40, 30, 0)
    _noise_png(tmp_path / "a" / "2.png", 40, 30, 1)
    _noise_png(tmp_path / "b" / "3.png", 32, 32, 2)
    _noise_png(tmp_path / "b" / "4.png", 40, 30, 3)
    with pytest.raises(DataError, match="different sizes .*--input-size") as err:
        image_folder(tmp_path, workers=0)
    assert "30x40" in str(err.value) and "32x32" in str(err.value)
    assert image_folder(tmp_path, input_size=(16, 20), workers=0).input_shape == (3, 16, 20)
    assert image_folder(tmp_path, resize=16, crop=16, workers=0).input_shape == (3, 16, 16)
    for kwargs, words in (
        ({"normalize": "imagnet"}, "--normalize 'imagnet'"),
        ({"mean": (0.5, 0.5, 0.5)}, "--mean and --std together"),
        ({"mean": (0.5,) * 3, "std": (1.0, 0.0, 1.0)}, "must be positive"),
        ({"mean": (0.5,) * 2, "std": (1.0,) * 2}, "three values"),
        ({"crop": 0}, "--crop 0"),
        ({"normalize": "imagenet", "mean": (0.5,) * 3, "std": (1.0,) * 3}, "not both"),
    ):
        with pytest.raises(DataError, match=words):
            image_folder(tmp_path, input_size=16, workers=0, **kwargs)
