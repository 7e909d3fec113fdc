"""Shared by all tests: the inference step's response cache never leaves the test's tmp dir.

The step caches answers under ~/.cache by default; tests must neither read a cache left by
an earlier run nor leave one. The variable is set at import (before test modules copy
os.environ for their subprocesses) to a directory of this session, and per test to one of
the test's own.
"""

import atexit
import os
import shutil
import tempfile

import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="annoy_datasync_cache_")
os.environ["ANNOY_DATASYNC_CACHE"] = _SESSION_CACHE
atexit.register(shutil.rmtree, _SESSION_CACHE, True)


@pytest.fixture(autouse=True)
def _own_response_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ANNOY_DATASYNC_CACHE", str(tmp_path_factory.mktemp("response_cache")))
