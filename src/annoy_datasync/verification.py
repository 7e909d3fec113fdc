"""Verdicts on predictions (the library behind ``verify.py``).

- `ParsedIndex`: random access to a parsed file by ``itemid`` (its 0-based line) through a
  `jsonl.LineIndex` of line offsets: memory grows by 8 bytes per parsed line, never with its content; a
  small LRU keeps recently used samples (gens files come grouped by sample).
- The entry point of a sample is the function its ``funcname`` names (``main_solution`` when
  the field is absent or null), called as the method calls it: ``f(**input)`` when the
  input is a JSON object, ``f(input)`` otherwise.
- Answers are read by `answers.extract_answer` under the rule given (the method's by default).
- `Verifier.run(items)`: turns a stream of gens records into the same records with
  ``"res": {"status", "message"}`` added, in input order. Output predictions are compared with
  the recorded output (`compare.json_equal`); input predictions run the reference code on the
  predicted input through the executor (a bounded window of jobs in flight) and compare the
  result with the recorded output. Each record keeps its own future: verdicts cannot land on
  another record. Executions are cached by (sha256 of code, canonical input).
- `read_verdict`: a verified record's ``res`` read back by the later steps
  (build_spec_rev_msg.py, assemble_spec_demo.py), checked, errors naming file and line; only
  ``success`` passes, in our vocabulary and the original implementation's.
- The messages are the feedback a model sees in its second turn: one sentence each, values
  shown as JSON and shortened when long.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from . import answers
from . import status as st
from .compare import canonical, exec_key, json_equal
from .jsonl import InputError, LineIndex, loads_line, require, require_type, where
from .sections import MAIN_FUNC

log = logging.getLogger(__name__)

SHOW_CHARS = 300  # longest JSON shown for one value in a message


# --- messages --------------------------------------------------------------------------

def show(value: Any, limit: int = SHOW_CHARS) -> str:
    """JSON text of `value` for a message, cut in the middle when longer than `limit`."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 4):]
    return f"{head} ... {tail} ({len(text)} characters)"


def _sentence(text: str, limit: int = SHOW_CHARS) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.rstrip(".")


def res(status: str, message: str, limit: str | None = None) -> dict:
    """A verdict; `limit` (res.limit) says which limit a timeout hit (status.LIMIT_CPU)."""
    out = {"status": status, "message": message}
    if limit is not None:
        out["limit"] = limit
    return out


@dataclass(frozen=True)
class Verdict:
    """The verdict of a verified record as the later steps read it back (`read_verdict`)."""
    res: dict           # the record's "res", as written (other fields such as "limit" kept)

    @property
    def status(self) -> str:
        return self.res["status"]

    @property
    def message(self) -> str:
        return self.res.get("message", "")

    @property
    def passed(self) -> bool:
        # one passing status in both vocabularies: ours (status.VERDICTS) and the original
        # implementation's (status.ORIGINAL_VERDICTS), where every other status is a failure
        return self.status == st.SUCCESS

    @property
    def no_answer(self) -> bool:
        """No answer could be read from the model's text (ours "no_answer", the original's
        "no answer")."""
        return self.status in st.NO_ANSWER_VERDICTS


def read_verdict(record: dict, path: str | os.PathLike, lineno: int) -> Verdict:
    """The verdict of line `lineno` of the verified file `path`; `InputError` naming file
    and line when ``res`` is missing or is not ``{"status": str, "message": str}`` (the
    message may be absent, as in the original implementation's files)."""
    require(record, ["res"], path, lineno)
    verdict = record["res"]
    require_type(verdict, dict, "res", path, lineno)
    require(verdict, ["status"], path, lineno)
    require_type(verdict["status"], str, "res.status", path, lineno)
    require_type(verdict.get("message", ""), str, "res.message", path, lineno)
    return Verdict(verdict)


MSG_SUCCESS = "Your answer is correct."
DEFAULT_FUNC = MAIN_FUNC  # entry point of a parsed record without "funcname"


