"""One run per output, nothing lost at the end, and --resume that continues the same run only."""

import json
import os

import pytest
import torch

from leanconv.compress.pipeline import compress
from leanconv.compress.run_lock import RunLock, RunningError, lock_path, publish
from leanconv.compress.run_record import ResumeMismatchError
from leanconv.errors import LeanconvError, OutputExistsError

from .test_finetune import tiny_data
from .test_pipeline import _config, _model, factory  # noqa: F401 (fixture)


class Stop(Exception):
    pass


def _stop_at(words):
    def log(msg):
        if words in msg:
            raise Stop

    return log


def test_a_second_run_on_the_same_output_stops_at_once(tmp_path, factory):  # noqa: F811
    out = tmp_path / "out"
    with RunLock(out):  # a run in progress (another open file description: flock conflicts)
        with pytest.raises(RunningError, match=rf"pid {os.getpid()} on .*, started "):
            compress(_model(factory), tiny_data(n=64), _config(), out, {}, log=None)
        assert not out.exists() and not (tmp_path / "out.partial").exists()
        with pytest.raises(RunningError):
            RunLock(out).acquire()
    assert not lock_path(out).exists()  # released and removed


def test_a_stale_lock_is_taken_over_and_said(tmp_path):
    out = tmp_path / "out"
    dead = {"pid": 2**22 + 12345, "host": "elsewhere", "started": 1.0e9}
    lock_path(out).write_text(json.dumps(dead))  # left by a process killed with -9: not locked
    said = []
    with RunLock(out, said.append) as lock:
        assert lock.took_over["pid"] == dead["pid"]
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "stale lock" in said[0] and str(dead["pid"]) in said[0]


def test_publish_never_deletes_an_output_that_is_not_its_own(tmp_path):
    staging, out = tmp_path / "out.partial", tmp_path / "out"
    staging.mkdir()
    (staging / "report.json").write_text("new")
    out.mkdir()
    (out / "theirs.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not this run's own"):
        publish(staging, out, force=False)
    assert (out / "theirs.txt").read_text() == "keep me" and (staging / "report.json").exists()
    publish(staging, out, force=True)
    assert (out / "report.json").read_text() == "new" and not staging.exists()
    assert not list(tmp_path.glob("out.replaced-*"))


def test_resume_refuses_other_settings_model_or_data(tmp_path, factory):  # noqa: F811
    data, out = tiny_data(n=128), tmp_path / "out"
    with pytest.raises(Stop):
        compress(_model(factory), data, _config(epochs=2), out, {}, log=_stop_at("epoch 1/"))
    staging = tmp_path / "out.partial"
    with pytest.raises(ResumeMismatchError, match=r"--epochs was 2, now 3"):
        compress(_model(factory), data, _config(epochs=3), out, {}, resume=True, log=None)
    other = _model(factory)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(ResumeMismatchError, match="weights differ"):
        compress(other, data, _config(epochs=2), out, {}, resume=True, log=None)
    with pytest.raises(ResumeMismatchError, match="the data differ"):
        compress(_model(factory), tiny_data(n=128, seed=1), _config(epochs=2), out, {},
                 resume=True, log=None)  # fmt: skip
    # a new run does not discard the interrupted one without --force
    with pytest.raises(OutputExistsError, match="--resume continues it, --force discards it"):
        compress(_model(factory), data, _config(epochs=2), out, {}, log=None)
    assert (staging / "checkpoint.pt").exists() and (staging / "run.json").exists()
    result = compress(_model(factory), data, _config(epochs=2), out, {}, resume=True, log=None)
    assert len(result.finetune_history) == 2 and out.exists() and not staging.exists()


def test_an_interrupted_planning_resumes_from_the_layers_measured(tmp_path, factory):  # noqa: F811
    data, out = tiny_data(n=128), tmp_path / "out"
    with pytest.raises(Stop):
        compress(_model(factory), data, _config(), out, {}, log=_stop_at("planned 2/"))
    kept = json.loads((tmp_path / "out.partial" / "candidates.json").read_text())
    assert len(kept) == 2  # the layers finished before the interruption
    said = []
    compress(_model(factory), data, _config(), out, {}, resume=True, log=said.append)
    reused = [m for m in said if "measured before the interruption" in m]
    assert len(reused) == 2 and all(name in " ".join(reused) for name in kept)
    assert (out / "report.json").exists()


def test_resume_without_an_interrupted_run(tmp_path, factory):  # noqa: F811
    with pytest.raises(LeanconvError, match="no interrupted run"):
        compress(_model(factory), tiny_data(n=64), _config(), tmp_path / "out", {}, resume=True,
                 log=None)  # fmt: skip


def test_a_lock_path_that_is_a_directory_is_named(tmp_path):
    out = tmp_path / "out"
    lock_path(out).mkdir()
    for attempt in (lambda: RunLock(out).acquire(), lambda: RunLock.probe(out)):
        with pytest.raises(LeanconvError, match=r"out\.lock' \(the lock of --out\) is a directory"):
            attempt()


def test_batches_beyond_the_cap_are_refused_before_any_work():
    from leanconv.compress.pipeline import MAX_BATCH, CompressConfig

    with pytest.raises(ValueError, match=f"--batch {MAX_BATCH + 1}: at most {MAX_BATCH}"):
        CompressConfig(plan_batch=MAX_BATCH + 1)
    with pytest.raises(ValueError, match="batch sizes from 1"):
        CompressConfig(batch_sizes=(1, 10**8))
