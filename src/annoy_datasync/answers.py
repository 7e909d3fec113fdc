"""JSON answers of model predictions: the method's rule (the default) and a lenient one.

`extract_answer(text, key, rule)` picks one of the two rules; `method_answer(text, key)` is
the method's (``--answer_rule method``, the default of every step that reads answers):

    The answer is the last JSON object of the response: inside the last closed ```json
    block when there is one (the whole block when it is one JSON value, else its last
    ``{...}``), else the last top-level ``{...}`` of the text. Read as JSON, with one retry
    where Python's True/False/None (and tuple parentheses) outside strings become JSON.
    It must be an object holding the key ("output" or "input"); anything else is no
    answer: a Python dict (single quotes), a last object without the key (an earlier
    object that has it does not count), a block holding a list, no object at all.
    Fallbacks for the last object only: ``\\boxed{{...}}`` and ``\\{ ... \\}``.
    What it fixes in the original (which deleted every newline of the JSON text and
    rewrote parentheses inside strings) is said at `_method_loads`; braces inside strings
    do not count as object boundaries.

`extract_json_answer(text, key)` (the lenient rule, ``--answer_rule lenient``)
    The answer is the last complete ``{...}`` object of the text, found by a linear
    scanner that matches braces and skips quoted strings inside them (a quote opens a
    string only after one of ``{ [ ( , :`` and the string must end on its line, so
    apostrophes in prose cannot swallow the text; ``\\{`` is LaTeX, not a brace). Each
    object is read as strict JSON first; if that fails, as a Python literal (single
    quotes, True/False/None, true/false/null, trailing commas, tuples, comments); the
    literal is parsed, never evaluated. With `key`, only objects holding that key at top
    level count (the whole object is returned). Objects nested in a valid object are not
    searched; objects inside an unreadable one are, so ``\\boxed{{"output": 3}}`` works,
    as do ``\\boxed{"output": 3}`` and ``\\boxed{\\{"output": 3\\}}``. Rules:

    - prose like ``output: 5`` and objects with unquoted keys ``{output: 5}`` are not
      answers (too easy to misread prose) -> "no JSON object", or ``no object with key
      "output"`` when there are objects but none with the key;
    - a ``{`` never closed that starts an object (a quoted key and ``:`` follow, or the
      text ends first), placed after the last answer or around it with no paragraph
      break before the end -> "incomplete JSON at the end": the model was cut off, and an
      earlier object is only a draft;
    - the last answer-like object (a quoted key first, holding the quoted `key`) cannot
      be read -> "invalid JSON: <why>", never an earlier draft;
    - two different answers in the container of the last one (its fenced block, its
      ``\\boxed{}``, else its line) -> "ambiguous: ..."; an earlier answer elsewhere is a
      draft and the last one wins (more than MAX_RIVALS objects there: ambiguous too);
    - an object with more than one reading -> "ambiguous: ...": a duplicate key, a
      parenthesised single value ``(5)`` (a tuple or not?), adjacent strings
      ``"a" "b"``, an integer key equal to a string key, or a non-JSON text using escapes
      that JSON and Python read differently (``\\/``, surrogate pairs). A text that is
      valid JSON is read as JSON: Python could read it differently only through those
      same escapes, which Python itself treats as mistakes;
    - values must be JSON: tuples become lists and integer keys strings (as json.dumps
      does); sets, NaN, Infinity, complex numbers, bytes, ``...`` and expressions such as
      ``1/3`` or ``9**9**9`` are refused with a reason, as are objects over
      MAX_OBJECT_CHARS (MAX_LITERAL_CHARS when not JSON), nested over MAX_DEPTH levels or
      with a number over MAX_DIGITS digits (checked before parsing).
"""

from __future__ import annotations

import ast
import bisect
import io
import json
import math
import re
import tokenize
import warnings
from dataclasses import dataclass, field
from typing import Any

from .sections import _scan_fences

# Reasons of Answer.reason (prefixes for the ones with details).
NO_TEXT = "empty answer"
NO_JSON = "no JSON object"
INCOMPLETE = "incomplete JSON at the end"
INVALID = "invalid JSON"
AMBIGUOUS = "ambiguous"

MAX_OBJECT_CHARS = 1_000_000   # strict JSON
MAX_LITERAL_CHARS = 200_000    # Python-literal reading (its AST is ~300x the text)
MAX_DEPTH = 100
MAX_DIGITS = 4300  # Python's default int_max_str_digits
MAX_RIVALS = 100   # objects compared with the last answer in its container

