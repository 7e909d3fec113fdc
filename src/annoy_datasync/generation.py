"""Recording true I/O pairs from unified responses (the library behind ``parse_gen_ios.py``).

One sample goes through these executor jobs:

1. the generator job (`Executor.run_generator`): the main code plus the input generator,
   random state seeded from ``(--seed, msgidx)``; up to ``max_ios + spares`` distinct inputs,
   each passed to ``main_solution`` as a JSON copy;
2. the re-check job, in a SECOND pool started with another hash seed, with another random
   seed: every candidate pair is run again as a fresh-state call (`Executor.run_fresh`: the
   code executed anew before each call, so globals left by earlier calls are gone). A pair
   whose output is not exactly the same JSON (`compare.canonical`, which tells ``3`` from
   ``3.0``) is dropped as ``pair_not_reproducible``: its output depends on chance, the clock,
   set order or the state left by earlier calls, and nobody can predict it by reasoning;
3. only when a surviving call drew from the global state of ``random`` or ``numpy.random``
   or read a clock (``time``'s clocks, ``datetime.now`` ...; the module body counts): its
   output may have matched by luck (the maximum of many random draws; a duration below the
   clock's resolution, or measured with a clock that stood still). The survivors run
   RESEEDS = 4 more times, each with its own seed and with every clock warped (another
   instant, durations stretched, a tick per read), and must give the same JSON every time.
   Randomness the executor cannot see (``numpy.random.default_rng()`` without a seed,
   ``os.urandom``) is caught only when it changes the output of a re-run;
4. only for code that may depend on set order (`may_depend_on_hash_order`: it builds sets,
   calls hash() or imports sympy): the survivors run once more under each further hash seed
   (one small pool per seed, parse_gen_ios.HASH_SEEDS) and must give the same JSON under
   every one. Str hashes follow the hash seed; a pair whose output follows the order of a
   2-element set of str matches under a random seed half the time, so with 1 + 8 other
   seeds it survives with probability 1/512.

The re-check jobs of up to 4 samples bound for one pool are merged into one sandboxed job
(`Rechecker`); each call still runs as if alone, so the output files are the same.

Size bounds of a kept pair (`Bounds`, checked on the input and on the output separately):
at most 1024 bytes of JSON, lists of at most 64 items, strings of at most 256 characters,
nesting of at most 6 lists/dicts (the kwargs dict counts as one). Larger pairs are dropped
as ``pair_too_large``: the model must read and write them. The rule is decided here, on the
canonical JSON; the generator job only leaves out pairs far over it (`SEND_FACTOR`), so
that a generator of huge inputs costs no one their JSON.

A sample keeps its first ``max_ios`` surviving pairs (generation order) and is dropped when
fewer than 2 survive. Everything recorded depends only on the code, ``--seed`` and msgidx,
not on the number of workers or timing (except when a time limit cuts a run short).

A job that failed through the executor's fault (its sandbox worker died: ``error_type ==
status.EXECUTOR_ERROR``) neither keeps nor drops the sample: its outcome is `retry`, nothing
is written, and a rerun tries the sample again.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from . import sections
from . import status as st
from .compare import canonical
from .executor import GEN_TOO_LARGE, Call
from .jsonl import read_jsonl

MIN_IOS = 2
# The generator job sends back only pairs whose input and output are each at most SEND_FACTOR
# x Bounds.max_bytes long as it writes them; the others it counts as too large. Its text
# (json.dumps defaults) is at most 3 x the canonical UTF-8 bytes of the same value: a
# character outside ASCII is 6 or 12 bytes as an escape, 2 to 4 in UTF-8; ", " and ": " are
# 2 bytes, 1 in canonical JSON; the rest is the same. So a pair it leaves out has more than
# 4096 / 3 > 1024 canonical bytes: Bounds would drop it too, and the output files stay the same.
SEND_FACTOR = 4
RESEEDS = 4   # extra re-runs, each with its own seed and warped clocks, of pairs whose code
              # drew random numbers or read a clock


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


_SET_OPS = (ast.BitAnd, ast.BitOr, ast.BitXor, ast.Sub)
_ORDER_MODULES = {"sympy", "networkx"}   # their results follow set orders of their own
# What a set may go through without its order showing: order-free functions, membership and
# comparisons, methods that change it in place or answer a yes/no question.
_ORDER_FREE_CALLS = {"len", "sorted", "min", "max", "sum", "any", "all", "bool"}
_ORDER_FREE_METHODS = {"add", "discard", "remove", "update", "clear", "issubset", "issuperset",
                       "isdisjoint", "difference_update", "intersection_update",
                       "symmetric_difference_update"}


def may_depend_on_hash_order(code: str) -> bool:
    """Whether the code could compute something from the iteration order of a set (which
    follows the hashes of its items, and str hashes change with PYTHONHASHSEED).

    True when it calls hash() or defines __hash__, imports a library that orders results by
    sets itself (sympy), or builds a set or frozenset (literal, comprehension, set(),
    frozenset(), a set operation on dict views) that it may iterate: a set kept in a plain
    name or attribute counts only if some use of that name is not order-free (``in``,
    comparisons, len/sorted/min/max/sum/any/all, add/discard/remove/update ...). Uses are
    matched by name across the whole code, which errs towards True. False for code that
    cannot depend on set order: its re-checks under other hash seeds would be wasted work."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    parent: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parent[child] = node
    loads: dict[str, list[ast.AST]] = {}   # name or attribute name -> its reads
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            loads.setdefault(node.id, []).append(node)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            loads.setdefault("." + node.attr, []).append(node)
    checked: set[str] = set()

    def order_free(expr: ast.AST) -> bool:
        """Whether the set that `expr` evaluates to is used only in order-free ways."""
        up = parent.get(expr)
        if isinstance(up, ast.Call) and expr in up.args and isinstance(up.func, ast.Name) \
                and up.func.id in _ORDER_FREE_CALLS:
            return True
        if isinstance(up, ast.Compare):
            return all(not isinstance(op, (ast.In, ast.NotIn)) or up.left is not expr
                       for op in up.ops)
        if isinstance(up, ast.Attribute) and up.attr in _ORDER_FREE_METHODS:
            return isinstance(parent.get(up), ast.Call)
        if isinstance(up, ast.BinOp) and isinstance(up.op, _SET_OPS):
            return order_free(up)          # another set: where does it go?
        if isinstance(up, ast.AugAssign) and up.value is expr:
            return True                    # s |= expr: the target is checked by its reads
        if isinstance(up, (ast.Assign, ast.AnnAssign)) and up.value is expr:
            targets = up.targets if isinstance(up, ast.Assign) else [up.target]
            keys = [t.id if isinstance(t, ast.Name) else "." + t.attr
                    for t in targets if isinstance(t, (ast.Name, ast.Attribute))]
            if len(keys) != len(targets):
                return False               # unpacked, subscripted: not followed
            for key in keys:
                if key not in checked:
                    checked.add(key)
                    if not all(order_free(use) for use in loads.get(key, [])):
                        return False
            return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "hash":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "__hash__" or \
                isinstance(node, ast.FunctionDef) and node.name == "__hash__":
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            if any(n.split(".")[0] in _ORDER_MODULES for n in names):
                return True
        builds = isinstance(node, (ast.Set, ast.SetComp)) or (
            isinstance(node, ast.BinOp) and isinstance(node.op, _SET_OPS) and any(
                isinstance(x, ast.Call) and isinstance(x.func, ast.Attribute)
                and x.func.attr in ("keys", "items") for x in (node.left, node.right)))
        if isinstance(node, ast.Name) and node.id in ("set", "frozenset"):
            up = parent.get(node)
            if not (isinstance(up, ast.Call) and up.func is node):
                return True                # e.g. defaultdict(set): its sets are not followed
            builds, node = True, up
        if builds and not order_free(node):
            return True
    return False


