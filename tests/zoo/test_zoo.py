"""Reference architectures against published figures and hand computations from the papers' tables.

Big models are built on the meta device (no memory, no arithmetic) and counted there.
"""

from __future__ import annotations

import pytest
import torch

import leanconv
from leanconv import zoo
from leanconv.errors import ModelLoadError

NEW = [
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v2_cifar",
    "shufflenet_v1",
    "shufflenet_v2",
    "inception_v3",
    "se_resnet50",
]


def _count(name: str, **kw):
    with torch.device("meta"):
        model = zoo.create(name, **kw)
    return leanconv.count(model, zoo.default_input(name))


# name, kwargs, MACs, relative tolerance, params, relative tolerance; sources in the comments
PUBLISHED = [
    # Howard et al. 2017, table 1 (569 M mult-adds); params: Keras MobileNet (trainable) 4,231,976
    ("mobilenet_v1", {}, 569e6, 1e-3, 4_231_976, 0),
    # Sandler et al. 2018 (300 M); torchvision mobilenet_v2: 0.30 GFLOPS, 3,504,872 params
    ("mobilenet_v2", {}, 300.8e6, 1e-3, 3_504_872, 0),
    # Zhang et al. 2018, table 1 "complexity" row, g = 1, 2, 3, 4, 8: 143/140/137/133/137 M
    ("shufflenet_v1", {"groups": 1}, 143e6, 0.01, 1.53e6, 0.01),
    ("shufflenet_v1", {"groups": 2}, 140e6, 0.01, 1.73e6, 0.01),
    ("shufflenet_v1", {"groups": 3}, 137e6, 0.01, 1.87e6, 0.01),
    ("shufflenet_v1", {"groups": 4}, 133e6, 0.011, 1.97e6, 0.01),
    ("shufflenet_v1", {"groups": 8}, 137e6, 0.011, 2.43e6, 0.01),
    # Ma et al. 2018, table 5 (146 M, 41 M, 299 M, 591 M); params: torchvision shufflenet_v2_x*
    ("shufflenet_v2", {}, 146e6, 0.01, 2_278_604, 0),
    ("shufflenet_v2", {"width": 0.5}, 41e6, 0.015, 1_366_792, 0),
    ("shufflenet_v2", {"width": 1.5}, 299e6, 0.015, 3_503_624, 0),
    ("shufflenet_v2", {"width": 2.0}, 591e6, 0.015, 7_393_996, 0),
    # torchvision inception_v3: 5.71 GFLOPS, 27,161,264 params with the auxiliary head, whose
    # 3,326,696 are 768*128 + 2*128 (1x1, BN) + 128*768*25 + 2*768 (5x5, BN) + 768*1000 + 1000 (fc)
    ("inception_v3", {}, 5.71e9, 1e-3, 27_161_264 - 3_326_696, 0),
    # Hu et al. 2018, table 2: SE-ResNet-50 3.87 GFLOPs (ours 3.860 G convs + FC), 28.1 M params
    ("se_resnet50", {}, 3.87e9, 3e-3, 28.1e6, 2e-3),
    # He et al. 2016 / torchvision: 25,557,032 params (the existing models, for reference)
    ("resnet50", {}, 4.089e9, 1e-3, 25_557_032, 0),
]


@pytest.mark.parametrize(("name", "kw", "macs", "macs_tol", "params", "params_tol"), PUBLISHED)
def test_published_figures(name, kw, macs, macs_tol, params, params_tol):
    total = _count(name, **kw).total
    assert total.macs == pytest.approx(macs, rel=macs_tol)
    assert total.params == pytest.approx(params, rel=params_tol, abs=0)


