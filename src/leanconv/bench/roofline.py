"""The machine's peaks, measured once and cached, and the roofline classification of a layer.

Peak compute is the best rate of a large square GEMM (``2 n^3`` FLOPs) over several runs; peak
bandwidth the best rate of a large tensor copy (read + write = ``2 x size`` bytes). A peak is a
capability, so the fastest run is the estimate (load from elsewhere only slows runs down).
A layer of arithmetic intensity ``I`` (FLOPs per byte) can reach at most
``min(peak_flops, I x bandwidth)`` (Williams, Waterman & Patterson 2009); below the ridge
point ``peak_flops / bandwidth`` it is memory-bound.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass

import torch

from .. import cache as cache_store
from .timing import measure

CACHE_FILE = "peak.json"


@dataclass(frozen=True)
class Peak:
    gflops: float  # GFLOP/s of a large GEMM
    gbytes: float  # GB/s of a large copy
    device: str
    dtype: str
    threads: int

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound."""
        return self.gflops / self.gbytes


@dataclass(frozen=True)
class Roofline:
    achieved_gflops: float
    fraction_of_peak: float  # of the compute peak
    attainable_gflops: float  # min(peak, intensity x bandwidth)
    bound: str  # "compute" or "memory"


def _key(device: torch.device, dtype: torch.dtype) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return f"{device.type}|{name}|{dtype}|{torch.get_num_threads()}|{torch.__version__}"


def measure_peak(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    use_cache: bool = True,
    n: int | None = None,
) -> Peak:
    """GEMM and copy peaks of ``device`` at the current thread count (cached on disk)."""
    device = torch.device(device)
    key = _key(device, dtype)
    cache = cache_store.load(CACHE_FILE) if use_cache else {}
    if key in cache:
        return Peak(**cache[key])
    n = n or (4096 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t_gemm = measure(lambda: torch.mm(a, b), warmup=2, repeats=10, device=device)
    src = torch.empty(64 * 2**20 // a.element_size(), device=device, dtype=dtype).normal_()
    dst = torch.empty_like(src)
    t_copy = measure(lambda: dst.copy_(src), warmup=2, repeats=10, device=device)
    peak = Peak(
        gflops=2 * n**3 / t_gemm.best / 1e9,
        gbytes=2 * src.numel() * src.element_size() / t_copy.best / 1e9,
        device=str(device),
        dtype=str(dtype),
        threads=torch.get_num_threads(),
    )
    if use_cache:
        cache[key] = asdict(peak)
        cache_store.save(CACHE_FILE, cache)
    return peak


def roofline(flops: int, bytes_moved: int, seconds: float, peak: Peak) -> Roofline:
    """Where one measured layer sits against the machine's roofs."""
    achieved = flops / seconds / 1e9 if seconds > 0 else 0.0
    intensity = flops / bytes_moved if bytes_moved else float("inf")
    attainable = min(peak.gflops, intensity * peak.gbytes)
    bound = "compute" if intensity >= peak.ridge else "memory"
    return Roofline(achieved, achieved / peak.gflops, attainable, bound)
