"""JSONL reading and writing shared by every step.

- `read_jsonl` streams records as ``(lineno, record)``; a torn or invalid line is reported
  with file and line number and skipped (counted in ``Reader.bad``). A file whose first
  line is not a JSON object is not JSONL at all: that raises `InputError`.
- `LineIndex` reads single lines of a large file by number, keeping only their offsets.
- `open_lines` and `loads_line` are how every reader of a JSONL file opens it and parses a
  line: a UTF-8 byte order mark is skipped at the very start of a file (Windows editors,
  ``to_json(encoding="utf-8-sig")``) and is a bad line anywhere else.
- `require`, `require_type` and `require_messages` / `messages_problem` check the fields
  of a record, naming file and line and what to do.
- `Appender` appends one record per ``write`` call with a single ``os.write`` of the whole
  line, and repairs a torn tail left by a killed writer before its first append.
- `atomic_text` rewrites a whole file through a temp file, fsync and an atomic rename, so a
  kill leaves either the old or the new file, with the old file's mode; `atomic_write` is
  the same for a JSONL file. Every file the project rewrites whole goes through them (step
  outputs, the run report and its figure, dataset_info.json, the batch state file, the
  replay server's port file, the batches' downloaded results).
- `read_yaml` reads a YAML file (the prompt templates, the price table), naming file and
  line of what does not parse.
- `StepError` (the step cannot go on) and its kind `InputError` (bad input, naming file and
  line): the two errors a step stops with.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import jsonlines
import yaml

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


BOM = codecs.BOM_UTF8


def open_lines(path: str | os.PathLike, offset: int = 0) -> BinaryIO:
    """`path` opened for reading bytes from `offset`; from the start, past a UTF-8 byte
    order mark if the file begins with one.

    The mark belongs to the file, not to its first line: line numbers do not change, and
    offsets (``tell()``, `LineIndex`) stay byte positions in the file, so the first line
    starts at 3 in a file with a mark.
    """
    fh = open(path, "rb")
    if offset:
        fh.seek(offset)
    elif fh.read(len(BOM)) != BOM:
        fh.seek(0)
    return fh


def loads_line(raw: bytes) -> Any:
    """Parse one line of a JSONL file read by `open_lines` (UTF-8; ValueError if it is not
    JSON).

    Not ``json.loads(raw)``: given bytes, json guesses the encoding of each line on its own
    and drops a byte order mark wherever one stands; here the start of the file is the only
    place for a mark, and a line holding one is bad (a file pasted into another?).
    """
    if raw.startswith(BOM):
        raise ValueError("a UTF-8 byte order mark inside the file (only its start may have "
                         "one: files pasted together?)")
    return json.loads(raw.decode("utf-8", "surrogatepass"))   # json's own decoding of bytes


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
        with open_lines(self.path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                torn = not raw.endswith(b"\n")
                try:
                    rec = loads_line(raw)
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


class LineIndex:
    """Random access to the lines of a file by 1-based line number (the numbering of
    `read_jsonl`), through an index of byte offsets.

    Memory holds 8 bytes per line, never the lines: each `line` call reads one from disk.
    Used where a step joins a large file on demand (the parsed file in verify.py, the
    second-turn answers in assemble_spec_demo.py).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise InputError(f"{self.path}: no such file")
        self.offsets = array("q")
        with open_lines(self.path) as fh:
            pos = fh.tell()
            for line in fh:            # the same physical lines as read_jsonl's numbering
                self.offsets.append(pos)
                pos += len(line)
        self._fh = open(self.path, "rb")

    def __len__(self) -> int:
        return len(self.offsets)

    def line(self, lineno: int) -> bytes:
        """Line `lineno` (1-based), with its newline if it has one."""
        if not 1 <= lineno <= len(self.offsets):
            raise IndexError(f"{self.path} has no line {lineno} ({len(self.offsets)} lines)")
        self._fh.seek(self.offsets[lineno - 1])
        return self._fh.readline()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> LineIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# How a record's "messages" should look: the end of every message about one that does not.
MESSAGES_HINT = ('is this a messages file? Each line needs "messages": a non-empty list of '
                 '{"role": str, "content": str} turns, as build_transform_msg.py, '
                 'build_spec_msg.py and build_spec_rev_msg.py write them')


def messages_problem(record: dict, path: str | os.PathLike, lineno: int, *,
                     prompt_last: bool = False) -> str:
    """Why `record` (line `lineno` of `path`) has no usable "messages", or "" if it has.

    Usable: a non-empty list of ``{"role": str, "content": ...}`` turns whose content is a
    string or, as the chat API also takes, a list of content parts (objects); with
    `prompt_last` (the steps that build text from the conversation), every content a string
    and the last turn a user turn (the prompt a model answered). The one check of every step that
    reads messages (inference, the replay server, the revision and assembly steps); the
    message names file and line, what is wrong, and how a messages record looks.
    """
    if "messages" not in record:
        keys = ", ".join(sorted(record)) or "none"
        problem = f'no "messages" field (keys: {keys})'
    else:
        problem = _turns_problem(record["messages"], prompt_last)
        if not problem:
            return ""
    return f"{where(path, lineno)}: {problem}; {MESSAGES_HINT}"


def _turns_problem(msgs: Any, prompt_last: bool) -> str:
    if not isinstance(msgs, list) or not msgs:
        got = "an empty list" if isinstance(msgs, list) else type(msgs).__name__
        return f'"messages" should be a non-empty list, got {got}'
    for k, turn in enumerate(msgs):
        if not isinstance(turn, dict):
            return f"messages[{k}] should be an object, got {type(turn).__name__}"
        if not isinstance(turn.get("role"), str):
            got = type(turn["role"]).__name__ if "role" in turn else "nothing"
            return f'messages[{k}]["role"] should be str, got {got}'
        content = turn.get("content")
        parts = (not prompt_last and isinstance(content, list) and content
                 and all(isinstance(part, dict) for part in content))
        if not isinstance(content, str) and not parts:
            got = type(content).__name__ if "content" in turn else "nothing"
            want = "str" if prompt_last else "str or a list of content parts"
            return f'messages[{k}]["content"] should be {want}, got {got}'
    if prompt_last and msgs[-1]["role"] != "user":
        return (f'messages should end with a user turn (the prompt the model answered), '
                f'not "{msgs[-1]["role"]}"')
    return ""


def require_messages(record: dict, path: str | os.PathLike, lineno: int, *,
                     prompt_last: bool = False) -> list:
    """The record's "messages"; `InputError` saying why not (see `messages_problem`)."""
    problem = messages_problem(record, path, lineno, prompt_last=prompt_last)
    if problem:
        raise InputError(problem)
    return record["messages"]


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """The data of the YAML file `path`, which holds `what` (for the messages); `InputError`
    naming the file, and the line where it does not parse."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where(path, mark.line + 1 if mark is not None else None)}: "
                         f"not valid YAML ({problem})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file ({exc.reason})") from None


def dumps(record: Any) -> str:
    """One JSON line of `record`, text kept as it is, except that a record holding a lone
    surrogate (a model's text may: JSON can escape one, UTF-8 cannot hold it) is written
    with every non-ASCII character escaped: still the same record when read back."""
    text = json.dumps(record, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(record)
    return text


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
    untouched. Text UTF-8 cannot hold (a lone surrogate) is written as a backslash escape."""
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, _file_mode(path))   # mkstemp makes 0600; a data file is shared like any
        # a lone surrogate (from a model's or a corpus's text) is written as \udXXX: in a
        # JSON string that is its escape, so the value reads back the same
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
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
