"""The compress pipeline end to end on a tiny model: artefacts, report, resume, refusals."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from leanconv.cli.main import app
from leanconv.compress import serialize
from leanconv.compress.finetune import FinetuneConfig
from leanconv.compress.pipeline import CompressConfig, compress
from leanconv.compress.planning import Speedup
from leanconv.compress.verify import decompose_model
from leanconv.errors import LeanconvError, OutputExistsError

from .test_finetune import tiny_data

FACTORY = """
import torch.nn as nn

def make(num_classes=3):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return path


def _model(factory):
    from leanconv.loading import load_model

    torch.manual_seed(0)
    return load_model(f"{factory}:make").module


def _config(epochs=1):
    # min_metric=0: the tiny model is untrained (near chance), which is the point of no test here
    return CompressConfig(target=Speedup(1.5), ratios=(0.15, 0.4), calibration=32, repeats=2,
                          plan_batch=8, batch_sizes=(1, 8), min_metric=0,
                          finetune=FinetuneConfig(epochs=epochs, batch_size=16, progress=False))  # fmt: skip


def test_compress_writes_every_artefact(tmp_path, factory):
    data = tiny_data(n=128)
    out = tmp_path / "out"
    result = compress(_model(factory), data, _config(), out, {"factory": f"{factory}:make"},
                      log=None)  # fmt: skip
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json", "candidates.png", "layer_latency.png", "ranks.png",
            "model.onnx", "model"} <= names  # fmt: skip
    assert not (tmp_path / "out.partial").exists()
    report = json.loads((out / "report.json").read_text())
    for side in ("before", "after"):
        assert {"accuracy", "params", "macs", "latency_ms"} <= set(report[side])
        assert set(report[side]["latency_ms"]) == {"1", "8"}
        # measured in both memory layouts; the reported latency is the faster one
        by = report[side]["latency_by_format"]
        assert set(by) == {"contiguous", "channels_last"}
        for b in ("1", "8"):
            assert report[side]["latency_ms"][b] == min(by[f][b] for f in by)
    assert report["predicted_speedup"] > 0 and report["speedup"] > 0
    md = (out / "report.md").read_text()
    # the tables name the metric (never a layer's name)
    assert "| test accuracy (%) |" in md and "| epoch | loss | test accuracy (%) | img/s |" in md
    assert report["plan"]["layers"]
    # the original in the same deployment form, measured in the same harness
    assert set(report["baseline"]["latency_ms"]) == {"1", "8"}
    for b in ("1", "8"):
        ratio = report["baseline"]["latency_ms"][b] / report["after"]["latency_ms"][b]
        assert report["speedup_over_baseline"][b] == pytest.approx(ratio)
    assert report["fused_activations"] == ["2", "5", "8"]  # every ReLU follows a convolution
    assert report["measured_with"]["threads"] == torch.get_num_threads()
    assert report["measured_with"]["allocator"]  # "default" or the retained-memory setting
    assert result.onnx_max_error < 1e-3
    back = serialize.load(out / "model", trust_code=True)
    x = data.test.tensors[0][:4]
    with torch.no_grad():
        assert back(x).shape == (4, 3)
    # the batch norms were folded into the convolutions: none is left in the saved model; it
    # loads in its deployment form (ReLUs fused, convolutions packed) unless asked otherwise
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in back.modules())
    assert json.loads((out / "model" / "model.json").read_text())["fused"] is True
    assert not any(type(m) in (torch.nn.ReLU, torch.nn.Conv2d) for m in back.modules())
    plain = serialize.load(out / "model", algorithms=False, trust_code=True)
    assert sum(type(m) is torch.nn.ReLU for m in plain.modules()) == 3
    with torch.no_grad():
        torch.testing.assert_close(back(x), plain(x), rtol=1e-4, atol=1e-4)
    # without trust_code the recorded factory is not imported: the saved program serves
    assert (out / "model" / "model.pt2").is_file()
    program = serialize.load(out / "model")
    with torch.no_grad():
        torch.testing.assert_close(program(x), plain(x), rtol=1e-4, atol=1e-4)
    assert program.expected_input["shape"] == [1, 8, 8]
    with pytest.raises(OutputExistsError):
        compress(_model(factory), data, _config(), out, {"factory": f"{factory}:make"}, log=None)


