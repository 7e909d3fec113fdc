"""Comparison of JSON values for verdicts, and canonical JSON for cache keys.

`json_equal(expected, actual)` is the one rule every verdict uses:

- ``None``, strings and booleans equal only themselves (``True`` is never ``1``);
- two integers are equal only when identical (arbitrary size, no tolerance);
- an expected integer matches a float only when the float has exactly that value
  (``3 == 3.0``, but ``3 != 3.0001``: integer answers are exact);
- an expected float matches an int or float within a relative tolerance of
  ``REL_TOL`` = 1e-3, or an absolute ``ABS_TOL`` = 1e-9 so that floating-point noise around
  zero (``1.2e-16`` for ``sin(pi)``) matches ``0.0``; ``inf`` matches the same infinity only,
  ``NaN`` matches only ``NaN``;
- lists (and tuples, which JSON turns into lists) are equal element by element, with the same
  length; dicts have the same keys and equal values under those keys.

The rule is asymmetric only for int against float: the recorded truth decides whether an
answer must be exact. `canonical(value)` is a deterministic JSON text (sorted keys, no spaces)
that tells apart ``3`` and ``3.0`` and key order never matters in it: the right key for caching
executions, and the exact equality used for "does this pair reproduce".
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

REL_TOL = 1e-3
ABS_TOL = 1e-9


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers_equal(expected: int | float, actual: int | float) -> bool:
    if isinstance(expected, int):
        # exact; Python compares int and float by exact value (no rounding of big ints)
        return expected == actual
    try:
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        if math.isinf(expected) or math.isinf(actual):
            return expected == actual
        return math.isclose(expected, actual, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    except OverflowError:  # an int too large for a float against a finite float
        return False


def json_equal(expected: Any, actual: Any) -> bool:
    """True when `actual` counts as equal to `expected` (the recorded truth); see module doc.

    Iterative, so deeply nested values cannot exhaust the recursion limit.
    """
    stack = [(expected, actual)]
    while stack:
        e, a = stack.pop()
        if _is_number(e):
            if not _is_number(a) or not _numbers_equal(e, a):
                return False
        elif e is None or isinstance(e, (bool, str)):
            if type(a) is not type(e) or a != e:
                return False
        elif isinstance(e, (list, tuple)):
            if not isinstance(a, (list, tuple)) or len(a) != len(e):
                return False
            stack.extend(zip(e, a))
        elif isinstance(e, dict):
            if not isinstance(a, dict) or len(a) != len(e):
                return False
            for k, v in e.items():
                if k not in a:
                    return False
                stack.append((v, a[k]))
        else:
            # not a JSON value (set, object ...): never equal, whatever its __eq__ says
            return False
    return True


# What a value executed code returns may hold, as the child checks it (sandbox_job.plain):
# the trusted side checks it again (`json_problem`), the child's check being the code's to fake.
MAX_DEPTH = 100
MAX_INT = 10 ** 100


def json_problem(value: Any) -> str | None:
    """Why `value` (decoded from JSON) is not a plain JSON value a job may return, or None.

    Plain: None, bool, str, int, float, list, dict with str keys, of exactly these types;
    strings are UTF-8 text (no lone surrogate: no file could hold them); ints have at most
    100 digits; floats are finite; nesting is at most `MAX_DEPTH` deep. Iterative.
    """
    if type(value) not in (list, dict):
        return _scalar_problem(value)
    stack = [(value, 0)]
    while stack:
        c, depth = stack.pop()
        if type(c) is dict:
            for k in c:
                if type(k) is not str or (not k.isascii() and _not_text(k)):
                    return "a dict key that is not UTF-8 text"
            items = c.values()
        else:
            items = c
        if depth >= MAX_DEPTH and c:
            return f"nesting deeper than {MAX_DEPTH}"
        for x in items:     # scalars in place: most of a large value, no tuple each
            t = type(x)
            if t is list or t is dict:
                stack.append((x, depth + 1))
            elif t is not float or not math.isfinite(x):
                problem = _scalar_problem(x)
                if problem:
                    return problem
    return None


def _scalar_problem(v: Any) -> str | None:
    t = type(v)
    if t is str:
        if not v.isascii() and _not_text(v):
            return "a string holding a lone surrogate"
    elif t is int:
        if not -MAX_INT < v < MAX_INT:
            return "an int with more than 100 digits"
    elif t is float:
        if not math.isfinite(v):
            return f"the float {v!r}"
    elif v is not None and t is not bool:
        return f"a value of type {t.__name__}"
    return None


def _not_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text(s: Any) -> str:
    """`s` as a str that UTF-8 can hold (lone surrogates replaced)."""
    s = s if isinstance(s, str) else str(s)
    return s if s.isascii() or not _not_text(s) else s.encode("utf-8", "replace").decode("utf-8")


def canonical(value: Any) -> str:
    """Deterministic JSON text of `value`: sorted keys, no spaces, unicode kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def exec_key(code: str, kwargs: Any) -> tuple[str, str]:
    """Cache key of one execution: (sha256 of the code, canonical JSON of the input)."""
    return code_digest(code), canonical(kwargs)