def msg_output_wrong(inp: Any, pred: Any) -> str:
    return f"Given the input {show(inp)}, your predicted output {show(pred)} is wrong."


def msg_input_wrong(pred: Any, got: Any, expected: Any, func: str = DEFAULT_FUNC) -> str:
    return (f"Your predicted input {show(pred)} makes {func} return {show(got)}, "
            f"not {show(expected)}.")


def msg_no_answer(key: str, reason: str = "") -> str:
    """Feedback for an answer with no usable JSON, saying why (it is the turn-2 prompt)."""
    example = '{"input": ...}' if key == "input" else '{"output": ...}'
    if reason.startswith(answers.NO_KEY):
        return (f'The last JSON object of your answer has no "{key}" key; end with one JSON '
                f"object of the form {example}.")
    if reason.startswith(answers.NOT_OBJECT):
        return (f"The final JSON of your answer is not an object; end with one JSON object "
                f"of the form {example}.")
    if reason.startswith(answers.INCOMPLETE):
        return (f"Your answer ends with an incomplete JSON object; finish with one complete "
                f"object of the form {example}.")
    if reason.startswith(answers.AMBIGUOUS):
        return (f"Your answer gives more than one different final answer; end with exactly one "
                f"JSON object of the form {example}.")
    if reason.startswith(answers.INVALID):
        return (f"The final JSON object of your answer cannot be read; end with one valid JSON "
                f"object of the form {example}.")
    return f"Your answer has no JSON object of the form {example}."


def msg_from_job(job: Any, timeout_s: float, func: str = DEFAULT_FUNC) -> str:
    """Feedback for an execution of the reference code on a predicted input that did not
    return a JSON value (`job` is an executor JobResult); `func` is the function called."""
    kind = job.error_type or ""
    detail = _sentence(job.message) if job.message else ""
    if job.status == st.EXCEPTION:
        # the executor's message may or may not already start with the exception type
        if detail.startswith(kind) or not kind:
            text = detail or "an exception"
        else:
            text = f"{kind}: {detail}" if detail else kind
        return f"Calling {func} on your predicted input raised {text}."
    if job.status == st.TIMEOUT:
        return (f"Running {func} on your predicted input timed out: it computed for "
                f"{timeout_s:g} s of CPU time without finishing.")
    if job.status == st.WALL_TIMEOUT:
        return (f"Running {func} on your predicted input timed out: it stopped computing "
                f"(slept or blocked) for more than {timeout_s:g} s.")
    if job.status == st.NOT_RUNNABLE:
        return f"The reference code could not be run: {_lower_first(detail) or job.status}."
    if detail:  # the executor's sentence about "the code": say it was on this input
        return f"On your predicted input, {_lower_first(detail)}."
    what = {st.RESOURCE_LIMIT: f"the code exceeded the {kind or 'resource'} limit",
            st.CRASHED: f"the code crashed ({kind or 'killed by a signal'})",
            st.NON_JSON: "the code returned a value that is not plain JSON"}
    return f"On your predicted input, {what.get(job.status, job.status)}."


def _lower_first(text: str) -> str:
    if text.startswith("The code") or text.startswith("The "):
        return text[0].lower() + text[1:]
    return text


# --- the parsed file -----------------------------------------------------------------

_AMBIGUOUS = object()


@dataclass(frozen=True, eq=False)
class Sample:
    refcode: str
    ios: list
    func: str = DEFAULT_FUNC    # the entry point ("funcname")

    @functools.cached_property
    def recorded(self) -> dict[str, Any]:
        """Recorded output by canonical input; an input recorded with two different outputs
        (a pair that does not reproduce, in files of other tools) maps to nothing usable."""
        table: dict[str, Any] = {}
        for pair in self.ios:
            if isinstance(pair, dict) and "input" in pair and "output" in pair:
                key = canonical(pair["input"])
                if key not in table:
                    table[key] = pair["output"]
                elif (table[key] is not _AMBIGUOUS
                      and canonical(table[key]) != canonical(pair["output"])):
                    table[key] = _AMBIGUOUS
        return table


