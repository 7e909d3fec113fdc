"""Recording true I/O pairs from unified responses (the library behind ``parse_gen_ios.py``).

One sample goes through two executor jobs:

1. the generator job (`Executor.run_generator`): the main code plus the input generator,
   random state seeded from ``(--seed, msgidx)``; up to ``max_ios + spares`` distinct inputs,
   each passed to ``main_solution`` as a JSON copy;
2. the re-check job, in a SECOND pool started with another hash seed, with another random
   seed: every candidate pair is run again, each call in a fresh module namespace (the code
   is executed anew before each call, so globals left by earlier calls are gone). A pair whose
   output is not exactly the same JSON (`compare.canonical`, which tells ``3`` from ``3.0``) is
   dropped as ``pair_not_reproducible``: its output depends on chance, the clock, set order or
   the state left by earlier calls, and nobody can predict it by reasoning;
3. only when a surviving call drew from the global state of ``random`` or ``numpy.random``
   or read the clock through ``time`` (its output may have matched by luck, e.g. the maximum
   of many random draws, or a duration below the clock's resolution): the
   survivors run RESEEDS = 4 more times, each with its own seed, and must give the same JSON
   every time. Randomness the wrapper cannot see (``numpy.random.default_rng()`` without a
   seed, ``os.urandom``, ``datetime.now()``) is caught only when it changes the output of a re-run.

Size bounds of a kept pair (`Bounds`, checked on the input and on the output separately):
at most 1024 bytes of JSON, lists of at most 64 items, strings of at most 256 characters,
nesting of at most 6 lists/dicts (the kwargs dict counts as one). Larger pairs are dropped
as ``pair_too_large``: the model must read and write them.

A sample keeps its first ``max_ios`` surviving pairs (generation order) and is dropped when
fewer than 2 survive. Everything recorded depends only on the code, ``--seed`` and msgidx,
not on the number of workers or timing (except when a time limit cuts a run short).

A job that failed through the executor's fault (its sandbox worker died: ``error_type ==
status.EXECUTOR_ERROR``) neither keeps nor drops the sample: its outcome is `retry`, nothing
is written, and a rerun tries the sample again.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from . import extract
from . import status as st
from .compare import canonical
from .jsonl import read_jsonl

FUNCNAME = "main_solution"
MIN_IOS = 2
RESEEDS = 4   # extra re-runs, each with its own seed, of pairs whose code drew random numbers

_HAS_MAIN = re.compile(r"^def\s+main_solution\s*\(", re.M)
_HAS_GEN = re.compile(r"^def\s+input_generator\s*\(", re.M)

# The re-check job's module (after `code` is compiled, not run): call main_solution from a
# fresh module namespace, optionally re-seeding random and numpy.random first, and report
# whether the call drew from their global random state or read the clock (time.time,
# perf_counter, monotonic ...).
_FRESH_CALL = '''

def __annoy_watch_clock__():
    import time
    if getattr(time, "__annoy_clock_reads__", None) is not None:
        return
    time.__annoy_clock_reads__ = [0]
    for name in ("time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic",
                 "monotonic_ns", "process_time", "process_time_ns"):
        original = getattr(time, name, None)
        if original is None:
            continue

        def counted(*args, __original=original):
            time.__annoy_clock_reads__[0] += 1
            return __original(*args)

        setattr(time, name, counted)


__annoy_watch_clock__()


def __annoy_random_state__():
    import random
    import time
    state = [random.getstate(), time.__annoy_clock_reads__[0]]
    try:
        import numpy
        key = numpy.random.get_state()
        state.append((key[1].tobytes(), key[2], key[3], key[4]))
    except Exception:
        pass
    return state


def __annoy_fresh_call__(__annoy_kwargs__, __annoy_reseed__=None):
    if __annoy_reseed__ is not None:
        import random
        random.seed(__annoy_reseed__)
        try:
            import numpy
            numpy.random.seed(__annoy_reseed__ % 2 ** 32)
        except Exception:
            pass
    namespace = {"__name__": __name__, "__builtins__": __builtins__}
    exec(__annoy_compiled__, namespace)
    before = __annoy_random_state__()
    out = namespace["main_solution"](**__annoy_kwargs__)
    return {"out": out, "random": __annoy_random_state__() != before}
'''


@dataclass(frozen=True)
class Bounds:
    max_bytes: int = 1024     # JSON text of the input (kwargs dict) or of the output, in UTF-8
    max_list: int = 64        # items of any list, entries of any dict
    max_str: int = 256        # characters of any string (dict keys included)
    max_depth: int = 6        # nested lists / dicts

    def violation(self, value: Any) -> str | None:
        """Why `value` is too large to record, or None."""
        size = len(canonical(value).encode("utf-8"))
        if size > self.max_bytes:
            return f"{size} bytes of JSON > {self.max_bytes}"
        stack = [(value, 0)]
        while stack:
            v, depth = stack.pop()
            if isinstance(v, str):
                if len(v) > self.max_str:
                    return f"a string of {len(v)} characters > {self.max_str}"
            elif isinstance(v, (list, dict)):
                if depth + 1 > self.max_depth:
                    return f"nesting deeper than {self.max_depth}"
                if len(v) > self.max_list:
                    return f"a {'list' if isinstance(v, list) else 'dict'} of {len(v)} items > {self.max_list}"
                items = v if isinstance(v, list) else [*v.keys(), *v.values()]
                stack.extend((x, depth + 1) for x in items)
        return None


def derive_seed(seed: int, msgidx: int, purpose: str) -> int:
    """A 32-bit seed that depends only on (--seed, sample, purpose): stable across workers."""
    digest = hashlib.sha256(f"{seed}:{msgidx}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# Completes the re-check module (a job holds the re-checks of one sample or of several):
# which sample's compiled code a call runs, and that sample's seed for random and
# numpy.random before the call (the job itself is unseeded).
_SAMPLE_CALL = '''

def __annoy_sample_call__(__annoy_which__, __annoy_seed__, __annoy_kwargs__,
                          __annoy_reseed__=None):
    global __annoy_compiled__
    __annoy_compiled__ = __annoy_compiled_all__[__annoy_which__]
    import random
    import sys
    random.seed(__annoy_seed__)
    nprand = sys.modules.get("numpy.random")
    if nprand is not None:
        nprand.seed(__annoy_seed__ % (2 ** 32))
    return __annoy_fresh_call__(__annoy_kwargs__, __annoy_reseed__)
'''
SAMPLE_FUNC = "__annoy_sample_call__"


def recheck_code(codes: list[str]) -> str:
    """The re-check module of one or several samples: each code compiled once (not
    executed); a call runs one of them from a fresh namespace, seeded with its sample's seed."""
    compiled = "".join(f"    compile({c!r}, '<main_solution>', 'exec'),\n" for c in codes)
    return (f"__annoy_compiled_all__ = [\n{compiled}]\n__annoy_compiled__ = None\n"
            f"{_FRESH_CALL}{_SAMPLE_CALL}")


