"""A small on-disk JSON cache for measurements (latencies, machine peaks).

Files live in ``$LEANCONV_CACHE_DIR`` (default ``~/.cache/leanconv``). A missing, unreadable or
corrupt cache is an empty one, and a cache that cannot be written costs only a re-measurement:
measurements never fail because of their cache. Writes are atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .atomic import write_text_atomic


def cache_dir() -> Path:
    return Path(os.environ.get("LEANCONV_CACHE_DIR") or Path.home() / ".cache" / "leanconv")


def load(name: str) -> dict:
    path = cache_dir() / name
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def save(name: str, data: dict) -> None:
    with contextlib.suppress(OSError):
        write_text_atomic(cache_dir() / name, json.dumps(data, indent=1), force=True)
