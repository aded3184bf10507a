"""Kill, interrupt and race the real ``leanconv compress`` command, and check what it leaves.

On a tiny model (a factory file and its weights) and a PNG folder written into a temporary
directory, this runs the installed command as subprocesses and checks:

- SIGKILL right after each of the six stage markers (``[k/6]``) appears on its stdout, then
  ``--resume``: it must exit 0 with a complete output (report.json, report.md, model/) and leave
  no ``OUT.partial`` or ``OUT.lock``. A table gives, per stage, what the staging directory held at
  the kill, the resume's exit status and seconds, whether the final plan equals the one recorded
  before the kill (``n/a`` when none was: stages 1-2), whether the next run said, in one line,
  that it took the dead run's lock over, and, for information, whether the plan and the saved
  weights equal those of an uninterrupted run, and how many processes of the killed run
  (image-reading workers) outlived it by more than 5 seconds. A kill during stage 1 can land
  before anything is staged: then ``--resume`` must refuse cleanly ("no interrupted run") and a
  plain rerun must complete.
- two runs on the same ``OUT`` started at once: exactly one finishes (exit 0, complete output),
  the other exits 2 naming the winner's pid; and a second run started while the first is
  fine-tuning exits 2 at once (the seconds include the interpreter importing torch).
- SIGINT during fine-tuning: exit 130 and the ``--resume`` hint; then ``--resume`` completes.
- SIGINT during stage 1: exit 130; if the hint says ``--resume``, ``--resume`` must work.
- after every scenario, nothing outside that run's ``OUT``, ``OUT.partial`` and ``OUT.lock``
  under the working directory was created, changed or deleted (snapshot of size, mtime and
  sha256; ``__pycache__`` not counted; the measurement cache is kept outside it).

A summary gives pass/fail per scenario; the exit status is 1 if any failed.

    .venv/bin/python benchmarks/reliability.py [--keep DIR] [--epochs 2] [--speedup 1.2]

By default the target is ``--macs-ratio 0.5``: the plan then depends on MACs and sensitivities,
not on timings, so layers are really rewritten and the plans of separate runs can be compared;
``--speedup X`` uses a measured-speedup target instead.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RUN_SUFFIXES = ("", ".partial", ".lock")
STALE = "stale lock"
RGB_FACTORY = """
import torch.nn as nn