class Rechecker:
    """Submits re-check jobs to the check pool, merging those of up to `max_samples`
    samples into one sandboxed job (each job costs a fork and a teardown of the sandbox,
    about as much CPU as a light sample's calls). Jobs are held until `max_samples` are
    there, or until the driver would otherwise wait on held jobs alone (`flush`).

    A merged job differs from separate ones only in what the samples' calls share: the
    process (modules a code changes, files, memory). Each call still starts from a fresh
    namespace and its own sample's seed, so results, and output files, are the same. If a
    merged job fails in the executor, its samples are re-run one job each.
    """

    def __init__(self, pool: Any, max_samples: int = 4):
        self.pool = pool                 # a callable returning the Executor
        self.max_samples = max(1, max_samples)
        self.held: list[tuple[str, list[dict], int, Future]] = []

    def run(self, code: str, inputs: list[dict], seed: int) -> Future:
        fut: Future = Future()
        self.held.append((code, inputs, seed, fut))
        if len(self.held) >= self.max_samples:
            self.flush()
        return fut

    def holds(self, fut: Future) -> bool:
        return any(h[3] is fut for h in self.held)

    def flush(self) -> None:
        held, self.held = self.held, []
        if held:
            self._submit(held)

    def _submit(self, held: list) -> None:
        calls = [{"__annoy_which__": k, "__annoy_seed__": seed, **x}
                 for k, (_, inputs, seed, _) in enumerate(held) for x in inputs]
        job = self.pool().run_calls(recheck_code([h[0] for h in held]), calls,
                                    func=SAMPLE_FUNC, seed=None)

        def split(j: Future) -> None:
            try:
                results = j.result()
            except BaseException as exc:  # noqa: BLE001
                if len(held) == 1:
                    held[0][3].set_exception(exc)
                    return
                results = None
            if len(held) > 1 and (results is None or len(results) != len(calls) or any(
                    r.error_type == st.EXECUTOR_ERROR for r in results)):
                for h in held:        # each sample gets its own job and chance
                    try:
                        self._submit([h])
                    except BaseException as exc:  # noqa: BLE001 - e.g. the pool closed
                        h[3].set_exception(exc)
                return
            at = 0
            for _, inputs, _, fut in held:
                fut.set_result(results[at:at + len(inputs)])
                at += len(inputs)

        job.add_done_callback(split)


