"""A persistent cache of successful chat answers, so that no answer is paid for twice.

One SQLite file (``responses.sqlite3`` in the cache directory), one table keyed by the
SHA-256 of everything that decides an answer: the endpoint family, the request body as
sent (model, messages, temperature, max_tokens and any other sampling parameter) and a
sample number (several samples of one request at temperature > 0 are different answers).
The API key is not part of the key and is never stored. Lookups go through the primary key
index (a B-tree): their cost grows with the log of the number of entries.

Only successful answers are stored (not truncated, filtered or empty ones). Several
processes may read and write the same file at once (write-ahead log; writes are committed
in batches, a killed run loses at most the last batch, which its output file still holds).

Clearing: delete the file (``rm <cache_dir>/responses.sqlite3*``), or run with ``--no_cache``
to neither read nor write it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import sqlite3
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .jsonl import StepError

FILENAME = "responses.sqlite3"


def default_dir(environ: Mapping[str, str] = os.environ) -> str:
    """$ANNOY_DATASYNC_CACHE, else $XDG_CACHE_HOME/annoy_datasync, else ~/.cache/annoy_datasync."""
    if environ.get("ANNOY_DATASYNC_CACHE"):
        return environ["ANNOY_DATASYNC_CACHE"]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "annoy_datasync")


def endpoint_family(base_url: str) -> str:
    """Who answers: the host name of a provider (``api.openai.com``), or ``self-hosted`` for
    servers addressed by IP, ``localhost`` or a one-word host name. Several self-hosted
    servers serving one model share their cached answers; two providers do not."""
    host = (urlsplit(base_url).hostname or "").lower()
    try:
        ipaddress.ip_address(host)
        return "self-hosted"
    except ValueError:
        pass
    if host == "localhost" or "." not in host:
        return "self-hosted"
    return host


def cache_key(family: str, params: Mapping[str, Any], sample: int) -> bytes:
    """The key of one request: `params` is the request body as sent (model, messages and
    every sampling parameter)."""
    text = json.dumps({"family": family, "params": params, "sample": sample}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()


# how long an open or a write waits for other processes holding the file
WAIT_SECONDS = 60.0


def _busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def check_usable(path: str) -> None:
    """Open the cache at `path` once (creating it), so that a cache that cannot be used stops
    the run with one message before any worker starts."""
    try:
        ResponseCache(path).close()
    except (OSError, sqlite3.Error) as exc:
        raise StepError(f"cannot open the response cache {path}: {exc}; pass --cache_dir "
                        f"with a writable directory, or --no_cache to run without it") from exc


class ResponseCache:
    """Answers by key. Open it in the process that uses it (a connection is not fork-safe)."""

    def __init__(self, path: str, timeout: float = WAIT_SECONDS) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        # SQLite answers "database is locked" at once, without waiting out the busy timeout,
        # when the switch to write-ahead logging (or the first table) meets another process
        # doing the same: the workers of one run open a new cache file at the same moment
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                self._set_up()
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    self.db.close()
                    raise
            time.sleep(pause * (1 + random.random()))
            pause = min(pause * 2, 0.25)
        self.pending: dict[bytes, str] = {}

    def _set_up(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # read through a memory map and keep the upper B-tree levels in memory: a lookup in
        # a large file costs no read() calls once the OS has its pages
        self.db.execute("PRAGMA mmap_size=1073741824")
        self.db.execute("PRAGMA cache_size=-32768")
        # a rowid table: answers of a few KB stay inline in its pages, and the key's index
        # holds only 32-byte keys (a WITHOUT ROWID table put a 1 KB answer on two pages)
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, "
                        "answer TEXT NOT NULL, created REAL NOT NULL)")

    def get(self, key: bytes) -> dict | None:
        if key in self.pending:
            return json.loads(self.pending[key])
        row = self.db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: bytes, answer: Mapping[str, Any]) -> None:
        """Store (written by the next `flush`, in one short transaction, so that processes
        sharing the file hold its write lock only for a moment)."""
        self.pending[key] = json.dumps(answer, ensure_ascii=False)

    def flush(self) -> None:
        if not self.pending:
            return
        now = time.time()
        rows = [(k, v, now) for k, v in self.pending.items()]
        with self.db:       # not in autocommit: executemany inside BEGIN ... COMMIT
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR REPLACE INTO answers (key, answer, created) "
                                "VALUES (?, ?, ?)", rows)
        self.pending.clear()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.flush()
        self.db.close()
