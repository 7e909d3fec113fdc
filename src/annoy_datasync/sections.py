"""Fenced code blocks and the sections of a unified response (the transform step's answer).

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
    function (``main_solution`` / ``input_generator``, by `defines_function`); failing that
    the last Python block, then the last bare block, then the section's own text if it
    defines the function. Text sections are the text under the heading, cut at a horizontal rule
    (``---``) that follows some text, and unwrapped when they are one fenced block.
    ``Unified.missing`` names (in SECTION_NAMES order) every section not found or empty;
    whether the code kept really defines its function is left to the caller.

`defines_function(code, name)`
    The one rule for "this code has a main function" (a module-level ``def name(``), used
    here to choose the code block and by generation.py to keep or drop a sample.

The JSON answers of predictions live in `answers`.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass, field
from typing import Any

SECTION_NAMES = ("Main Function", "Input Output Description", "Input Generator", "Problem Statement")

MAIN_FUNC = "main_solution"         # the entry point the transform prompt asks for
GENERATOR_FUNC = "input_generator"  # its input generator
_FUNCS = {0: MAIN_FUNC, 2: GENERATOR_FUNC}
_PY_LANGS = {"python", "py", "python3", "py3", "python2"}


@dataclass
class Unified:
    main_code: str | None            # code of the ```python block under "## Main Function"
    io_description: str | None       # text under "## Input Output Description"
    generator_code: str | None       # code of the ```python block under "## Input Generator"
    problem_statement: str | None    # text under "## Problem Statement"
    missing: list[str] = field(default_factory=list)  # names from SECTION_NAMES not found / empty



# ---------------------------------------------------------------------- the one rule

def defines_function(code: str, name: str) -> bool:
    """Whether `code` defines function `name` at module level: a line starting with
    ``def name(`` in its first column.

    The pipeline's one test of "has a main function" (and of "has an input generator"):
    which code block of a section is kept, and whether parse_gen_ios.py keeps the sample.
    Why this rule: the method asks for ``def main_solution`` at the end of the Main Function
    block and calls it by name from module scope, ``main_solution(**input)``, in its own
    generation and checking. A ``def`` indented inside a class or another function is not
    reachable under that name, and an ``async def`` returns a coroutine, never a JSON value:
    neither can give an I/O pair. It is also the rule parse_gen_ios.py always applied to
    keep a sample, so the samples kept do not change.
    """
    return _definition(name).search(code) is not None


@functools.lru_cache(maxsize=None)
def _definition(name: str) -> re.Pattern:
    return re.compile(r"^def[ \t]+%s[ \t]*\(" % re.escape(name), re.M)


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
        for f in reversed(fences):
            if defines_function(f.code, func):
                return f.code
    for langs in (_PY_LANGS, {""}):
        for f in reversed(fences):
            if f.lang in langs and f.code.strip():
                return f.code
    return None


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
                if defines_function(own, _FUNCS[idx]):
                    code = own
            found[idx].append(code)
        else:
            found[idx].append(_text_section(lines[k + 1:end], in_fence[k + 1:end], inline))

    values = [next((v for v in reversed(vs) if v and v.strip()), None) for vs in found]
    missing = [name for name, v in zip(SECTION_NAMES, values) if v is None]
    return Unified(values[0], values[1], values[2], values[3], missing)