@dataclass
class Sections:
    """What a unified response yields, or the reason it is dropped."""
    main_code: str = ""
    gen_code: str = ""
    io_description: str = ""
    problem: str = ""
    drop: str = ""
    detail: str = ""


def sections_of(record: dict) -> Sections:
    text = record.get("output")
    if not isinstance(text, str) or not text.strip():
        return Sections(drop=st.DROP_NO_OUTPUT, detail='no "output" text')
    u = extract.parse_unified(text)
    if not u.main_code or not _HAS_MAIN.search(u.main_code):
        return Sections(drop=st.DROP_NO_MAIN, detail="no main_solution in a Main Function code block")
    if not u.generator_code or not _HAS_GEN.search(u.generator_code):
        return Sections(drop=st.DROP_NO_GENERATOR, detail="no input_generator in an Input Generator code block")
    missing = [name for name, text in (("Input Output Description", u.io_description),
                                       ("Problem Statement", u.problem_statement))
               if not text or not text.strip()]
    if missing:
        return Sections(drop=st.DROP_MISSING_SECTION, detail="missing: " + ", ".join(missing))
    return Sections(u.main_code, u.generator_code, u.io_description.strip(), u.problem_statement.strip())


def _pair_reason(error: str) -> str:
    """Pair drop reason for a per-call failure counted by the generator job."""
    if error == "duplicate":
        return st.PAIR_DUPLICATE
    return st.PAIR_NON_JSON if error == st.NON_JSON else st.PAIR_ERROR


@dataclass
class Outcome:
    """Final result of one sample: a parsed record (kept), a drop record, or `retry` (why
    the executor failed; write nothing, a rerun tries the sample again)."""
    kept: dict | None = None
    dropped: dict | None = None
    pair_drops: Counter = field(default_factory=Counter)
    retry: str = ""


@dataclass
class Settings:
    seed: int = 0
    max_ios: int = 10
    spares: int = 5
    max_calls: int = 50
    budget_s: float = 20.0
    bounds: Bounds = Bounds()