class Rechecker:
    """Submits the re-check jobs of samples (`Executor.run_fresh`, watched: each call runs
    as if alone and says whether it drew random numbers or read a clock), merging those of
    up to `max_samples` samples bound for the same pool into one sandboxed job (each job
    costs a fork and a teardown of the sandbox, a large share of a light sample's cost:
    README, "Benchmarks"). Jobs are held until `max_samples` are there, or until the driver
    would otherwise wait on held jobs alone (`flush`).

    A merged job differs from separate ones only in what the samples' calls share: the
    process (modules a code changes, files, memory). Each call still starts from a fresh
    namespace and its own seed, so results, and output files, are the same. If a merged
    job fails in the executor, its samples are re-run one job each.
    """

    def __init__(self, check_pool: Any, hash_pools: list[Any] = (), max_samples: int = 4):
        self.check_pool = check_pool         # the re-check pool (another hash seed)
        self.hash_pools = list(hash_pools)   # one pool per further hash seed
        self.max_samples = max(1, max_samples)
        self.held: dict[int, tuple[Any, list[tuple[str, list[Call], Future]]]] = {}
        self.parts: dict[Future, list[Future]] = {}   # a future of several pools: its parts

    def run(self, pool: Any, code: str, calls: list[Call]) -> Future:
        """The results of `calls` (each of code 0) of `code`, run in `pool` (a callable
        returning the Executor)."""
        fut: Future = Future()
        _, held = self.held.setdefault(id(pool), (pool, []))
        held.append((code, calls, fut))
        if len(held) >= self.max_samples:
            del self.held[id(pool)]
            self._submit(pool, held)
        return fut

    def run_each(self, pools: list[Any], code: str, calls: list[Call]) -> Future:
        """`calls` in each of `pools`: one future of all their results, pool after pool."""
        parts = [self.run(pool, code, calls) for pool in pools]
        whole: Future = Future()
        self.parts[whole] = parts
        left = [len(parts)]

        def one_done(_: Future) -> None:
            left[0] -= 1
            if left[0]:
                return
            self.parts.pop(whole, None)
            try:
                whole.set_result([r for p in parts for r in p.result()])
            except BaseException as exc:  # noqa: BLE001
                whole.set_exception(exc)

        for p in parts:
            p.add_done_callback(one_done)
        return whole

    def holds(self, fut: Future) -> bool:
        futs = self.parts.get(fut, [fut])
        return any(h[2] is f for _, held in self.held.values() for h in held for f in futs)

    def flush(self) -> None:
        held, self.held = self.held, {}
        for pool, jobs in held.values():
            self._submit(pool, jobs)

    def _submit(self, pool: Any, held: list) -> None:
        codes = [h[0] for h in held]
        calls = [replace(c, code=k) for k, (_, cs, _) in enumerate(held) for c in cs]
        job = pool().run_fresh(codes, calls, watch=True)

        def split(j: Future) -> None:
            try:
                results = j.result()
            except BaseException as exc:  # noqa: BLE001
                if len(held) == 1:
                    held[0][2].set_exception(exc)
                    return
                results = None
            if len(held) > 1 and (results is None or len(results) != len(calls) or any(
                    r.error_type == st.EXECUTOR_ERROR for r in results)):
                for h in held:        # each sample gets its own job and chance
                    try:
                        self._submit(pool, [h])
                    except BaseException as exc:  # noqa: BLE001 - e.g. the pool closed
                        h[2].set_exception(exc)
                return
            at = 0
            for _, cs, fut in held:
                fut.set_result(results[at:at + len(cs)])
                at += len(cs)

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
    u = sections.parse_unified(text)
    if not u.main_code or not sections.defines_function(u.main_code, sections.MAIN_FUNC):
        return Sections(drop=st.DROP_NO_MAIN, detail="no main_solution in a Main Function code block")
    if not u.generator_code or not sections.defines_function(u.generator_code, sections.GENERATOR_FUNC):
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
    if error == GEN_TOO_LARGE:
        return st.PAIR_TOO_LARGE
    return st.PAIR_NON_JSON if error == st.NON_JSON else st.PAIR_ERROR