class ParsedIndex:
    """Samples of a parsed file by itemid (0-based physical line), read on demand.

    Only ``refcode`` and ``ios`` are kept from a line. A line that cannot serve (bad JSON, no
    refcode or ios) is reported by `get` as a string saying what is wrong, not raised: it
    fails the predictions that point at it, not the run.
    """

    def __init__(self, path: str | os.PathLike, cache_size: int = 1024):
        self.path = os.fspath(path)
        self.lines = LineIndex(self.path)
        first = next(((n, raw) for n in range(1, len(self.lines) + 1)
                      if (raw := self.lines.line(n)).strip()), None)
        if first is not None:
            try:
                rec = loads_line(first[1])
            except (ValueError, RecursionError):
                rec = None
            if not isinstance(rec, dict):
                raise InputError(f"{where(self.path, first[0])}: not a JSON object; "
                                 "is this the parsed file (one JSON object per line)?")
            if "refcode" not in rec and "ios" not in rec:
                # a wrong file (gens, messages ...) would fail every prediction one by one
                keys = ", ".join(sorted(rec)) or "none"
                raise InputError(f'{where(self.path, first[0])}: no "refcode" and no "ios" '
                                 f"field (keys: {keys}); is this the parsed file "
                                 "(parse_gen_ios.py output)?")
        self._cache: OrderedDict[int, Sample | str] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.lines)

    def get(self, itemid: int) -> Sample | str:
        hit = self._cache.get(itemid)
        if hit is not None:
            self._cache.move_to_end(itemid)
            return hit
        got = self._load(itemid)
        self._cache[itemid] = got
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return got

    def _load(self, itemid: int) -> Sample | str:
        if not 0 <= itemid < len(self.lines):
            return f"itemid {itemid} is not a line of {self.path} ({len(self.lines)} lines)"
        here = where(self.path, itemid + 1)
        raw = self.lines.line(itemid + 1)
        try:
            rec = loads_line(raw)
        except (ValueError, RecursionError):
            return f"{here} is not valid JSON"
        if not isinstance(rec, dict):
            return f"{here} is not a JSON object"
        for field, typ in (("refcode", str), ("ios", list)):
            if not isinstance(rec.get(field), typ):
                return f'{here} has no "{field}" {typ.__name__}'
        func = rec.get("funcname")
        if func is None:    # absent, or null as table tools write a missing field
            func = DEFAULT_FUNC
        if not isinstance(func, str) or not func.isidentifier():
            return f'{here} has a "funcname" that is not a function name: {show(func, 40)}'
        return Sample(rec["refcode"], rec["ios"], func)

    def close(self) -> None:
        self.lines.close()


# --- checking one record ---------------------------------------------------------------

@dataclass
class Target:
    """What one gens record asks to check, or why it cannot be checked."""
    kind: str = ""            # "i" or "o"
    inp: Any = None           # the recorded input of the pair
    expected: Any = None      # the recorded output of the pair
    refcode: str = ""
    problem: str = ""         # non-empty: the record cannot be checked (not_runnable)
    sample: Sample | None = None
    func: str = DEFAULT_FUNC  # the function executions call


def locate(record: dict, parsed: ParsedIndex, here: str) -> Target:
    """Find the recorded pair a gens record refers to (itemid, ioid, io_pred)."""
    itemid, ioid, kind = record.get("itemid"), record.get("ioid"), record.get("io_pred")
    for name, value in (("itemid", itemid), ("ioid", ioid)):
        if not isinstance(value, int) or isinstance(value, bool):
            return Target(problem=f'{here}: "{name}" should be an int, got {show(value, 40)}')
    if kind not in ("i", "o"):
        return Target(problem=f'{here}: "io_pred" should be "i" or "o", got {show(kind, 40)}')
    sample = parsed.get(itemid)
    if isinstance(sample, str):
        return Target(problem=f"{here}: {sample}")
    if not 0 <= ioid < len(sample.ios):
        return Target(problem=f"{here}: ioid {ioid} is out of range: sample {itemid} has "
                              f"{len(sample.ios)} I/O pairs")
    pair = sample.ios[ioid]
    if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
        return Target(problem=f'{here}: pair {ioid} of sample {itemid} has no "input"/"output"')
    return Target(kind, pair["input"], pair["output"], sample.refcode, sample=sample,
                  func=sample.func)