class SampleTask:
    """One sample's way through the generator job and the re-check job.

    `future` is the job being waited on (None when `outcome` is set). `advance` is called by
    the driver once `future` is done; it submits the next job or sets `outcome`.
    """

    def __init__(self, record: dict, msgidx: int, settings: Settings):
        self.record = record
        self.msgidx = msgidx
        self.settings = settings
        self.sections = sections_of(record)
        self.candidates: list[dict] = []
        self.pair_drops: Counter[str] = Counter()
        self.future: Future | None = None
        self.outcome: Outcome | None = None
        self._stage = ""

    def start(self, gen_pool: Any) -> None:
        if self.sections.drop:
            self._drop(self.sections.drop, self.sections.detail)
            return
        s = self.settings
        self._stage = "gen"
        self.future = gen_pool().run_generator(
            self.sections.main_code, self.sections.gen_code,
            seed=derive_seed(s.seed, self.msgidx, "generate"), max_calls=s.max_calls,
            max_pairs=s.max_ios + s.spares, budget_s=s.budget_s)

    def advance(self, check_pool: Any) -> None:
        fut, self.future = self.future, None
        if self._stage == "gen":
            self._after_generation(fut.result(), check_pool)
        else:
            self._after_recheck(fut.result())

    def _after_generation(self, gen: Any, check_pool: Any) -> None:
        if getattr(gen, "error_type", None) == st.EXECUTOR_ERROR:
            self.outcome = Outcome(retry=gen.message or gen.status)
            return
        for reason, n in (gen.errors or {}).items():
            self.pair_drops[_pair_reason(reason)] += n
        if gen.status != st.SUCCESS:
            self._drop(st.DROP_GEN_FAILED, gen.message or gen.status)
            return
        seen: set[str] = set()
        for pair in gen.pairs:
            inp, out = pair.get("input"), pair.get("output")
            if not isinstance(inp, dict):
                self.pair_drops[st.PAIR_ERROR] += 1
                continue
            key = canonical(inp)
            if key in seen:
                self.pair_drops[st.PAIR_DUPLICATE] += 1
                continue
            seen.add(key)
            bounds = self.settings.bounds
            if bounds.violation(inp) or bounds.violation(out):
                self.pair_drops[st.PAIR_TOO_LARGE] += 1
                continue
            self.candidates.append({"input": inp, "output": out})
        if len(self.candidates) < MIN_IOS:
            self._too_few()
            return
        self._stage = "recheck"
        self._check_pool = check_pool
        self.future = check_pool.run(
            self.sections.main_code, [{"__annoy_kwargs__": c["input"]} for c in self.candidates],
            derive_seed(self.settings.seed, self.msgidx, "recheck"))

    def _after_recheck(self, jobs: list) -> None:
        """Keep the candidates whose re-run gave the same JSON; if a kept one drew from the
        global random state, run the survivors RESEEDS more times with other seeds first."""
        runs = len(jobs) // max(1, len(self.candidates))
        if len(jobs) != runs * len(self.candidates) or not jobs:
            raise RuntimeError(f"executor returned {len(jobs)} results for {len(self.candidates)} inputs")
        failed = next((j for j in jobs if j.error_type == st.EXECUTOR_ERROR), None)
        if failed is not None:   # not the code's fault: no pair is judged by this run
            self.outcome = Outcome(retry=failed.message)
            return
        survivors, used_random = [], False
        for k, pair in enumerate(self.candidates):
            ok = True
            for r in range(runs):
                job = jobs[r * len(self.candidates) + k]
                value = job.value if job.status == st.SUCCESS and isinstance(job.value, dict) else {}
                if "out" not in value or canonical(value["out"]) != canonical(pair["output"]):
                    ok = False
                    break
                used_random = used_random or bool(value.get("random"))
            if ok:
                survivors.append(pair)
            else:
                self.pair_drops[st.PAIR_NOT_REPRODUCIBLE] += 1
        self.candidates = survivors
        if len(survivors) < MIN_IOS:
            self._too_few()
            return
        if used_random and self._stage == "recheck":
            # its output may match by chance: demand the same answer under more seeds
            self._stage = "reseed"
            base = derive_seed(self.settings.seed, self.msgidx, "reseed")
            inputs = [{"__annoy_kwargs__": c["input"], "__annoy_reseed__": base + r}
                      for r in range(RESEEDS) for c in survivors]
            self.future = self._check_pool.run(
                self.sections.main_code, inputs,
                derive_seed(self.settings.seed, self.msgidx, "recheck"))
            return
        kept = survivors[: self.settings.max_ios]
        self.candidates = kept
        s = self.sections
        self.outcome = Outcome(kept={
            "problem_description": s.problem,
            "io_requirements": s.io_description,
            "refcode": s.main_code,
            "funcname": FUNCNAME,
            "ios": kept,
            "category": self.record.get("category"),
            "meta": {"msgidx": self.msgidx, "pair_drops": dict(sorted(self.pair_drops.items()))},
            "input_generator": s.gen_code,
        }, pair_drops=self.pair_drops)

    def _too_few(self) -> None:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.pair_drops.items())) or "none"
        self._drop(st.DROP_FEW_IOS, f"{len(self.candidates)} pair(s) left, fewer than {MIN_IOS} "
                                    f"(pairs dropped: {drops})")

    def _drop(self, reason: str, detail: str) -> None:
        self.outcome = Outcome(dropped={
            "msgidx": self.msgidx, "reason": reason, "detail": detail,
            "pair_drops": dict(sorted(self.pair_drops.items())),
        }, pair_drops=self.pair_drops)


def done_ids(*paths: str) -> set[int]:
    """msgidx of samples already written to the given output / dropped files (resume)."""
    done: set[int] = set()
    for path in paths:
        if not os.path.exists(path):
            continue
        for _, rec in read_jsonl(path):
            meta = rec.get("meta")
            idx = rec.get("msgidx", meta.get("msgidx") if isinstance(meta, dict) else None)
            if isinstance(idx, int) and not isinstance(idx, bool):
                done.add(idx)
    return done