@dataclass
class SampleOutcome:
    """Final result of one sample: a parsed record (kept), a drop record, or `retry` (why
    the executor failed; write nothing, a rerun tries the sample again)."""
    kept: dict | None = None
    dropped: dict | None = None
    pair_drops: Counter = field(default_factory=Counter)
    retry: str = ""


@dataclass
class GenerationSettings:
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

    def __init__(self, record: dict, msgidx: int, settings: GenerationSettings):
        self.record = record
        self.msgidx = msgidx
        self.settings = settings
        self.sections = sections_of(record)
        self.candidates: list[dict] = []
        self.pair_drops: Counter[str] = Counter()
        self.future: Future | None = None
        self.outcome: SampleOutcome | None = None
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
            max_pairs=s.max_ios + s.spares, budget_s=s.budget_s,
            pair_bytes=SEND_FACTOR * s.bounds.max_bytes)

    def advance(self, rechecker: Rechecker) -> None:
        fut, self.future = self.future, None
        if self._stage == "gen":
            self._after_generation(fut.result(), rechecker)
        else:
            self._after_recheck(fut.result())

    def _after_generation(self, gen: Any, rechecker: Rechecker) -> None:
        if getattr(gen, "error_type", None) == st.EXECUTOR_ERROR:
            self.outcome = SampleOutcome(retry=gen.message or gen.status)
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
        self._rc = rechecker
        seed = derive_seed(self.settings.seed, self.msgidx, "recheck")
        self.future = rechecker.run(rechecker.check_pool, self.sections.main_code,
                                    [Call(c["input"], seed=seed) for c in self.candidates])

    def _after_recheck(self, jobs: list) -> None:
        """Keep the candidates whose re-runs all gave the same JSON. Then, once: if a kept
        one drew from the global random state or read a clock, run the survivors RESEEDS
        more times with other seeds and warped clocks; if the code may depend on set order,
        run them under each further hash seed."""
        runs = len(jobs) // max(1, len(self.candidates))
        if len(jobs) != runs * len(self.candidates) or not jobs:
            raise RuntimeError(f"executor returned {len(jobs)} results for {len(self.candidates)} inputs")
        failed = next((j for j in jobs if j.error_type == st.EXECUTOR_ERROR), None)
        if failed is not None:   # not the code's fault: no pair is judged by this run
            self.outcome = SampleOutcome(retry=failed.message)
            return
        survivors, chance = [], False
        for k, pair in enumerate(self.candidates):
            ok = True
            for r in range(runs):
                job = jobs[r * len(self.candidates) + k]
                if job.status != st.SUCCESS or canonical(job.value) != canonical(pair["output"]):
                    ok = False
                    break
                chance = chance or job.drew_random or job.read_clock
            if ok:
                survivors.append(pair)
            else:
                self.pair_drops[st.PAIR_NOT_REPRODUCIBLE] += 1
        self.candidates = survivors
        if len(survivors) < MIN_IOS:
            self._too_few()
            return
        code, rc = self.sections.main_code, self._rc
        seed = derive_seed(self.settings.seed, self.msgidx, "recheck")
        if chance and self._stage == "recheck":
            # its output may match by chance (the maximum of many draws, a duration below
            # the clock's resolution): demand the same answer under other seeds and clocks
            self._stage = "reseed"
            base = derive_seed(self.settings.seed, self.msgidx, "reseed")
            self.future = rc.run(rc.check_pool, code, [
                Call(c["input"], seed=base + r, warp_clock=True)
                for r in range(RESEEDS) for c in survivors])
            return
        if self._stage != "hash" and rc.hash_pools and may_depend_on_hash_order(code):
            self._stage = "hash"
            self.future = rc.run_each(rc.hash_pools, code,
                                      [Call(c["input"], seed=seed) for c in survivors])
            return
        kept = survivors[: self.settings.max_ios]
        self.candidates = kept
        s = self.sections
        self.outcome = SampleOutcome(kept={
            "problem_description": s.problem,
            "io_requirements": s.io_description,
            "refcode": s.main_code,
            "funcname": sections.MAIN_FUNC,
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
        self.outcome = SampleOutcome(dropped={
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