def make(num_classes=3):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )
"""


# ---------------------------------------------------------------------- files
def snapshot(root: Path, skip: set[Path]) -> dict[str, tuple]:
    """``{relative path: (size, mtime_ns, sha256)}`` of the files under ``root`` (``("dir",)`` for
    directories), leaving out ``skip`` (relative paths) and ``__pycache__``."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and rel_dir / d not in skip)
        for d in dirnames:
            out[str(rel_dir / d)] = ("dir",)
        for f in filenames:
            rel = rel_dir / f
            if rel in skip:
                continue
            path = Path(dirpath) / f
            st = path.stat()
            out[str(rel)] = (
                st.st_size,
                st.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return out


def run_paths(root: Path, out: Path) -> set[Path]:
    rel = out.relative_to(root)
    return {rel.with_name(rel.name + s) for s in RUN_SUFFIXES}


def differences(before: dict, after: dict) -> list[str]:
    created = sorted(after.keys() - before.keys())
    deleted = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    return (
        [f"created {p}" for p in created]
        + [f"deleted {p}" for p in deleted]
        + [f"changed {p}" for p in changed]
    )


def incomplete(out: Path) -> list[str]:
    """What a finished run's output lacks, or leaves beside it (empty: complete)."""
    missing = [
        f"no {name}"
        for name in ("report.json", "report.md", "model/model.json", "model/model.safetensors")
        if not (out / name).is_file()
    ]
    for suffix in (".partial", ".lock"):
        if out.with_name(out.name + suffix).exists():
            missing.append(f"{out.name + suffix} left")
    return missing


def plan_choices(plan: dict) -> dict:
    return {n: (c["method"], c["rank"], c.get("algorithm")) for n, c in plan["layers"].items()}


def final_plan(out: Path) -> dict | None:
    try:
        return plan_choices(json.loads((out / "report.json").read_text())["plan"])
    except (OSError, KeyError, ValueError):
        return None


def weights_digest(out: Path) -> str | None:
    """sha256 of the saved model's tensors (names, dtypes, shapes, values), or None."""
    import torch
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(out / "model" / "model.safetensors"))
    except Exception:
        return None
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------- processes
class Proc:
    """``leanconv compress`` in its own session, its stdout and stderr read line by line."""

    def __init__(self, args: list[str], env: dict, cwd: Path):
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "leanconv.cli.main", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.done = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            with self.cond:
                self.lines.append((time.perf_counter() - self.t0, line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.done = True
            self.ended = time.perf_counter()  # stdout closed: the process (and its workers) ended
            self.cond.notify_all()

    @property
    def pid(self) -> int:
        return self.p.pid

    def wait_for(self, text: str, timeout: float) -> bool:
        """Wait until a line holds ``text``; False when the process ended or time ran out."""
        deadline = time.perf_counter() + timeout
        seen = 0
        with self.cond:
            while True:
                for _, line in self.lines[seen:]:
                    if text in line:
                        return True
                seen = len(self.lines)
                left = deadline - time.perf_counter()
                if self.done or left <= 0:
                    return False
                self.cond.wait(left)

    def finish(self, timeout: float) -> int:
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_session()
            rc = self.p.wait()
        self.reader.join(10)
        self.seconds = getattr(self, "ended", time.perf_counter()) - self.t0
        return rc

    def output(self) -> str:
        with self.cond:
            return "\n".join(line for _, line in self.lines)

    def session(self) -> list[int]:
        """Live processes of this run's session (the run itself and its workers)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.pid:
                        stat = Path(f"/proc/{entry}/stat").read_text()
                        if stat.rsplit(")", 1)[1].split()[0] != "Z":  # not a zombie
                            pids.append(int(entry))
                except (OSError, IndexError):
                    pass
        return pids

    def kill_session(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


# ---------------------------------------------------------------------- the set-up
def make_inputs(root: Path) -> tuple[Path, Path, Path]:
    """A PNG folder (3 classes x 24 train + 8 test, 8x8 RGB), a factory file and its weights."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    images = root / "images"
    for split, n in (("train", 24), ("test", 8)):
        for c in range(3):
            folder = images / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (8, 8, 3))
                pixels[2:6, 2:6, c] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    factory = root / "net.py"
    factory.write_text(RGB_FACTORY)
    namespace: dict = {}
    exec(RGB_FACTORY, namespace)  # noqa: S102 (our own text above)
    torch.manual_seed(0)
    model = namespace["make"]()
    weights = root / "weights.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, weights)
    return images, factory, weights


@dataclass
class Scenario:
    name: str
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.ok = False
        self.notes.append(why)


class Bench:
    def __init__(self, work: Path, env: dict, base_args: list[str], timeout: float):
        self.work, self.env, self.base, self.timeout = work, env, base_args, timeout
        self.scenarios: list[Scenario] = []

    def args(self, out: Path, *extra: str) -> list[str]:
        return [*self.base, "--out", str(out), *extra]

    def start(self, out: Path, *extra: str) -> Proc:
        return Proc(self.args(out, *extra), self.env, self.work)

    def snap(self, out: Path) -> dict:
        return snapshot(self.work, run_paths(self.work, out))

    def check_untouched(self, scenario: Scenario, before: dict, out: Path, when: str) -> None:
        diff = differences(before, self.snap(out))
        if diff:
            scenario.fail(f"{when}: outside {out.name}: " + ", ".join(diff[:6]))

    def scenario(self, name: str) -> Scenario:
        s = Scenario(name)
        self.scenarios.append(s)
        print(f"\n== {name}", flush=True)
        return s


def tail(text: str, n: int = 6) -> str:
    return "\n".join("    | " + line for line in text.strip().splitlines()[-n:])


# ---------------------------------------------------------------------- scenarios
def reference_run(b: Bench) -> tuple[dict | None, str | None]:
    s = b.scenario("an uninterrupted run")
    out = b.work / "reference"
    before = b.snap(out)
    proc = b.start(out)
    rc = proc.finish(b.timeout)
    print(f"exit {rc} in {proc.seconds:.1f} s")
    if rc != 0:
        s.fail(f"exit {rc}\n{tail(proc.output())}")
    for why in incomplete(out):
        s.fail(why)
    b.check_untouched(s, before, out, "after the run")
    plan = final_plan(out)
    if plan is not None:
        rewritten = sum(m != "keep" for m, _, _ in plan.values())
        print(f"plan: {rewritten} of {len(plan)} layers rewritten: {plan}")
    return plan, weights_digest(out)


def kill_at_each_stage(b: Bench, reference_plan, reference_weights) -> None:
    s = b.scenario("SIGKILL at each stage, then --resume")
    rows = []
    for stage in range(1, 7):
        out = b.work / f"killed{stage}"
        staging, lock = out.with_name(out.name + ".partial"), out.with_name(out.name + ".lock")
        before = b.snap(out)
        proc = b.start(out)
        marker = f"[{stage}/6]"
        if not proc.wait_for(marker, b.timeout):
            proc.kill_session()
            proc.finish(10)
            s.fail(f"stage {stage}: {marker} never appeared\n{tail(proc.output())}")
            continue
        os.kill(proc.pid, signal.SIGKILL)
        t_kill = time.perf_counter()
        rc = proc.finish(30)
        outlived = []
        while time.perf_counter() - t_kill < 5:
            outlived = proc.session()
            if not outlived:
                break
            time.sleep(0.1)
        if outlived:  # the killed run's own children: end them before going on
            proc.kill_session()
        lock_left = lock.exists()  # a dead process's lock file: the next run takes it over
        staged = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
        recorded = None
        if (staging / "plan.json").is_file():
            recorded = plan_choices(json.loads((staging / "plan.json").read_text()))
        if rc != -signal.SIGKILL:
            s.fail(f"stage {stage}: the kill ended the run with {rc}")
        b.check_untouched(s, before, out, f"stage {stage}, after the kill")

        resume = b.start(out, "--resume")
        rrc = resume.finish(b.timeout)
        text = resume.output()
        how = "resumed"
        if rrc != 0 and "run.json" not in staged and "no interrupted run" in text:
            # killed before anything was staged: nothing to resume, a plain rerun must work
            fresh = b.start(out)
            frc = fresh.finish(b.timeout)
            how = f"nothing staged: --resume exit {rrc} ('no interrupted run'), rerun exit {frc}"
            s.notes.append(f"stage {stage}: {how}")
            if frc != 0:
                s.fail(f"stage {stage}: {how}\n{tail(fresh.output())}")
            rrc, seconds = frc, resume.seconds + fresh.seconds
            text = text + "\n" + fresh.output()
        else:
            seconds = resume.seconds
            if rrc != 0:
                s.fail(f"stage {stage}: --resume exit {rrc}\n{tail(text)}")
        for why in incomplete(out):
            s.fail(f"stage {stage}: {why}")
        b.check_untouched(s, before, out, f"stage {stage}, after the resume")
        said = sum(STALE in line for line in text.splitlines())
        if said != 1:  # the dead run's lock file is taken over, and said, once
            s.fail(f"stage {stage}: {said} lines about the stale lock, not 1")
        plan = final_plan(out)
        same_recorded = "n/a" if recorded is None else ("yes" if plan == recorded else "NO")
        if recorded is not None and plan != recorded:
            s.fail(f"stage {stage}: the resumed plan differs from the one recorded")
        rows.append(
            (
                stage,
                ",".join(n.removesuffix(".json") for n in staged) or "-",
                "ok" if rrc == 0 and not incomplete(out) else "FAIL",
                f"{seconds:.1f}",
                same_recorded,
                "-" if reference_plan is None else ("yes" if plan == reference_plan else "no"),
                "-"
                if reference_weights is None
                else ("yes" if weights_digest(out) == reference_weights else "no"),
                "yes" if said else "no",
                str(len(outlived)),
                "yes" if lock_left else "no",
                how,
            )
        )
    head = ("stage", "staged at the kill", "resumed", "s", "plan=recorded", "plan=uninterrupted",
            "weights=uninterrupted", "said stale lock", "outlived 5 s", "lock at kill",
            "how")  # fmt: skip
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def two_runs_at_once(b: Bench) -> None:
    s = b.scenario("two runs on the same OUT started at once")
    out = b.work / "raced"
    before = b.snap(out)
    first, second = b.start(out, "--epochs", "6"), b.start(out, "--epochs", "6")
    rcs = {first.pid: first.finish(b.timeout), second.pid: second.finish(b.timeout)}
    winners = [p for p in (first, second) if rcs[p.pid] == 0]
    losers = [p for p in (first, second) if rcs[p.pid] != 0]
    print(f"exit statuses {list(rcs.values())}; seconds {first.seconds:.1f}, {second.seconds:.1f}")
    if len(winners) != 1:
        s.fail(f"{len(winners)} runs finished (exit statuses {list(rcs.values())})")
    else:
        winner, loser = winners[0], losers[0]
        text = loser.output()
        print(f"the loser (exit {rcs[loser.pid]}, {loser.seconds:.1f} s, read the data first: "
              f"{'data:' in text}): {text.splitlines()[-1]}")  # fmt: skip
        if rcs[loser.pid] != 2:
            s.fail(f"the second run exited {rcs[loser.pid]}, not 2")
        if f"pid {winner.pid} on" not in text:
            s.fail(f"the second run does not name the first's pid {winner.pid}:\n{tail(text)}")
        for why in incomplete(out):
            s.fail(why)
    b.check_untouched(s, before, out, "after both")

    s = b.scenario("a second run while the first is fine-tuning")
    out = b.work / "locked"
    before = b.snap(out)
    first = b.start(out, "--epochs", "6")
    if not first.wait_for("epoch 1/", b.timeout):
        s.fail(f"the first run never reached fine-tuning\n{tail(first.output())}")
        first.kill_session()
        first.finish(10)
        return
    staging = out.with_name(out.name + ".partial")
    second = b.start(out, "--epochs", "6")
    rc2 = second.finish(60)
    still = first.p.poll() is None
    text = second.output()
    print(f"second: exit {rc2} after {second.seconds:.1f} s (the first still running: {still})")
    print("    " + (text.splitlines()[-1] if text else ""))
    if rc2 != 2 or f"pid {first.pid} on" not in text:
        s.fail(f"second run: exit {rc2}, expected 2 naming pid {first.pid}\n{tail(text)}")
    if "data:" in text:
        s.fail("the second run read the data before stopping")
    if second.seconds > 10:
        s.fail(f"the second run took {second.seconds:.1f} s to stop")
    if not still:
        s.notes.append("the first run had finished before the second stopped (not a race)")
    if not staging.is_dir() and first.p.poll() is None:
        s.fail("the first run's staging directory vanished")
    rc1 = first.finish(b.timeout)
    print(f"first: exit {rc1} after {first.seconds:.1f} s")
    if rc1 != 0:
        s.fail(f"the first run exited {rc1}\n{tail(first.output())}")
    for why in incomplete(out):
        s.fail(why)
    b.check_untouched(s, before, out, "after both")


def sigint(b: Bench, marker: str, name: str, epochs: str) -> None:
    s = b.scenario(name)
    out = b.work / f"sigint-{marker.strip('[]/ ').replace('/', '-').replace(' ', '')}"
    before = b.snap(out)
    proc = b.start(out, "--epochs", epochs)
    if not proc.wait_for(marker, b.timeout):
        s.fail(f"{marker} never appeared\n{tail(proc.output())}")
        proc.kill_session()
        proc.finish(10)
        return
    os.kill(proc.pid, signal.SIGINT)
    rc = proc.finish(60)
    text = proc.output()
    hint = "rerun with --resume" in text
    staged = out.with_name(out.name + ".partial") / "run.json"
    print(f"exit {rc}; resume hint printed: {hint}; run.json staged: {staged.is_file()}")
    print(tail(text, 2))
    if rc != 130:
        s.fail(f"exit {rc}, not 130\n{tail(text)}")
    if marker.startswith("epoch") and not hint:
        s.fail("no --resume hint")
    if not hint and "nothing to resume" not in text:
        s.fail("neither a --resume hint nor 'nothing to resume'")
    if out.with_name(out.name + ".lock").exists():
        s.fail("the lock file was left after a clean interruption")
    b.check_untouched(s, before, out, "after the interruption")
    if hint:
        resume = b.start(out, "--epochs", epochs, "--resume")
        rrc = resume.finish(b.timeout)
        print(f"--resume: exit {rrc} in {resume.seconds:.1f} s")
        if rrc != 0:
            s.fail(f"the hint said --resume, which exits {rrc}:\n{tail(resume.output(), 2)}")
        else:
            for why in incomplete(out):
                s.fail(why)
        b.check_untouched(s, before, out, "after the resume")


# ---------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", type=Path, help="work in this directory and keep it")
    p.add_argument("--epochs", default="2", help="fine-tuning epochs of the killed runs")
    p.add_argument("--speedup", help="a measured-speedup target instead of --macs-ratio 0.5")
    p.add_argument("--timeout", type=float, default=300, help="seconds a run may take")
    args = p.parse_args()
    # a shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    # across exec: the runs would never see the SIGINT sent to them. A handler (not SIG_IGN)
    # here is reset to the default in every child at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        print("(SIGINT was ignored in this process: restored for the runs)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    top = args.keep or Path(tempfile.mkdtemp(prefix="leanconv-reliability-"))
    if args.keep and top.exists():
        shutil.rmtree(top)
    work, cache = top / "work", top / "cache"
    work.mkdir(parents=True)
    cache.mkdir()
    images, factory, weights = make_inputs(work)
    target = ["--speedup", args.speedup] if args.speedup else ["--macs-ratio", "0.5"]
    base = [
        "compress", f"{factory}:make", "--data", f"folder:{images}", "--weights", str(weights),
        "--calibration", "8", "--batch", "8", "--epochs", args.epochs, *target,
        "--algorithms", "none", "--min-metric", "0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LEANCONV_CACHE_DIR": str(cache),
           "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}  # fmt: skip
    print(f"working in {work}; leanconv {' '.join(base)}")
    b = Bench(work, env, base, args.timeout)
    t0 = time.perf_counter()
    reference_plan, reference_weights = reference_run(b)
    kill_at_each_stage(b, reference_plan, reference_weights)
    two_runs_at_once(b)
    sigint(b, "epoch 1/", "SIGINT during fine-tuning: exit 130, the hint, then --resume", "4")
    sigint(b, "[1/6]", "SIGINT during stage 1: exit 130, and a hint that works", args.epochs)

    print(f"\n== summary ({time.perf_counter() - t0:.0f} s)")
    for sc in b.scenarios:
        print(f"{'pass' if sc.ok else 'FAIL'}  {sc.name}")
        for note in sc.notes:
            print("      " + note.replace("\n", "\n      "))
    if not args.keep:
        shutil.rmtree(top, ignore_errors=True)
    status = 0 if all(sc.ok for sc in b.scenarios) else 1
    print(f"exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