def test_mobilenet_v1_by_hand_from_table_1():
    """3x3/2 stem, then per layer H'W' (9 C + C O), then the classifier."""
    layers = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)]
    layers += [(256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    size = 112
    macs = size * size * 3 * 32 * 9
    for c, o, s in layers:
        size //= s
        macs += size * size * (9 * c + c * o)
    macs += 1024 * 1000
    assert _count("mobilenet_v1").total.macs == macs == 568_740_352


def _shufflenet_v1_by_hand(g: int) -> int:
    """Table 1 of Zhang et al.: stem 3x3/2 to 24 at 112, max pool to 56, stages at 28, 14, 7."""
    widths = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}[g]
    macs = 112 * 112 * 3 * 24 * 9
    c, size = 24, 56
    for stage, repeats in enumerate((4, 8, 4)):
        out = widths * 2**stage
        mid = out // 4
        for j in range(repeats):
            g1 = 1 if (stage == 0 and j == 0) else g
            branch = out - c if j == 0 else out
            hw_in = size * size
            if j == 0:
                size //= 2
            hw = size * size
            macs += hw_in * c * mid // g1 + hw * 9 * mid + hw * mid * branch // g
            c = out
    return macs + c * 1000


@pytest.mark.parametrize("g", [1, 2, 3, 4, 8])
def test_shufflenet_v1_by_hand(g):
    assert _count("shufflenet_v1", groups=g).total.macs == _shufflenet_v1_by_hand(g)


def test_se_resnet50_adds_two_fc_per_block():
    """SE adds 2 C^2 / 16 MACs and 2 C^2 / 16 + C / 16 + C params per bottleneck of C outputs."""
    blocks = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    se, base = _count("se_resnet50").total, _count("resnet50_v1").total
    assert se.macs - base.macs == sum(2 * c * c // 16 for c in blocks)
    assert se.params - base.params == sum(2 * c * c // 16 + c // 16 + c for c in blocks)
    # one multiplication per gated element brings the paper's 3.87 G: 3.860 + 0.0055
    per_stage = [3 * 256 * 56**2, 4 * 512 * 28**2, 6 * 1024 * 14**2, 3 * 2048 * 7**2]
    assert round((se.macs + sum(per_stage)) / 1e9, 2) == 3.87


def test_inception_v3_table_3_factorisations():
    """Szegedy et al. 2016, table 3: the cost of the factorisations, by hand.

    ``seven="full"`` puts a dense 7x7 where each 1x7 + 7x1 pair of the four 17x17 modules is;
    ``stem="7x7"`` one 7x7/2 to 64 (299 -> 147) in place of the three stem 3x3 convolutions."""
    fact = _count("inception_v3").total.macs
    full = _count("inception_v3", seven="full").total.macs
    stacked = _count("inception_v3", seven="stacked").total.macs
    stem7 = _count("inception_v3", stem="7x7").total.macs
    hw = 17 * 17
    saved = stacked_extra = 0
    for c7 in (128, 160, 160, 192):
        # (c_in, mid, c_out) of the three pairs: branch 7x7, then the two pairs of the double branch
        for a, m, b in ((c7, c7, 192), (c7, c7, c7), (c7, c7, 192)):
            saved += hw * (49 * a * b - 7 * a * m - 7 * m * b)
            stacked_extra += hw * (9 * (a * m + m * m + m * b) - 7 * a * m - 7 * m * b)
    assert full - fact == saved
    assert stacked - fact == stacked_extra
    stem3 = 149 * 149 * 3 * 32 * 9 + 147 * 147 * (32 * 32 + 32 * 64) * 9
    assert fact - stem7 == stem3 - 147 * 147 * 3 * 64 * 49
    assert (round(fact / 1e9, 2), round(full / 1e9, 2), round(stacked / 1e9, 2)) == (
        5.71,
        9.33,
        6.91,
    )


@pytest.mark.parametrize("name", NEW)
def test_builds_with_num_classes_and_width(name):
    base = _count(name)
    small = _count(name, num_classes=7, width=0.5)
    assert not base.uncounted and not small.uncounted
    assert small.rows[-1].output_shape == (1, 7)
    assert small.total.macs < base.total.macs
    assert small.total.params < base.total.params


@pytest.mark.parametrize(
    ("name", "kw", "shape"),
    [
        ("mobilenet_v2_cifar", {}, (2, 3, 32, 32)),
        ("mobilenet_v1", {"width": 0.25, "num_classes": 5}, (2, 3, 64, 64)),
        ("shufflenet_v1", {"width": 0.25, "num_classes": 5}, (2, 3, 64, 64)),
        ("shufflenet_v2", {"width": 0.5, "num_classes": 5}, (1, 3, 64, 64)),
        ("inception_v3", {"width": 0.1, "num_classes": 5}, (1, 3, 75, 75)),
        ("se_resnet50", {"width": 0.125, "num_classes": 5}, (1, 3, 64, 64)),
    ],
)
def test_real_forward_and_count_agree(name, kw, shape):
    torch.manual_seed(0)
    model = zoo.create(name, **kw).eval()
    with torch.no_grad():
        y = model(torch.randn(shape))
    n_classes = kw.get("num_classes", 10)
    assert y.shape == (shape[0], n_classes) and torch.isfinite(y).all()
    assert leanconv.count(model, shape).total.params == sum(p.numel() for p in model.parameters())


def test_mobilenet_v2_cifar_keeps_4x4_before_the_pool():
    with torch.device("meta"):
        model = zoo.create("mobilenet_v2_cifar")
    report = leanconv.count(model, (1, 3, 32, 32))
    last_conv = [r for r in report.rows if r.kind == "conv2d"][-1]
    assert last_conv.output_shape == (1, 1280, 4, 4)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="groups=5"):
        zoo.create("shufflenet_v1", groups=5)
    with pytest.raises(ValueError, match="seven='9x9'"):
        zoo.create("inception_v3", seven="9x9")
    with pytest.raises(ValueError, match="width=0"):
        zoo.create("mobilenet_v2", width=0)
    with pytest.raises(ValueError, match="num_classes=0"):
        zoo.create("shufflenet_v2", num_classes=0)


def test_registry_lists_the_new_models():
    assert set(NEW) <= set(zoo.names())
    assert zoo.default_input("inception_v3") == (1, 3, 299, 299)
    assert zoo.default_input("mobilenet_v2_cifar") == (1, 3, 32, 32)
    with pytest.raises(ModelLoadError, match="shufflenet_v2"):
        zoo.create("shufflenet_v3")
