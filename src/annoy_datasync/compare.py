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


def canonical(value: Any) -> str:
    """Deterministic JSON text of `value`: sorted keys, no spaces, unicode kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def exec_key(code: str, kwargs: Any) -> tuple[str, str]:
    """Cache key of one execution: (sha256 of the code, canonical JSON of the input)."""
    return code_digest(code), canonical(kwargs)
