"""JSONL reading and writing shared by every step.

- `read_jsonl` streams records as ``(lineno, record)``; a torn or invalid line is reported
  with file and line number and skipped (counted in ``Reader.bad``). A file whose first
  line is not a JSON object is not JSONL at all: that raises `InputError`.
- `Appender` appends one record per ``write`` call with a single ``os.write`` of the whole
  line, and repairs a torn tail left by a killed writer before its first append.
- `atomic_write` rewrites a whole file through a temp file and an atomic rename, so a kill
  leaves either the old or the new file.
- `StepError` (the step cannot go on) and its kind `InputError` (bad input, naming file and
  line): the two errors a step stops with.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import jsonlines

log = logging.getLogger(__name__)


class StepError(Exception):
    """The step cannot go on, for a reason outside its input (the API refused, another run
    holds the lock, an optional package is missing). `cli.run` prints it as one line
    ``error: ...`` on stderr and exits 1."""


class InputError(StepError):
    """Bad user input: a file, a line, a field (the message names them). Printed and
    exited on like any `StepError`."""


def where(path: str | os.PathLike, lineno: int | None = None) -> str:
    return f"{os.fspath(path)}:{lineno}" if lineno is not None else os.fspath(path)


class Reader:
    """Iterate ``(lineno, record)`` over a JSONL file of objects, 1-based line numbers.

    Bad lines are logged as warnings with ``path:lineno`` and collected in ``self.bad``
    as ``(lineno, reason)``. Blank lines are ignored.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.bad: list[tuple[int, str]] = []
        self.good = 0
        if not os.path.isfile(self.path):
            raise InputError(f"{self.path}: no such file")

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                torn = not raw.endswith(b"\n")
                try:
                    rec = json.loads(raw)
                except (ValueError, RecursionError) as exc:
                    self._bad(lineno, torn, f"not valid JSON ({exc})")
                    continue
                if not isinstance(rec, dict):
                    self._bad(lineno, torn, f"a JSON {type(rec).__name__}, not an object")
                    continue
                self.good += 1
                yield lineno, rec

    def _bad(self, lineno: int, torn: bool, reason: str) -> None:
        if self.good == 0 and not self.bad and not torn:
            raise InputError(
                f"{where(self.path, lineno)}: {reason}; is this a JSONL file (one JSON object per line)?"
            )
        what = "torn last line (a killed writer?)" if torn else reason
        log.warning("%s: skipped: %s", where(self.path, lineno), what)
        self.bad.append((lineno, what))


def read_jsonl(path: str | os.PathLike) -> Reader:
    """Stream ``(lineno, record)`` pairs; see `Reader`."""
    return Reader(path)


def require(record: dict, fields: Iterable[str], path: str | os.PathLike, lineno: int) -> None:
    """Raise `InputError` naming file, line and the missing field."""
    for f in fields:
        if f not in record:
            keys = ", ".join(sorted(record)) or "none"
            raise InputError(f'{where(path, lineno)}: no "{f}" field (keys: {keys})')


def require_type(value: Any, typ: type | tuple[type, ...], field: str,
                 path: str | os.PathLike, lineno: int) -> None:
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise InputError(
            f'{where(path, lineno)}: "{field}" should be {names}, got {type(value).__name__}'
        )


def dumps(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False)


def repair_tail(path: str | os.PathLike) -> int:
    """Cut a torn last line (no trailing newline) off `path`. Returns the bytes removed.

    The torn line is logged and saved beside the file as ``<path>.torn`` so nothing is lost.
    A last line that is a whole JSON object only gets its missing newline.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # walk back to the last newline
        pos, chunk = size, 65536
        cut = 0
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            buf = fh.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        fh.seek(cut)
        torn = fh.read()
        try:
            whole = isinstance(json.loads(torn), dict)
        except (ValueError, RecursionError):
            whole = False
        if whole:
            # a complete record missing only its newline (a file written by another tool,
            # or a kill between the record and its newline): no strict prefix of a JSON
            # object is itself an object, so this is not a torn write: keep it
            fh.seek(size)
            fh.write(b"\n")
            log.info("%s: added the newline missing after the last line", path)
            return 0
        with open(path + ".torn", "ab") as keep:
            keep.write(torn + b"\n")
        fh.truncate(cut)
    log.warning("%s: removed a torn last line of %d bytes (kept in %s.torn)", path, len(torn), path)
    return len(torn)


class Appender:
    """Append records to a JSONL file, one complete line per ``os.write``.

    Opening repairs a torn tail first, so a later read never trips on a half record;
    closing syncs the file to disk.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        repair_tail(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: Any) -> None:
        data = (dumps(record) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _file_mode(path: str) -> int:
    """Mode for a rewrite of `path`: the old file's, else what open() would give (umask)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # read, not set-and-restore: os.umask would briefly change it for every thread
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_text(path: str | os.PathLike) -> Iterator[Any]:
    """Write a whole text file: a temp file beside `path` (with the mode a new file gets),
    fsync, rename over `path`. If the block raises, the temp file is removed and `path` is
    untouched."""
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, _file_mode(path))   # mkstemp makes 0600; a data file is shared like any
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[jsonlines.Writer]:
    """Write a whole JSONL file through `atomic_text`."""
    with atomic_text(path) as fh:
        writer = jsonlines.Writer(fh, dumps=dumps, flush=False)
        yield writer
        writer.close()


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Atomically write `records` to `path`; returns the count."""
    n = 0
    with atomic_write(path) as w:
        for r in records:
            w.write(r)
            n += 1
    return n
