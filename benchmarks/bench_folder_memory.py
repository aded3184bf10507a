"""Peak memory of reading an image folder through ``--data folder:DIR``, against its size.

Writes ``N`` random 64x64 RGB PNGs per run into a temporary folder (two classes, train/ and
test/), then, in a fresh process each, loads the folder with
:func:`leanconv.data.folders.image_folder` and reads every batch once (as one fine-tuning epoch
does), and prints the peak resident memory of that process. Images are read lazily, so the peak
should not grow with ``N``; the raw pixels of the largest run are printed beside it for scale.

    .venv/bin/python benchmarks/bench_folder_memory.py --images 500 4000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys
from leanconv.data.folders import image_folder
bundle = image_folder(sys.argv[1], normalize="imagenet")
n = 0
for loader in (bundle.train, bundle.test):
    for x, _ in loader:
        n += len(x)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(n, peak, kids)
"""


def write_images(root: Path, n: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        split = "test" if i % 5 == 0 else "train"
        folder = root / split / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[500, 4000])
    args = parser.parse_args()
    print(f"{'images':>8} {'read':>8} {'peak RSS main (MiB)':>20} {'peak RSS worker (MiB)':>22} "
          f"{'raw pixels (MiB)':>17}")  # fmt: skip
    for n in args.images:
        with tempfile.TemporaryDirectory() as tmp:
            write_images(Path(tmp), n)
            out = subprocess.run([sys.executable, "-c", CHILD, tmp], capture_output=True,
                                 text=True, check=True).stdout.split()  # fmt: skip
            read, peak, kids = int(out[0]), int(out[1]) / 1024, int(out[2]) / 1024
            raw = n * 64 * 64 * 3 * 4 / 2**20
            print(f"{n:>8} {read:>8} {peak:>20.1f} {kids:>22.1f} {raw:>17.1f}")
    print(f"(ru_maxrss of the reading process and of its largest worker; {resource.getpagesize()}"
          "-byte pages; raw pixels: the images as float32 tensors, what an in-memory loader "
          "would hold)")  # fmt: skip


if __name__ == "__main__":
    main()