def test_interrupted_run_resumes(tmp_path, factory):
    data = tiny_data(n=128)
    out = tmp_path / "out"

    class Stop(Exception):
        pass

    def stop_after_first_epoch(msg):
        if "epoch 1/" in msg:
            raise Stop

    with pytest.raises(Stop):
        compress(_model(factory), data, _config(epochs=2), out, {"factory": f"{factory}:make"},
                 log=stop_after_first_epoch)  # fmt: skip
    staging = tmp_path / "out.partial"
    assert not out.exists() and (staging / "plan.json").exists()
    assert (staging / "checkpoint.pt").exists()
    planned = json.loads((staging / "plan.json").read_text())["layers"]
    result = compress(_model(factory), data, _config(epochs=2), out,
                      {"factory": f"{factory}:make"}, resume=True, log=None)  # fmt: skip
    assert out.exists() and not staging.exists()
    assert result.finetune_history[0]["epoch"] == 1 and len(result.finetune_history) == 2
    assert json.loads((out / "report.json").read_text())["plan"]["layers"] == planned


def test_cli_refusals(tmp_path, factory):
    runner = CliRunner()
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    r = runner.invoke(app, ["compress", f"{factory}:make", "--data", f"folder:{empty}",
                            "--out", str(tmp_path / "o"), "--train-first"])  # fmt: skip
    assert r.exit_code == 2 and "holds no images" in r.output
    pickled = tmp_path / "m.pt"
    torch.save(torch.nn.Conv2d(1, 1, 1), pickled)
    r = runner.invoke(app, ["compress", str(pickled), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--trust-pickle" in r.output
    r = runner.invoke(app, ["compress", "resnet18_cifar", "--out", str(tmp_path / "o"),
                            "--weights", str(pickled)])  # fmt: skip
    assert r.exit_code == 2 and "state_dict()" in r.output and "weights_only" in r.output
    bad = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad))
    r = runner.invoke(app, ["compress", "resnet18_cifar", "--out", str(tmp_path / "o"),
                            "--weights", str(bad)])  # fmt: skip
    assert r.exit_code == 2 and "do not fit" in r.output
    existing = tmp_path / "exists"
    existing.mkdir()
    r = runner.invoke(app, ["compress", f"{factory}:make", "--out", str(existing),
                            "--train-first"])  # fmt: skip
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["compress", f"{factory}:make", "--out", str(tmp_path / "o"),
                            "--speedup", "2", "--macs-ratio", "0.5"])  # fmt: skip
    assert r.exit_code == 2 and "not both" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["compress", f"{factory}:make", "--out", str(tmp_path / "o"),
                            "--patience", "2"])  # fmt: skip
    assert r.exit_code == 2 and "validation split" in r.output


def test_saved_layout_is_restored(tmp_path, factory):
    model = _model(factory).eval()
    path = serialize.save(model, tmp_path / "m", {"factory": f"{factory}:make"},
                          memory_format="channels_last")  # fmt: skip
    back = serialize.load(path, trust_code=True)
    assert back[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=1e-5, atol=1e-5)
    meta = json.loads((path / "model.json").read_text())
    meta["memory_format"] = "diagonal"
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(LeanconvError, match="unknown memory format"):
        serialize.load(path, trust_code=True)


