"""Extraction from model answers: unified-response sections, code blocks, JSON answers.

Pure functions (no I/O, no printing); none of them raises on odd text.

Code fences
    A fence is a line of 3+ backticks (or tildes) with an optional language word, closed by
    a line of at least as many of the same character and nothing else. Also accepted: a
    closing fence glued to the last code line (``return x```), an indented fence (its
    indentation is removed from the code lines), Windows line endings, and a fence left
    open at the end of the text (the block then runs to the end). ``python``, ``py``,
    ``python3`` (any case) count as Python; a bare fence counts only when no block is
    tagged Python. A ``markdown`` fence wrapped around the whole answer is taken away.

`parse_unified(text)`
    Finds the four section headings of SECTION_NAMES outside code fences. A heading is a
    markdown heading of any level (``# Main Function``, ``### main function:``), a line of
    bold text (``**Main Function**``, ``**Main Function:** text...``) or a line holding
    only the name, optionally with a colon; numbering (``1.``, ``Step 2:``, ``iii)``) is
    allowed, and ``Input/Output Description`` / ``Input and Output Description`` /
    ``I/O Description`` are the same section. A section runs to the next section heading,
    or to the next markdown heading of the same or a higher level (level 2 or higher for
    a bold or plain heading). Text before, between and after sections is ignored;
    sections may come in any order; when a heading appears twice, the last occurrence
    with content wins. Code sections keep the last fenced block that defines the
    function (``main_solution`` / ``input_generator``); failing that the last Python
    block, then the last bare block, then the section's own text if it holds the ``def``
    line. Text sections are the text under the heading, cut at a horizontal rule
    (``---``) that follows some text, and unwrapped when they are one fenced block.
    ``Unified.missing`` names (in SECTION_NAMES order) every section not found or empty;
    whether the code really defines its function is left to the caller.

`extract_json_answer(text, key)`
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

SECTION_NAMES = ("Main Function", "Input Output Description", "Input Generator", "Problem Statement")

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

_FUNCS = {0: "main_solution", 2: "input_generator"}
_PY_LANGS = {"python", "py", "python3", "py3", "python2"}


@dataclass
class Unified:
    main_code: str | None            # code of the ```python block under "## Main Function"
    io_description: str | None       # text under "## Input Output Description"
    generator_code: str | None       # code of the ```python block under "## Input Generator"
    problem_statement: str | None    # text under "## Problem Statement"
    missing: list[str] = field(default_factory=list)  # names from SECTION_NAMES not found / empty


@dataclass
class Answer:
    value: Any | None   # the JSON object (a dict) found, or None
    reason: str         # "" when found; else why not (no JSON, ambiguous, missing key ...)


# ----------------------------------------------------------------------------- fences

_FENCE_OPEN = re.compile(r"([ \t]*)(`{3,}|~{3,})([^`\n]*)")
_FENCE_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*")
_LANG = re.compile(r"[{.]*([\w+#-]*)")


@dataclass
class _Fence:
    open_line: int          # index of the opening fence line
    end_line: int           # index of the closing fence line, or len(lines) when left open
    lang: str               # lowercased first word of the info string ("" for a bare fence)
    code: str               # content, fence indentation removed, blank edges trimmed
    closed: bool


def _scan_fences(lines: list[str]) -> list[_Fence]:
    """Fenced blocks of a list of lines (without line ends), in order."""
    fences: list[_Fence] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        m = _FENCE_OPEN.fullmatch(line) if len(line) < 1000 else None
        if not m:
            i += 1
            continue
        indent, marker, info = len(m.group(1).expandtabs(4)), m.group(2), m.group(3).strip()
        lang = _LANG.match(info).group(1).lower()
        body: list[str] = []
        j, closed = i + 1, False
        while j < n:
            cur = lines[j]
            c = _FENCE_CLOSE.fullmatch(cur)
            if c and c.group(1)[0] == marker[0] and len(c.group(1)) >= len(marker):
                closed = True
                break
            stripped = cur.rstrip()
            if marker[0] == "`" and stripped.endswith(marker) and stripped.strip("` \t"):
                body.append(stripped[: -len(marker)].rstrip("`"))  # "return x```"
                closed = True
                break
            body.append(cur)
            j += 1
        fences.append(_Fence(i, j, lang, _code_text(body, indent), closed))
        i = j + 1
    return fences


def _code_text(body: list[str], indent: int) -> str:
    if indent:
        pat = re.compile(r"[ ]{0,%d}" % indent)
        body = [pat.sub("", ln.expandtabs(4), count=1) for ln in body]
    return "\n".join(body).strip("\n").rstrip()


def _normalize(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_MD_WRAPPER = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*(?:markdown|md)[ \t]*", re.I)


def _lines(text: Any) -> list[str]:
    """Lines of the text, with a ```markdown fence around the whole answer taken away
    (one that opens before any section heading).

    Inside such a wrapper the Python blocks would be plain content. Its closing fence is
    the last one when the fence lines after the opener are odd in number; it becomes a
    horizontal rule, so text after the wrapper is not part of the last section.
    """
    lines = _normalize(text).split("\n")
    opener = next((k for k, ln in enumerate(lines) if len(ln) < 100 and _MD_WRAPPER.fullmatch(ln)), None)
    if opener is None or any(_section_heading(ln) for ln in lines[:opener] if ln.strip()):
        return lines    # a markdown block inside a section is only an example
    char = _MD_WRAPPER.fullmatch(lines[opener]).group(1)[0]
    marks = [k for k in range(opener + 1, len(lines))
             if len(lines[k]) < 1000 and lines[k].lstrip().startswith(char * 3)
             and _FENCE_OPEN.fullmatch(lines[k])]
    lines[opener] = ""
    if len(marks) % 2 == 1 and _FENCE_CLOSE.fullmatch(lines[marks[-1]]):
        lines[marks[-1]] = "---"    # a rule: text after the wrapper ends the last section
    return lines


def _pick_code(fences: list[_Fence], func: str | None) -> str | None:
    """Last block defining `func`; else last non-empty Python block; else last bare block."""
    if func:
        defines = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+%s[ \t]*\(" % func, re.M)
        for f in reversed(fences):
            if defines.search(f.code):
                return f.code
    for langs in (_PY_LANGS, {""}):
        for f in reversed(fences):
            if f.lang in langs and f.code.strip():
                return f.code
    return None


def last_python_block(text: str) -> str | None:
    """Code of the last ```python (or ```py / bare ```) block; tolerant of a missing closing fence.

    A block tagged Python wins over a later bare block (bare blocks often hold output or
    prose); bare blocks count when no block is tagged. Blank blocks are skipped.
    """
    return _pick_code(_scan_fences(_lines(text)), None)


# ----------------------------------------------------------------------------- sections

_SEC_PATTERNS = (
    r"main\s+function",
    r"input\s*(?:(?:/|-|&|\+|and)\s*)?output\s+description|i\s*/\s*o\s+description",
    r"input\s+generator",
    r"problem\s+statement",
)
# Matched on a stripped line; every run of spaces has one owner (no polynomial backtracking).
_HEADING = re.compile(
    r"(?P<hashes>\#{1,6})?(?P<lead>[*_ \t]*)"
    r"(?:(?:(?:step|section|part)[ \t]*\d{1,2}(?:[ \t]*[.:)\-\u2013\u2014])?"
    r"|(?:\d{1,2}|[ivxIVX]{1,4}|[a-dA-D])[.:)\-\u2013\u2014])(?P<lead2>[*_ \t]*))?"
    r"(?:" + "|".join("(?P<s%d>%s)" % (i, p) for i, p in enumerate(_SEC_PATTERNS)) + r")s?"
    r"(?![^\W_])(?P<post>.*)",
    re.I,
)
_POST = re.compile(r"[ \t]*(?P<close>[*_]*)[ \t]*(?P<colon>:?)[ \t]*[*_]*[ \t]*(?P<rest>.*)")
_MD_HEADING = re.compile(r"[ \t]{0,3}(#{1,6})(?:[ \t]|$)")
_RULE = re.compile(r"[ \t]{0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*")


def _section_heading(line: str) -> tuple[int, int, str] | None:
    """(section index, heading level (0 for bold/plain), inline text) or None."""
    if len(line) > 300:
        return None
    m = _HEADING.match(line.strip())
    if not m:
        return None
    idx = next(i for i in range(4) if m.group("s%d" % i))
    post = _POST.match(m.group("post"))
    colon, rest = post.group("colon"), post.group("rest").strip()
    hashes = m.group("hashes")
    if hashes:
        return idx, len(hashes), rest if colon else ""
    lead = m.group("lead") + (m.group("lead2") or "")
    emphasized = "*" in lead or "_" in lead
    if colon or not rest:
        return idx, 0, rest
    if emphasized and post.group("close"):
        return idx, 0, rest  # "**Problem Statement** Given a list ..."
    return None


def _text_section(lines: list[str], in_fence: list[bool], inline: str) -> str | None:
    kept: list[str] = [inline] if inline else []
    for k, ln in enumerate(lines):
        if not in_fence[k] and len(ln) <= 300 and _RULE.fullmatch(ln):
            if any(x.strip() for x in kept):
                break
            continue
        kept.append(ln)
    text = "\n".join(kept).strip()
    if not text:
        return None
    body = text.split("\n")
    fences = _scan_fences(body)
    if len(fences) == 1 and fences[0].open_line == 0 and fences[0].end_line >= len(body) - 1:
        text = fences[0].code.strip()  # the whole section is one fenced block
    return text or None


def parse_unified(text: str) -> Unified:
    """Split a unified response into its four sections; never raises on odd text."""
    lines = _lines(text)
    fences = _scan_fences(lines)
    in_fence = [False] * len(lines)
    for f in fences:
        for k in range(f.open_line, min(f.end_line + 1, len(lines))):
            in_fence[k] = True

    # Headings outside fences: (line, section index or None, level, inline text).
    marks: list[tuple[int, int | None, int, str]] = []
    for k, ln in enumerate(lines):
        if in_fence[k] or not ln.strip():
            continue
        h = _section_heading(ln)
        if h:
            marks.append((k, h[0], h[1], h[2]))
            continue
        md = _MD_HEADING.match(ln)
        if md:
            marks.append((k, None, len(md.group(1)), ""))

    found: list[list[str | None]] = [[] for _ in SECTION_NAMES]
    fence_starts = [f.open_line for f in fences]
    for pos, (k, idx, level, inline) in enumerate(marks):
        if idx is None:
            continue
        stop_level = level if level else 2
        end = len(lines)
        for j in range(pos + 1, len(marks)):
            if marks[j][1] is not None or marks[j][2] <= stop_level:
                end = marks[j][0]
                break
        if idx in _FUNCS:
            inside = fences[bisect.bisect_right(fence_starts, k):bisect.bisect_left(fence_starts, end)]
            code = _pick_code(inside, _FUNCS[idx])
            if code is None and not inside:
                own = "\n".join([inline] + lines[k + 1:end]).strip("\n").rstrip()
                if re.search(r"^[ \t]*def[ \t]+%s[ \t]*\(" % _FUNCS[idx], own, re.M):
                    code = own
            found[idx].append(code)
        else:
            found[idx].append(_text_section(lines[k + 1:end], in_fence[k + 1:end], inline))

    values = [next((v for v in reversed(vs) if v and v.strip()), None) for vs in found]
    missing = [name for name, v in zip(SECTION_NAMES, values) if v is None]
    return Unified(values[0], values[1], values[2], values[3], missing)


# ----------------------------------------------------------------------------- JSON answers

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
    while todo:
        span = todo.pop()
        if last is not None and span.end <= container[0]:
            break
        first = _first_sig(text, span.start + 1, span.end)
        body = None
        if first == "\\":                  # \boxed{\{"output": 3\}}: LaTeX-escaped braces
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