@dataclass
class Answer:
    value: Any | None   # the JSON object (a dict) found, or None
    reason: str         # "" when found; else why not (no JSON, ambiguous, missing key ...)


# ------------------------------------------- shared by both rules, then the lenient rule

_SIG_BEFORE_STRING = frozenset("{[(,:")
_IN_OBJECT = re.compile(r"[{}\"']")
_STR_STOP = {'"': re.compile(r'[\\"\n\r]'), "'": re.compile(r"[\\'\n\r]")}
_EOL = re.compile(r"[\r\n]")


@dataclass
class _Span:
    start: int                 # offset of "{"
    end: int                   # offset after "}"
    children: list[_Span] = field(default_factory=list)
    parent: _Span | None = None


def _prev_sig(text: str, j: int) -> str:
    k = j - 1
    while k >= 0 and text[k] in " \t\r\n":
        k -= 1
    return text[k] if k >= 0 else ""


def _string_end(text: str, j: int, quote: str) -> int:
    """Offset after the string opened at j, or -1 when a line end or the text end comes first."""
    stop = _STR_STOP[quote]
    i = j + 1
    while True:
        m = stop.search(text, i)
        if not m:
            return -1
        c = m.group()
        if c == quote:
            return m.end()
        if c == "\\":
            if m.end() >= len(text) or text[m.end()] in "\r\n":
                return -1
            i = m.end() + 1
            continue
        return -1


def _scan_objects(text: str) -> tuple[list[_Span], list[int]]:
    """Balanced {...} spans (as a forest, document order) and the offsets of unclosed "{".

    Linear: outside braces only "{" matters; inside, a quote starts a string only after
    one of { [ ( , : and the string must end on its line. A string that does not is not
    a string: the line is rescanned once with strings off, so no text is scanned twice.
    """
    stack: list[int] = []
    pending: list[_Span] = []   # closed spans not yet attached to a parent
    i, n, no_strings_before = 0, len(text), -1
    while i < n:
        if not stack:
            j = text.find("{", i)
            if j < 0:
                break
            if j == 0 or text[j - 1] != "\\":   # \{ is LaTeX, not an object
                stack.append(j)
            i = j + 1
            continue
        m = _IN_OBJECT.search(text, i)
        if not m:
            break
        j, c = m.start(), m.group()
        i = j + 1
        if c == "{":
            if text[j - 1] != "\\":
                stack.append(j)
        elif c == "}":
            if text[j - 1] != "\\":
                span = _Span(stack.pop(), j + 1)
                while pending and pending[-1].start > span.start:
                    child = pending.pop()
                    child.parent = span
                    span.children.append(child)
                span.children.reverse()
                pending.append(span)
        elif j >= no_strings_before and _prev_sig(text, j) in _SIG_BEFORE_STRING:
            end = _string_end(text, j, c)
            if end >= 0:
                i = end
            else:
                eol = _EOL.search(text, j)
                nl = eol.start() if eol else n
                if nl >= n:
                    break       # the text ends inside a string: the open objects stay open
                no_strings_before = nl
    return pending, stack


