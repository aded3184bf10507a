"""One run per output directory: an exclusive lock beside it, and a final rename that loses nothing.

A run on ``--out OUT`` holds ``OUT.lock`` (``fcntl.flock``, exclusive, not waiting) from before its
staging directory ``OUT.partial`` is touched until ``OUT`` is in place. The file holds the owner's
pid, host and start time, so a second run on the same ``OUT`` stops at once naming the running one.
The kernel releases a lock when its process dies (even by ``kill -9``): a lock file left behind by
a dead process can be locked again, and is then taken over, said in one line. After taking the
lock the path is checked to still be the file that was locked, so that a run that removed the
file as it finished cannot leave two runs each holding a different inode.

:func:`publish` puts the finished staging directory in place: it never deletes an ``OUT`` that this
run did not make, unless ``force``; with ``force`` the old ``OUT`` is first renamed aside, so that
an interruption between the two renames leaves both directories, never neither.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..errors import LeanconvError, OutputExistsError


class RunningError(LeanconvError):
    """Another live process is working on the same output directory."""


def lock_path(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".lock")


def _read_owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {when}"


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise LeanconvError(f"{str(path)!r} (the lock of --out) is a directory: remove it")


def _lock_or_name_owner(fd: int, out_dir, path: Path) -> None:
    """Take the exclusive lock of ``fd`` without waiting, or raise :class:`RunningError` naming
    the run that holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunningError(
            f"another leanconv run is writing {str(out_dir)!r} ({_describe(_read_owner(fd))}); "
            f"wait for it to finish, or choose another --out (lock: {str(path)!r})"
        ) from None


class RunLock:
    """The lock of one run on ``out_dir`` (a context manager; see the module docstring)."""

    def __init__(self, out_dir: str | Path, log=None):
        self.out_dir, self.log = Path(out_dir), log
        self.path = lock_path(self.out_dir)
        self.fd: int | None = None
        self.took_over: dict | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_directory(self.path)
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _lock_or_name_owner(fd, self.out_dir, self.path)
            except RunningError:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed by a run that just finished: lock the new file instead
                os.close(fd)
                continue
            owner = _read_owner(fd)
            if owner.get("pid") and owner.get("pid") != os.getpid():
                self.took_over = owner
                if self.log:
                    self.log(f"a stale lock of a run that ended without finishing "
                             f"({_describe(owner)}) was taken over")  # fmt: skip
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())
            os.fsync(fd)
            self.fd = fd
            return self
        raise RunningError(f"cannot lock {str(self.path)!r}: it keeps being replaced")

    @staticmethod
    def probe(out_dir: str | Path) -> None:
        """Raise :class:`RunningError` if a live run holds the lock of ``out_dir``; change
        nothing otherwise (no directory made, no stale lock taken over or removed)."""
        path = lock_path(Path(out_dir))
        _refuse_directory(path)
        try:
            fd = os.open(path, os.O_RDWR)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            _lock_or_name_owner(fd, out_dir, path)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def publish(staging: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished ``staging`` to ``out_dir`` (see the module docstring)."""
    if out_dir.exists():
        if not force:
            raise OutputExistsError(
                f"{str(out_dir)!r} appeared while this run was working and is not this run's "
                f"own; the finished result is in {str(staging)!r} (pass --force to replace it)"
            )
        aside = out_dir.with_name(f"{out_dir.name}.replaced-{os.getpid()}")
        out_dir.rename(aside)
        staging.rename(out_dir)
        shutil.rmtree(aside)
        return
    staging.rename(out_dir)
