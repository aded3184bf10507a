"""The allocator setting: freed memory stays in the process, so repeated large allocations stop
faulting. Each case runs in a fresh interpreter (the setting is process-wide and cannot be
undone), and counts minor page faults with getrusage."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from leanconv.bench import allocator
if sys.argv[1] == "retain":
    assert allocator.retain_freed_memory() and allocator.retain_freed_memory()  # idempotent
print(allocator.describe())
def step():  # a 100 MB activation, as a batch-64 forward pass allocates and frees
    torch.empty(25 << 20).fill_(1.0)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


def _faults(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    described, faults = out.stdout.strip().splitlines()[-2:]
    return described, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_stops_the_page_faults_of_repeated_allocations():
    described, default = _faults("default")
    assert described == "default"
    # 100 MB is above glibc's largest dynamic mmap threshold (32 MiB): mapped and unmapped per
    # call, so every one of its ~25,600 pages faults again (in 2 MiB pages, ~50, where the
    # kernel backs every mapping with huge pages)
    assert default > (40 if _huge_pages_always() else 10_000)
    described, retained = _faults("retain")
    assert described.startswith("glibc, freed memory kept")
    assert retained < min(100, default / 10)  # the block is reused from the heap