def _fence_ranges(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of every fenced block, including its fence lines."""
    lines = text.split("\n")
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln) + 1)
    stripped = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return [(offsets[f.open_line], offsets[min(f.end_line + 1, len(lines))] - 1)
            for f in _scan_fences(stripped)]


class _Refused(Exception):
    """An object that cannot be taken as an answer; args[0] is the full reason."""


def _invalid(detail: str) -> _Refused:
    return _Refused(f"{INVALID}: {detail}")


def _ambiguous(detail: str) -> _Refused:
    return _Refused(f"{AMBIGUOUS}: {detail}")


def _check_str(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("lone surrogate in a string") from None
    return s


def _check_key(k: Any) -> str:
    if isinstance(k, str):
        return _check_str(k)
    if isinstance(k, int) and not isinstance(k, bool):
        return str(k)
    raise _invalid(f"{type(k).__name__} key")


def _json_value(v: Any, depth: int = 0) -> Any:
    """Check a value decoded by json.loads (floats may be inf, strings lone surrogates)."""
    if depth > MAX_DEPTH:
        raise _invalid("nested too deeply")
    if isinstance(v, dict):
        return {_check_str(k): _json_value(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x, depth + 1) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        raise _invalid("Infinity is not JSON")
    if isinstance(v, str):
        return _check_str(v)
    return v


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _ambiguous(f"duplicate key {json.dumps(dup)}")
    return obj


def _reject_constant(name: str) -> Any:
    raise _invalid(f"{name} is not JSON")


_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_NON_FINITE = {"NaN", "nan", "Infinity", "inf", "Inf", "infinity"}


def _ast_value(node: ast.AST, depth: int = 0) -> Any:
    """Value of a Python-literal AST, JSON-checked; nothing is evaluated."""
    if depth > MAX_DEPTH:
        raise _invalid("nested too deeply")
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise _invalid("** in an object")
            if isinstance(k, ast.Tuple):
                raise _invalid("tuple key")
            key = _check_key(_ast_value(k, depth + 1))
            if key in out:
                raise _ambiguous(f"duplicate key {json.dumps(key)}")
            out[key] = _ast_value(v, depth + 1)
        return out
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_ast_value(x, depth + 1) for x in node.elts]
    if isinstance(node, ast.Constant):
        v = node.value
        if v is None or isinstance(v, (bool, int)):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise _invalid("Infinity is not JSON")
            return v
        if isinstance(v, str):
            return _check_str(v)
        raise _invalid(f"{type(v).__name__} is not JSON")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = node.operand
        if isinstance(operand, ast.Name) and operand.id in _NON_FINITE:
            raise _invalid(f"{operand.id} is not JSON")
        if (isinstance(operand, ast.Constant) and isinstance(operand.value, (int, float))
                and not isinstance(operand.value, bool)):
            v = _ast_value(operand, depth + 1)
            return -v if isinstance(node.op, ast.USub) else v
        raise _invalid("an expression, not a value")
    if isinstance(node, ast.Name):
        if node.id in _NAMES:
            return _NAMES[node.id]
        if node.id in _NON_FINITE:
            raise _invalid(f"{node.id} is not JSON")
        raise _invalid(f"bare word {node.id[:20]}")
    if isinstance(node, (ast.Set, ast.SetComp)):
        raise _invalid("a set is not JSON")
    raise _invalid("an expression, not a value")


_PY_TOKEN = re.compile(
    r"""(?P<s>[rRuUbBfF]{0,2}(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))"""
    r"|(?P<c>\#[^\n]*)|(?P<o>[(\[{])|(?P<e>[)\]}])|(?P<comma>,)|(?P<w>[\w.+-]+)|(?P<x>\S)"
)
# Escapes paired left to right, so "\\\\/" (a backslash, then /) is not "\\/".
_ESCAPE = re.compile(r"\\(?:(/)|u([dD][89a-fA-F])|.)", re.S)
_TOO_MANY_DIGITS = re.compile(r"(?<!\d)\d{%d}" % (MAX_DIGITS + 1))


def _escapes_differ(literal: str) -> bool:
    """True when JSON and Python read an escape of this string literal differently."""
    return any(m.group(1) or m.group(2) for m in _ESCAPE.finditer(literal))


def _has_triple_quoted(span: str) -> bool:
    """Whether valid Python `span` holds a triple-quoted string (which _PY_TOKEN cannot read)."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(span).readline):
            if tok.type == tokenize.STRING and tok.string.lstrip("rRbBuUfF")[:3] in ('"""', "'''"):
                return True
    except (tokenize.TokenError, SyntaxError):
        return True
    return False


def _python_checks(span: str) -> None:
    """What the AST hides: (5) vs (5,), "a" "b", deep nesting. `span` is valid Python."""
    parens: list[list] = []       # [kind, has_comma, has_content] per open bracket
    prev = ""
    for m in _PY_TOKEN.finditer(span):
        kind = m.lastgroup
        if kind == "c":
            continue
        if parens and kind != "e":
            parens[-1][2] = True
        if kind == "s":
            if prev == "s":
                raise _ambiguous("adjacent strings")
            if "\\" in m.group() and _escapes_differ(m.group()):
                raise _ambiguous("escape read differently by JSON and Python")
        elif kind == "o":
            parens.append([m.group(), False, False])
            if len(parens) > MAX_DEPTH:
                raise _invalid("nested too deeply")
        elif kind == "comma":
            if parens:
                parens[-1][1] = True
        elif kind == "e" and parens:
            opened, has_comma, has_content = parens.pop()
            if opened == "(" and has_content and not has_comma:
                raise _ambiguous("parenthesised value (a tuple or not?)")
        prev = kind


def _read_object(span: str) -> Any:
    """The JSON value of one {...} span, or raise _Refused."""
    if len(span) > MAX_OBJECT_CHARS:
        raise _invalid("object over 1 MB")
    if _TOO_MANY_DIGITS.search(span):
        raise _invalid("number too long")
    try:
        value = json.loads(span, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        pass
    else:
        return _json_value(value)
    if len(span) > MAX_LITERAL_CHARS:     # the AST of 1 MB takes ~300 MB
        raise _invalid("not JSON, and too large for a Python literal")
    try:
        if "\\" in span:
            with warnings.catch_warnings():   # invalid escapes warn (SyntaxWarning in 3.12)
                warnings.simplefilter("ignore")
                tree = ast.parse(span.strip(), mode="eval")
        else:
            tree = ast.parse(span.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _invalid("neither JSON nor a Python literal") from None
    # Only now, on valid Python, can the token regex not stall on unterminated strings.
    if ('"""' in span or "'''" in span) and _has_triple_quoted(span):
        raise _invalid("triple-quoted string")
    _python_checks(span)
    try:
        return _ast_value(tree.body)
    except RecursionError:
        raise _invalid("nested too deeply") from None


_LATEX_OBJECT = re.compile(r"\{\s*\\\{(.*)\\\}\s*\}", re.S)


def _unescape_latex_object(span: str) -> str | None:
    r"""``{\{"a": \{...\}\}}`` -> ``{"a": {...}}``; None when the span is not of that form."""
    m = _LATEX_OBJECT.fullmatch(span)
    if not m:
        return None
    return "{" + m.group(1).replace("\\{", "{").replace("\\}", "}") + "}"


def _first_sig(text: str, i: int, end: int) -> str:
    while i < end and text[i] in " \t\r\n":
        i += 1
    return text[i] if i < end else ""


def _is_box(text: str, span: _Span) -> bool:
    return re.search(r"\\boxed[ \t]*$", text[max(0, span.start - 20):span.start]) is not None


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=True)


def extract_json_answer(text: str, key: str | None = None) -> Answer:
    """The last complete JSON object of a model answer.

    With `key` ("output" or "input"), the object must hold that key (the value returned is
    still the whole object). Forgiving of ```json fences, prose, \\boxed{...}, Python literals
    (True/False/None), single quotes, trailing commas; never guessing: when two readings of
    the text differ, returns no answer with reason "ambiguous".
    """
    if not isinstance(text, str) or not text.strip():
        return Answer(None, NO_TEXT)
    roots, unclosed = _scan_objects(text)
    found, value, reason = _last_object(text, roots, key)
    # An object left open after the last one found (or around it, within its paragraph):
    # the answer was cut off, and an earlier object is only a draft.
    last_blank = -2         # start of the last blank line, computed when first needed
    for p in unclosed:
        if not _opens_object(text, p):
            continue        # "{" of LaTeX, prose or code, not of an object
        if found is None or p > found.start:
            return Answer(None, INCOMPLETE)
        if last_blank == -2:
            last_blank = max((m.start() for m in _BLANK_LINE.finditer(text)), default=-1)
        if last_blank < p:  # no paragraph break between the open "{" and the end
            return Answer(None, INCOMPLETE)
    fence = _open_fence_at_end(text)
    if fence is not None and (found is None or fence >= found.end):
        return Answer(None, INCOMPLETE)     # "```json" and then the text stops
    if found is None or reason:
        return Answer(None, reason)
    return Answer(value, "")


def _open_fence_at_end(text: str) -> int | None:
    """Offset of a ```json (or bare) fence left open at the end of the text, if any."""
    if "```" not in text and "~~~" not in text:
        return None
    lines = text.split("\n")
    fences = _scan_fences([ln[:-1] if ln.endswith("\r") else ln for ln in lines])
    if not fences or fences[-1].closed or fences[-1].lang not in ("json", "json5", ""):
        return None
    if not fences[-1].lang and not fences[-1].code.strip():
        return None     # a bare ``` with nothing after it closes a block opened mid-line
    return sum(len(ln) + 1 for ln in lines[:fences[-1].open_line])


_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")


def _opens_object(text: str, p: int) -> bool:
    """Whether the "{" at p, never closed, starts an object: a quoted key and ":" follow,
    or the text ends first (cut inside the key or right after the brace)."""
    n = len(text)
    i = p + 1
    while i < n and text[i] in " \t\r\n":
        i += 1
    if i >= n:
        return True
    if text[i] not in "\"'":
        return False
    end = _string_end(text, i, text[i])
    if end < 0:
        return _EOL.search(text, i) is None
    while end < n and text[end] in " \t\r\n":
        end += 1
    return end >= n or text[end] == ":"


def _last_object(text: str, roots: list[_Span], key: str | None) -> tuple[_Span | None, Any, str]:
    """(span, value, "") of the last answer; (span, None, reason) when the last answer-like
    object is refused or ambiguous; (None, None, reason) when there is none."""
    quoted_keys = (f'"{key}"', f"'{key}'") if key is not None else ()
    last: tuple[_Span, Any] | None = None
    container, container_name = (0, 0), ""
    saw_keyless = False
    budget = MAX_RIVALS     # objects read around the last answer before giving up
    todo = list(roots)      # popped from the end: reverse document order, parents first
    unescapes = MAX_DEPTH   # each reads its whole span: a bounded number keeps this linear
    while todo:
        span = todo.pop()
        if last is not None and span.end <= container[0]:
            break
        first = _first_sig(text, span.start + 1, span.end)
        body = None
        if first == "\\" and unescapes > 0:  # \boxed{\{"output": 3\}}: LaTeX-escaped braces
            unescapes -= 1
            body = _unescape_latex_object(text[span.start:span.end])
            first = _first_sig(body, 1, len(body)) if body else first
        if first not in ('"', "'", "}"):
            todo.extend(span.children)      # LaTeX, sets, \boxed{{...}}: look inside
            continue
        if body is None:
            body = text[span.start:span.end]
        if quoted_keys and not any(q in body for q in quoted_keys):
            saw_keyless = saw_keyless or first != "}"
            continue                        # nothing inside can hold the key either
        if last is not None:
            budget -= 1
            if budget < 0:
                return last[0], None, f"{AMBIGUOUS}: too many objects {container_name}"
        try:
            value = _read_object(body)
            if not isinstance(value, dict):
                raise _invalid("not an object")
        except _Refused as exc:
            if last is None:
                return span, None, exc.args[0]   # the final answer is broken: no draft
            todo.extend(span.children)
            continue
        if key is not None and key not in value:
            saw_keyless = True
            continue
        if last is None:
            last = (span, value)
            container, container_name = _container_of(text, span)
        elif _canon(value) != _canon(last[1]):   # spans end after container[0], see above
            return last[0], None, f"{AMBIGUOUS}: two different answers {container_name}"
    if last is None:
        if saw_keyless:
            return None, None, f"no object with key {json.dumps(key)}"
        return None, None, NO_JSON
    return last[0], last[1], ""


def _container_of(text: str, span: _Span) -> tuple[tuple[int, int], str]:
    """Where a competing answer would make the last one ambiguous: its \\boxed{}, fence or line."""
    if span.parent is not None and _is_box(text, span.parent):
        return (span.parent.start, span.parent.end), "in one \\boxed{}"
    ranges = _fence_ranges(text) if "```" in text or "~~~" in text else []
    k = bisect.bisect_right(ranges, (span.start, len(text) + 1)) - 1
    if k >= 0 and ranges[k][0] <= span.start < ranges[k][1]:
        return ranges[k], "in one code block"
    line_start = text.rfind("\n", 0, span.start) + 1
    line_end = text.find("\n", span.end)
    return (line_start, len(text) if line_end < 0 else line_end), "on one line"


# ----------------------------------------------------------------------------- the method's rule

METHOD = "method"
LENIENT = "lenient"
RULES = (METHOD, LENIENT)

NOT_OBJECT = "not a JSON object"        # reason prefix: the answer parsed, but is not {...}
NO_KEY = "no key"                       # reason prefix: the last object lacks the key
_NOTHING = object()

# Outside double-quoted strings: Python's constants and tuple parentheses.
_PY_OUTSIDE_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\b(?:True|False|None)\b|[()]', re.S)
_PY_TO_JSON = {"True": "true", "False": "false", "None": "null", "(": "[", ")": "]"}


def _pythonish_to_json(text: str) -> str:
    """True/False/None -> true/false/null and ( ) -> [ ], outside strings only."""
    return _PY_OUTSIDE_STRINGS.sub(lambda m: _PY_TO_JSON.get(m.group(), m.group()), text)


def _method_loads(text: str) -> Any:
    """The JSON value of `text` as the method reads it, or raise _Refused.

    Kept from the original: plain JSON first, then one retry with Python's True/False/None
    (and tuple parentheses) turned into JSON. Fixed: the original deleted every newline of
    the text before parsing, so a raw newline inside a string value was lost (and two words
    on either side of it glued together); here the newline stays part of the string
    (``strict=False`` lets control characters through inside strings) and newlines between
    tokens are whitespace, as JSON has them anyway. The original's retry also rewrote
    ``(`` and ``)`` inside strings ("f(x)" became "f[x]"); here strings are left alone.
    Single-quoted keys or strings stay refused: a Python dict is not the JSON answer the
    prompt asks for.
    """
    for attempt in (text, None):
        if attempt is None:
            attempt = _pythonish_to_json(text)
            if attempt == text:
                break
        try:
            value = json.loads(attempt, strict=False, parse_constant=_reject_constant)
        except _Refused:
            raise
        except (ValueError, RecursionError):
            continue
        return _json_value(value)
    raise _invalid("the last object is not JSON")


def _method_object(text: str, scanned: bool = False) -> Any:
    """The value of the last top-level ``{...}`` of `text`, or raise _Refused.

    The object is found by the same brace scanner as the lenient rule (braces inside JSON
    strings do not count, ``\\{`` is LaTeX); only the last one is read, never an earlier one.
    Fallbacks of the method, applied to that last object only: ``\\boxed{...}`` or double
    braces ``{{...}}`` around it (its last inner object) and LaTeX-escaped braces
    ``\\{ ... \\}``.
    """
    roots, _ = _scan_objects(text)
    if not roots:
        if not scanned and ("\\{" in text):
            return _method_object(text.replace("\\{", "{").replace("\\}", "}"), True)
        raise _Refused(NO_JSON)
    span = roots[-1]
    body = text[span.start:span.end]
    try:
        return _method_loads(body)
    except _Refused as exc:
        first_error = exc
    # \boxed{...} or {{...}} around the answer: its last inner object. At most MAX_DEPTH
    # wrappers are unwrapped (a deeper answer is refused anyway) and a span that opens
    # with another "{" is not parsed (it cannot be a JSON object), so text nested
    # thousands deep costs linear time, not one parse of the whole text per level.
    def doubled(s: _Span) -> bool:
        return _first_sig(text, s.start + 1, s.end) == "{"

    for _ in range(MAX_DEPTH):
        if not (span.children and (_is_box(text, span) or doubled(span))):
            break
        span = span.children[-1]
        if doubled(span):
            continue
        try:
            return _method_loads(text[span.start:span.end])
        except _Refused:
            pass
    if "\\{" in body or "\\}" in body:
        unescaped = _unescape_latex_object(body) or body.replace("\\{", "{").replace("\\}", "}")
        try:
            return _method_loads(unescaped)
        except _Refused:
            pass
    raise first_error


def method_answer(text: str, key: str | None = None) -> Answer:
    """The answer as the method defines it.

    The region is the content of the last closed ```json block when the text has one, else
    the whole text. A block that is one JSON value as a whole is that value; otherwise (and
    in the whole text) the answer is the last top-level ``{...}`` of the region. It must be
    a JSON object holding `key`; anything else is no answer, with the reason. Windows line
    ends are read as newlines. A ```json block left open (an answer cut off inside it) is
    not a block: the whole text is searched.
    """
    if not isinstance(text, str) or not text.strip():
        return Answer(None, NO_TEXT)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    region = text
    blocks = [f for f in _scan_fences(text.split("\n")) if f.closed and f.lang == "json"]
    try:
        value = _NOTHING
        if blocks:
            region = blocks[-1].code
            try:
                value = _method_loads(region.strip())
            except _Refused:
                pass
        if value is _NOTHING:
            value = _method_object(region)
    except _Refused as exc:
        return Answer(None, exc.args[0])
    if not isinstance(value, dict):
        return Answer(None, f"{NOT_OBJECT}: {type(value).__name__}")
    if key is not None and key not in value:
        return Answer(None, f'{NO_KEY} "{key}" in the last JSON object')
    return Answer(value, "")



def extract_answer(text: str, key: str | None, rule: str = METHOD) -> Answer:
    """The answer of a prediction under `rule` (METHOD or LENIENT)."""
    if rule == LENIENT:
        return extract_json_answer(text, key)
    if rule != METHOD:
        raise ValueError(f"unknown answer rule {rule!r} (known: {', '.join(RULES)})")
    return method_answer(text, key)
