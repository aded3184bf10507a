"""float32 error of every convolution algorithm against a float64 reference (markdown table).

    python benchmarks/error_table.py

Error = |y - y_ref| / mean |y_ref| (max and mean over outputs), 3x3 kernels, 'same' padding.
Inputs: (a) N(0, 1) data, 64 -> 64 channels, 64x64; (b) a real photo (``skimage.data.astronaut``,
512x512 RGB in [0, 1]) through a 3 -> 64 layer, and (c) the 64 ReLU feature maps of that layer
through a 64 -> 64 layer. Weights N(0, 1 / fan_in). Reference: ``F.conv2d`` in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leanconv.algorithms import conv2d

ALGORITHMS = [
    ("direct (F.conv2d)", "direct", None),
    ("im2col + GEMM", "im2col", None),
    ("FFT (auto tile)", "fft", None),
    ("Winograd F(2x2,3x3)", "winograd", 2),
    ("Winograd F(3x3,3x3)", "winograd", 3),
    ("Winograd F(4x4,3x3)", "winograd", 4),
    ("Winograd F(6x6,3x3)", "winograd", 6),
    ("Winograd F(8x8,3x3)", "winograd", 8),
]


def errors(x: torch.Tensor, w: torch.Tensor) -> dict[str, tuple[float, float]]:
    ref = F.conv2d(x, w, padding=1)
    scale = ref.abs().mean()
    out = {}
    for name, algorithm, tile in ALGORITHMS:
        y = conv2d(x.float(), w.float(), padding=1, algorithm=algorithm, tile=tile).double()
        d = (y - ref).abs() / scale
        out[name] = (d.max().item(), d.mean().item())
    return out


def inputs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)

    def weight(k: int, c: int) -> torch.Tensor:
        return torch.randn(k, c, 3, 3, generator=gen, dtype=torch.float64) / (9 * c) ** 0.5

    random = torch.randn(1, 64, 64, 64, generator=gen, dtype=torch.float64)
    cases = {"N(0,1), 64->64": (random, weight(64, 64))}
    try:
        from skimage import data
    except ImportError:
        return cases
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].double() / 255
    w1 = weight(64, 3)
    cases["photo, 3->64"] = (photo, w1)
    cases["photo features, 64->64"] = (F.relu(F.conv2d(photo, w1, padding=1)), weight(64, 64))
    return cases


def main() -> None:
    torch.set_num_threads(2)
    results = {name: errors(x, w) for name, (x, w) in inputs().items()}
    cols = list(results)
    print("| algorithm | " + " | ".join(f"{c}: max / mean" for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, _, _ in ALGORITHMS:
        cells = [f"{results[c][name][0]:.1e} / {results[c][name][1]:.1e}" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