def check_output_prediction(text: str, target: Target, rule: str = answers.METHOD) -> dict:
    answer = answers.extract_answer(text, "output", rule)
    if answer.value is None:
        return res(st.NO_ANSWER, msg_no_answer("output", answer.reason))
    pred = answer.value["output"]
    if json_equal(target.expected, pred):
        return res(st.SUCCESS, MSG_SUCCESS)
    return res(st.WRONG_ANSWER, msg_output_wrong(target.inp, pred))


def predicted_input(text: str, rule: str = answers.METHOD) -> tuple[Any, dict | None]:
    """The predicted input of an input-prediction answer, or (None, res) when unusable.

    Any JSON value is an input: an object is passed as keyword arguments, anything else as
    the one argument (the method's convention), so no input is refused for its shape.
    """
    answer = answers.extract_answer(text, "input", rule)
    if answer.value is None:
        return None, res(st.NO_ANSWER, msg_no_answer("input", answer.reason))
    return answer.value["input"], None


def judge_run(pred: Any, job: Any, expected: Any, timeout_s: float,
              func: str = DEFAULT_FUNC) -> dict:
    """Verdict on the reference code run on a predicted input (`job`: a JobResult)."""
    if job.status != st.SUCCESS:
        cpu = job.status == st.TIMEOUT and job.error_type == st.LIMIT_CPU
        return res(job.status, msg_from_job(job, timeout_s, func), st.LIMIT_CPU if cpu else None)
    if json_equal(expected, job.value):
        return res(st.SUCCESS, MSG_SUCCESS)
    return res(st.WRONG_ANSWER, msg_input_wrong(pred, job.value, expected, func))


# --- the stream ------------------------------------------------------------------------

CACHE_WEIGHT = 2_000_000   # ExecCache: results kept, in JSON values (about 64 MB of them)


class ExecCache:
    """Futures of executions keyed by (sha256 of code, function called, canonical input).

    Identical predictions share one execution, even while it is still running. Bounded:
    at most `max_entries` entries and `max_weight` (about the number of JSON values and
    32-character pieces of strings) in the finished results kept; the oldest finished
    entries go first. Reference code can return megabytes for a predicted input, so a
    result larger than the whole budget reaches the records waiting on it and is not kept
    (an identical prediction later runs again).
    """

    def __init__(self, submit: Callable[[str, Any, str], Future], max_entries: int = 10_000,
                 max_weight: int = CACHE_WEIGHT):
        self._submit = submit
        self._futures: OrderedDict[tuple[str, str, str], Future] = OrderedDict()
        self._weights: dict[tuple[str, str, str], int] = {}
        self.weight = 0
        self.max_entries = max_entries
        self.max_weight = max_weight
        self._lock = threading.Lock()    # results arrive in the executor's threads
        self.hits = 0
        self.runs = 0

    def get(self, code: str, inp: Any, func: str = DEFAULT_FUNC) -> Future:
        key = exec_key(code, inp) + (func,)
        with self._lock:
            fut = self._futures.get(key)
            if fut is not None and _executor_failed(fut):
                fut = None      # the executor's fault, not the code's: run it again
            if fut is not None:
                self.hits += 1
                self._futures.move_to_end(key)
                return fut
        fut = _slim(self._submit(code, inp, func))
        self.runs += 1
        with self._lock:
            self.weight -= self._weights.pop(key, 0)
            self._futures[key] = fut
            self._futures.move_to_end(key)
            self._evict()
        fut.add_done_callback(lambda f: self._finished(key, f))
        return fut

    def _finished(self, key: tuple[str, str, str], fut: Future) -> None:
        weight = _weight(fut, self.max_weight)
        with self._lock:
            if self._futures.get(key) is not fut:
                return
            self._weights[key] = weight
            self.weight += weight
            self._evict()

    def _evict(self) -> None:
        over_n = len(self._futures) - self.max_entries
        over_w = self.weight - self.max_weight
        drop = []
        for key, fut in self._futures.items():
            if over_n <= 0 and over_w <= 0:
                break
            if fut.done() and key in self._weights:
                drop.append(key)
                over_n -= 1
                over_w -= self._weights[key]
        for key in drop:
            del self._futures[key]
            self.weight -= self._weights.pop(key)


