import json
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from leanconv.bench.layers import profile
from leanconv.bench.roofline import Peak, measure_peak, roofline
from leanconv.cli.main import app

PEAK = Peak(gflops=100.0, gbytes=10.0, device="cpu", dtype="torch.float32", threads=1)


def test_roofline_classification():
    assert PEAK.ridge == 10.0
    compute = roofline(flops=2_000_000, bytes_moved=100_000, seconds=1e-4, peak=PEAK)
    assert compute.bound == "compute" and compute.achieved_gflops == pytest.approx(20.0)
    assert compute.fraction_of_peak == pytest.approx(0.2)
    memory = roofline(flops=1_000, bytes_moved=1_000, seconds=1e-6, peak=PEAK)
    assert memory.bound == "memory" and memory.attainable_gflops == pytest.approx(10.0)


def test_measure_peak_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path))
    first = measure_peak("cpu", n=128)
    assert first.gflops > 0 and first.gbytes > 0
    assert (tmp_path / "peak.json").exists()
    assert measure_peak("cpu", n=128) == first  # read back, not re-measured


def test_profile_rows_match_cost_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Identity(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4))  # fmt: skip
    report = profile(model, torch.randn(2, 3, 8, 8), "tiny", repeats=2, peak=PEAK)
    names = [layer.name for layer in report.layers]
    assert names == ["0", "1", "4"]  # Identity and Flatten (a view) run no op: not timed
    conv = report.layers[0]
    assert conv.macs == 2 * 8 * 8 * 8 * 27 and conv.kind == "conv2d"
    assert conv.ms > 0 and conv.roof is not None
    assert sum(report.share_by_kind().values()) == pytest.approx(1.0)
    assert report.total_ms > 0


def test_profile_cli_json(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(
        app,
        [
            "profile",
            "vgg16_cifar",
            "--input",
            "1,3,32,32",
            "--repeats",
            "1",
            "--json",
            "--threads",
            "1",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["threads"] == 1 and len(data["layers"]) > 13
    if sys.platform.startswith("linux"):  # the command keeps freed memory (bench/allocator.py)
        assert data["allocator"].startswith("glibc, freed memory kept")
    bad = CliRunner().invoke(app, ["profile", "vgg16_cifar", "--repeats", "0"])
    assert bad.exit_code == 2 and "--repeats" in bad.output
