import os
import tempfile

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
torch.set_num_threads(1)
# Caches (measurements, compiled kernels) written while modules are collected go to a temporary
# directory too; each test session then gets its own below.
os.environ["LEANCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="leanconv-collect-")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Measurement caches of the tests go to a temporary directory, not the user's home."""
    path = tmp_path_factory.mktemp("leanconv-cache")
    old = os.environ.get("LEANCONV_CACHE_DIR")
    os.environ["LEANCONV_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LEANCONV_CACHE_DIR", None)
    else:
        os.environ["LEANCONV_CACHE_DIR"] = old