def _weight(fut: Future, cap: int) -> int:
    """Size of the values of a finished execution: JSON values plus string lengths / 32
    (counted up to `cap` + 1)."""
    if fut.exception() is not None:
        return 1
    total = 0
    stack = [j.value for j in fut.result()]
    while stack and total <= cap:
        v = stack.pop()
        total += 1
        if isinstance(v, str):
            total += len(v) // 32
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            total += len(v)
            stack.extend(v.values())
    return total


def _executor_failed(fut: Future) -> bool:
    """A finished execution that failed through the executor (a worker died), not the code."""
    if not fut.done() or fut.exception() is not None:
        return False
    return any(j.status == st.NOT_RUNNABLE and j.error_type == st.EXECUTOR_ERROR
               for j in fut.result())


def _slim(fut: Future) -> Future:
    """A future of the same results without their captured stdout/stderr (kept in the cache)."""
    slim: Future = Future()

    def done(f: Future) -> None:
        try:
            slim.set_result([dataclasses.replace(j, stdout="", stderr="") for j in f.result()])
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on `slim`
            slim.set_exception(exc)

    fut.add_done_callback(done)
    return slim


class CallBatcher:
    """Groups executions of the same code (and entry point) into one executor job.

    `submit(code, inp, func)` returns at once a Future of a one-JobResult list, like
    ``executor.run_calls(code, [inp], func=func)``. While fewer than `parallel` jobs are running or
    queued (a worker would be idle) a call is sent at once, alone: batching two slow calls
    would run them one after the other instead of side by side. Otherwise the calls wait in
    a buffer that is sent as ONE ``run_calls(code, inputs, func)`` job when a call of other
    code or another function arrives, when it holds `max_calls`, or on `flush` (a caller about to wait must flush
    first). `run_calls` must
    run each call as if alone (the executor's ``fresh=True``) and return one JobResult per
    input in order: result k goes to the future of the k-th buffered call of THAT job, each
    call keeping its own future, so a verdict can only land on the call it belongs to.
    """

    def __init__(self, run_calls: Callable[[str, list, str], Future], max_calls: int = 16,
                 parallel: int = 0):
        self._run_calls = run_calls
        self.max_calls = max(1, max_calls)
        self.parallel = parallel
        self._code: tuple[str, str] | None = None      # (code, func) of the buffer
        self._buffer: list[tuple[Any, Future]] = []
        self._lock = threading.Lock()
        self._in_flight = 0     # jobs sent and not finished (finished in executor threads)
        self.jobs = 0

    def submit(self, code: str, inp: Any, func: str = DEFAULT_FUNC) -> Future:
        if self._buffer and (code, func) != self._code:
            self.flush()
        fut: Future = Future()
        self._code = (code, func)
        self._buffer.append((inp, fut))
        if len(self._buffer) >= self.max_calls or self._in_flight < self.parallel:
            self.flush()
        return fut

    def flush(self) -> None:
        if not self._buffer:
            return
        calls, self._buffer = self._buffer, []
        self.jobs += 1
        try:
            job = self._run_calls(self._code[0], [inp for inp, _ in calls], self._code[1])
        except BaseException as exc:  # noqa: BLE001 - handed to every call of the job
            for _, fut in calls:
                fut.set_exception(exc)
            raise
        with self._lock:
            self._in_flight += 1

        def done(f: Future) -> None:
            with self._lock:
                self._in_flight -= 1
            try:
                results = f.result()
                if len(results) != len(calls):
                    raise RuntimeError(f"executor returned {len(results)} results for "
                                       f"{len(calls)} inputs")
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                for _, fut in calls:
                    fut.set_exception(exc)
                return
            for (_, fut), result in zip(calls, results):
                fut.set_result([result])

        job.add_done_callback(done)