def test_load_with_the_factory_and_the_expected_input(tmp_path, factory):
    # a model compressed from Python records no factory: load needs the architecture given
    model = _model(factory).eval()
    decomposed, _ = decompose_model(model, {"3": ("spatial_svd", 4)}, torch.randn(8, 1, 8, 8))
    described = {"shape": [1, 8, 8], "dtype": "float32", "normalize": "imagenet"}
    path = serialize.save(decomposed, tmp_path / "m", {}, {"3": decomposed.get_submodule("3")},
                          extra={"input": described})  # fmt: skip
    with pytest.raises(LeanconvError, match="factory=build"):
        serialize.load(path)
    for given in (lambda: _model(factory), _model(factory)):  # a function or the module itself
        back = serialize.load(path, factory=given)
        assert back.expected_input == described
        x = torch.randn(3, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(back(x), decomposed(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(LeanconvError, match="not an nn.Module"):
        serialize.load(path, factory=lambda: "a string")


def test_method_aliases_and_unknown_names():
    from leanconv.compress.replace import decompose_layer

    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    assert decompose_layer(conv, "svd", 2).method == "spatial_svd"
    assert decompose_layer(conv, "tucker", (2, 2)).method == "tucker2"
    with pytest.raises(LeanconvError, match="spatial_svd") as err:
        decompose_layer(conv, "nosuch", 2, name="features.0")
    assert "features.0" in str(err.value) and "svd = spatial_svd" in str(err.value)
    with pytest.raises(ValueError, match="--methods: unknown decomposition method 'spatal_svd'"):
        CompressConfig(methods=("tucker2", "spatal_svd"))
    assert CompressConfig(methods=("svd",)).methods == ("spatial_svd",)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--speedup", "0"], "--speedup 0"),
        (["--speedup=-1"], "--speedup -1"),
        (["--macs-ratio", "0"], "--macs-ratio 0"),
        (["--macs-ratio", "2"], "--macs-ratio 2"),
        (["--batch", "0"], "--batch 0"),
        (["--methods", "tucker2,nosuch"], "unknown decomposition method 'nosuch'"),
        (["--algorithms", "winograd9"], "--algorithms: unknown winograd9"),
        (["--methods", "none", "--algorithms", "none"], "nothing to plan"),
    ],
)
def test_cli_arguments_are_checked_before_any_work(tmp_path, factory, args, words):
    import time

    t0 = time.perf_counter()
    r = CliRunner().invoke(app, ["compress", f"{factory}:make", "--out", str(tmp_path / "o"),
                                 *args])  # fmt: skip
    assert r.exit_code == 2 and words in r.output, r.output
    assert time.perf_counter() - t0 < 5  # before the data is read or anything measured
    assert not list(tmp_path.glob("o*"))


def _png_folder(root, counts, size=8):
    from PIL import Image

    for split, per_class in counts.items():
        for c, n in enumerate(per_class):
            for i in range(n):
                path = root / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (size, size), (40 * c, 10 * i, 0)).save(path)


@pytest.mark.parametrize(
    "counts, words",
    [
        ({"train": [4], "test": [2]}, "has 1 class"),
        ({"train": [1, 4], "test": [1, 1]}, "too few training images in class(es) class0 (1)"),
        ({"train": [3, 3], "test": [1, 0]}, "test/class1' holds no images"),
    ],
)
def test_cli_refuses_data_too_small_to_judge(tmp_path, factory, counts, words):
    _png_folder(tmp_path / "d", counts)
    r = CliRunner().invoke(app, ["compress", f"{factory}:make", "--data", f"folder:{tmp_path / 'd'}",
                                 "--out", str(tmp_path / "o"), "--train-first"])  # fmt: skip
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_cli_needs_trained_weights_or_train_first(tmp_path, factory):
    args = ["compress", f"{factory}:make", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "no --weights" in r.output and "--train-first" in r.output
    weights = tmp_path / "w.safetensors"
    save_file(_model(factory).state_dict(), str(weights))
    r = CliRunner().invoke(app, [*args, "--weights", str(weights), "--train-first"])
    assert r.exit_code == 2 and "drop --weights" in r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_cli_second_run_on_the_same_output_exits_at_once(tmp_path, factory):
    import os
    import time

    from leanconv.compress.run_lock import RunLock

    out = tmp_path / "o"
    with RunLock(out):
        t0 = time.perf_counter()
        r = CliRunner().invoke(app, ["compress", f"{factory}:make", "--out", str(out),
                                     "--train-first"])  # fmt: skip
        assert time.perf_counter() - t0 < 5
    assert r.exit_code == 2 and f"pid {os.getpid()}" in r.output and "started" in r.output


def test_report_shows_the_start_and_the_epoch_kept(tmp_path, factory):
    config = _config(epochs=2)
    config.finetune = FinetuneConfig(epochs=2, batch_size=16, progress=False, validation=0.25)
    out = tmp_path / "out"
    result = compress(_model(factory), tiny_data(n=128), config, out, log=None)
    kept = json.loads((out / "report.json").read_text())["finetune_kept"]
    assert kept == result.finetune_kept and kept["epoch"] in (0, 1, 2)
    assert kept["start_validation"] is not None and kept["start_metric"] is not None
    md = (out / "report.md").read_text()
    assert f"| 0 (before) | | {kept['start_validation']:.2f} | {kept['start_metric']:.2f} |" in md
    said = "The weights before fine-tuning are kept" if kept["epoch"] == 0 else (
        f"Epoch {kept['epoch']} is kept.")  # fmt: skip
    assert said in md
