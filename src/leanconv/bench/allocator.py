"""Keep freed memory in the process, so that a forward pass stops paying page faults.

With glibc's default settings a CPU forward pass returns much of its memory to the kernel and
takes it back on the next call: blocks above the mmap threshold are ``mmap``-ed and unmapped per
tensor, and the top of the heap is trimmed once more than ``M_TRIM_THRESHOLD`` is free. Every
page taken back is a page fault and a page the kernel zeroes. Measured on this project's 2-core
VM: 23,000 minor faults per call of the CIFAR ResNet-18 at batch 64 and 12,000 per call of its
compressed form, 12 % and 21 % of their time, and the most variable part of it (the cost of a
fault moves with the host's memory pressure). ``mallopt(M_MMAP_THRESHOLD)`` and
``mallopt(M_TRIM_THRESHOLD)`` raised once make freed blocks stay in the heap for the next call:
zero faults per call after the first. This is what the jemalloc/tcmalloc advice of PyTorch's CPU
performance guide achieves, without preloading another allocator.

The cost is memory: the process keeps its peak heap instead of returning it. The setting is
process-wide and cannot be scoped to a block, so the library never applies it on its own: the
``leanconv`` command applies it at start-up (every command measures), as do the benchmarks, and
:func:`retain_freed_memory` is there for programs that serve a model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Thresholds tried in turn: glibc refuses an mmap threshold above its limit (32 MiB on some
#: versions), and any block under the threshold is kept.
_THRESHOLDS = (1 << 30, 32 << 20)

#: The mmap threshold in effect once applied (None: glibc's defaults).
_state: dict[str, int | None] = {"threshold": None}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def retain_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory for reuse (see the module docstring).

    Returns True when the setting is in effect (applied now or before), False where the C library
    has no ``mallopt`` (macOS, musl) or refused it. Safe to call more than once.
    """
    if _state["threshold"] is not None:
        return True
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    for threshold in _THRESHOLDS:
        if libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1:
            break
    else:
        return False
    if libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return False
    _state["threshold"] = threshold
    return True


def describe() -> str:
    """One line for reports: how the allocator was set while measuring."""
    threshold = _state["threshold"]
    if threshold is None:
        return "default"
    return f"glibc, freed memory kept (mmap threshold {threshold >> 20} MiB, no trim)"