@dataclass
class _Entry:
    record: dict
    res: dict | None = None
    future: Future | None = None    # of the verdict (res) of an execution


def _verdict(execution: Future, pred: Any, expected: Any, timeout_s: float,
             func: str) -> Future:
    """A future of the verdict on `execution` (a future of one JobResult), judged as soon
    as it finishes: a record waiting to be written holds its verdict, not the result,
    which may be megabytes of JSON."""
    verdict: Future = Future()

    def done(f: Future) -> None:
        try:
            jobs = f.result()
            if len(jobs) != 1:
                raise RuntimeError(f"executor returned {len(jobs)} results for one input")
            verdict.set_result(judge_run(pred, jobs[0], expected, timeout_s, func))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            verdict.set_exception(exc)

    execution.add_done_callback(done)
    return verdict


class Verifier:
    """Verify a stream of gens records in order with a bounded window of executions.

    `submit(code, inp, func)` must return a Future of a list holding one JobResult (e.g.
    ``lambda c, x, f: executor.run_calls(c, [x], func=f)``); it is called only for input predictions,
    so a file of output predictions never starts an executor. `flush`, when given, is called
    before waiting on a future and whenever a record is of another sample than the one
    before (for a `CallBatcher`: its buffered calls start running).

    `window` bounds the records waiting on an execution; `buffered` (default 8 x `window`)
    bounds all records held, verdicts included. Records are written in order, so a slow
    execution at the head holds back the records after it: they wait in the buffer while
    the executions after it keep running, instead of stopping the stream.
    """

    def __init__(self, parsed: ParsedIndex, submit: Callable[[str, Any, str], Future], *,
                 timeout_s: float, window: int = 256, cache_entries: int = 10_000,
                 use_recorded: bool = True, flush: Callable[[], None] | None = None,
                 buffered: int | None = None, answer_rule: str = answers.METHOD):
        if answer_rule not in answers.RULES:
            raise ValueError(f"unknown answer rule {answer_rule!r}")
        self.answer_rule = answer_rule
        self.parsed = parsed
        self._flush = flush or (lambda: None)
        self._last_item: Any = None
        self.use_recorded = use_recorded
        self.recorded_hits = 0
        self.cache = ExecCache(submit, cache_entries)
        self.timeout_s = timeout_s
        self.window = max(1, window)
        self.buffered = max(self.window, buffered or 8 * self.window)
        self.counts: Counter[str] = Counter()

    def check(self, record: dict, here: str) -> _Entry:
        """Start checking one record: a verdict now, or a future for an input prediction."""
        entry = _Entry(record)
        itemid = record.get("itemid")
        if itemid != self._last_item:
            self._last_item = itemid
            self._flush()   # the calls of the sample before need not wait for more
        target = locate(record, self.parsed, here)
        text = record.get("output")
        if text is not None and not isinstance(text, str) and not target.problem:
            # not a model's answer (inference writes text): a broken record, not a verdict
            # to give feedback on
            target.problem = f'{here}: "output" should be a string, got {type(text).__name__}'
        if target.problem:
            log.warning("%s; marked %s", target.problem, st.NOT_RUNNABLE)
            entry.res = res(st.NOT_RUNNABLE, f"This prediction could not be checked: "
                                             f"{target.problem.split(': ', 1)[-1]}.")
            return entry
        if text is None or not text.strip():
            entry.res = res(st.NO_ANSWER, msg_no_answer("output" if target.kind == "o" else "input"))
            return entry
        if target.kind == "o":
            entry.res = check_output_prediction(text, target, self.answer_rule)
            return entry
        pred, bad = predicted_input(text, self.answer_rule)
        if bad is not None:
            entry.res = bad
            return entry
        if self.use_recorded:
            # a recorded pair is the truth output predictions are judged by: no need to run
            got = target.sample.recorded.get(canonical(pred), _AMBIGUOUS)
            if got is not _AMBIGUOUS:
                self.recorded_hits += 1
                entry.res = (res(st.SUCCESS, MSG_SUCCESS) if json_equal(target.expected, got)
                             else res(st.WRONG_ANSWER,
                                      msg_input_wrong(pred, got, target.expected, target.func)))
                return entry
        entry.future = _verdict(self.cache.get(target.refcode, pred, target.func), pred,
                                target.expected, self.timeout_s, target.func)
        return entry

    def _finish(self, entry: _Entry) -> dict:
        if entry.res is None:
            if not entry.future.done():
                self._flush()   # it may be in the batch still being filled
            entry.res = entry.future.result()
        out = dict(entry.record)
        out["res"] = entry.res
        self.counts[entry.res["status"]] += 1
        return out

    def run(self, items: Iterable[tuple[str, dict, dict | None]]) -> Iterator[dict]:
        """`items`: (``file:line``, gens record, verdict to reuse or None). Yields every record
        with ``res`` set, in the order given."""
        pending: deque[_Entry] = deque()
        running = 0     # entries of `pending` that wait on an execution
        for here, record, reuse in items:
            if reuse is not None:
                entry = _Entry(record, res=reuse)
                self.counts[st.REUSED] += 1
            else:
                entry = self.check(record, here)
            pending.append(entry)
            running += entry.future is not None
            # write what is ready; block on the oldest only when a bound is reached
            while pending and (pending[0].future is None or pending[0].future.done()
                               or running >= self.window or len(pending) >= self.buffered):
                entry = pending.popleft()
                running -= entry.future is not None
                yield self._finish(entry)
        while pending:
            yield self._finish(pending.popleft())


def identity(record: dict) -> tuple:
    """What makes two gens lines the same prediction (used to reuse an earlier verdict)."""
    return (record.get("itemid"), record.get("ioid"), record.get("io_pred"), record.get("output"))


def load_dependent(verdict: dict) -> bool:
    """Whether load on the machine could have caused `verdict` (a res): a wall stop
    (status.WALL_TIMEOUT), or a timeout without ``limit == "cpu"``, which another
    implementation wrote under a wall-clock limit (the method's own files). A timeout of
    ours used its whole CPU budget: final, never re-checked."""
    status = verdict.get("status")
    return status == st.WALL_TIMEOUT or (status == st.TIMEOUT
                                         and verdict.get("limit") != st.LIMIT_CPU)


def reusable(previous: Any, recheck: set[str]) -> dict | None:
    """A previous verdict worth keeping: one of ours (a status of `status.VERDICTS`) or of
    the original implementation (`status.ORIGINAL_VERDICTS`, kept as written), well formed,
    not one to re-check: its status is not in `recheck`, nor (with `status.RECHECK_LOAD` in
    it) one that load could have caused (`load_dependent`: the original's "timeout", written
    under a wall-clock limit, is re-checked). Verdicts of other tools are checked again."""
    if not isinstance(previous, dict):
        return None
    verdict, message = previous.get("status"), previous.get("message")
    if verdict in st.ORIGINAL_VERDICTS and message is None:
        message = ""        # the original's verdicts need not carry a message
    if (verdict in st.VERDICTS or verdict in st.ORIGINAL_VERDICTS) and isinstance(message, str) \
            and verdict not in recheck \
            and not (st.RECHECK_LOAD in recheck and load_dependent(previous)):
        return {**previous, "message": message}
    return None
