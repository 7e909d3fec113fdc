"""Extraction from model answers: tables of messy real-world shapes against expected results."""

import json
import random

import pytest

from annoy_datasync.answers import (
    AMBIGUOUS,
    INCOMPLETE,
    INVALID,
    NO_JSON,
    NO_TEXT,
    Answer,
    extract_json_answer,
)
from annoy_datasync import status as st
from annoy_datasync.generation import sections_of
from annoy_datasync.sections import SECTION_NAMES, Unified, defines_function, parse_unified
from testutil import FIXTURES


# ============================================================================ sections

MAIN = "import math\n\n# main function\ndef main_solution(x):\n    return math.floor(x) + 1"
IO = "Input:\n  `x` (float): a number.\n\nOutput:\n  `return` (int): floor(x) + 1."
GEN = 'import random\n\ndef input_generator():\n    return {"x": random.uniform(-5, 5)}'
PS = "Given a real number `x`, what is the smallest integer strictly greater than `x`?"
NAMES = SECTION_NAMES


def unified(head=lambda name: f"## {name}", *, order=(0, 1, 2, 3), fence="```python", close="```",
            before="", after="", sep="\n\n", main=MAIN, io=IO, gen=GEN, ps=PS):
    """A unified response with the given heading style, fence style and order."""
    bodies = [f"{fence}\n{main}\n{close}", io, f"{fence}\n{gen}\n{close}", ps]
    parts = [f"{head(NAMES[i])}\n{bodies[i]}" for i in order]
    return before + sep.join(parts) + after


ALL = dict(main=MAIN, io=IO, gen=GEN, ps=PS, missing=[])


def want(**changes):
    return {**ALL, **changes}


def _without_last_close(text):
    i = text.rindex("```")
    return text[:i]


SECTION_CASES = [
    # --- heading styles --------------------------------------------------------------
    pytest.param(unified(), want(), id="canonical"),
    pytest.param(unified(lambda n: f"# {n}"), want(), id="level-1"),
    pytest.param(unified(lambda n: f"### {n}"), want(), id="level-3"),
    pytest.param(unified(lambda n: f"#### {n}:"), want(), id="level-4-colon"),
    pytest.param(unified(lambda n: f"##{n}"), want(), id="no-space-after-hashes"),
    pytest.param(unified(lambda n: f"## {n.upper()}"), want(), id="upper-case"),
    pytest.param(unified(lambda n: f"## {n.lower()}"), want(), id="lower-case"),
    pytest.param(unified(lambda n: f"**{n}**"), want(), id="bold"),
    pytest.param(unified(lambda n: f"**{n}:**"), want(), id="bold-colon-inside"),
    pytest.param(unified(lambda n: f"**{n}**:"), want(), id="bold-colon-outside"),
    pytest.param(unified(lambda n: f"__{n}__"), want(), id="underscore-bold"),
    pytest.param(unified(lambda n: f"## **{n}**"), want(), id="heading-and-bold"),
    pytest.param(unified(lambda n: f"{n}:"), want(), id="plain-with-colon"),
    pytest.param(unified(lambda n: f"{n}"), want(), id="plain-name-alone"),
    pytest.param(unified(lambda n: f"## {n}  \t"), want(), id="trailing-blanks"),
    pytest.param(unified(lambda n: f"## {n} (Python)"), want(), id="heading-with-remark"),
    pytest.param(unified(lambda n: f"{NAMES.index(n) + 1}. {n}"), want(), id="numbered-plain"),
    pytest.param(unified(lambda n: f"## {NAMES.index(n) + 1}. {n}"), want(), id="numbered-heading"),
    pytest.param(unified(lambda n: f"**{NAMES.index(n) + 1}) {n}**"), want(), id="numbered-bold"),
    pytest.param(unified(lambda n: f"### Step {NAMES.index(n) + 1}: {n}"), want(), id="step-numbered"),
    pytest.param(unified(lambda n: f"## {n}".replace("Input Output", "Input/Output")), want(),
                 id="input-slash-output"),
    pytest.param(unified(lambda n: f"## {n}".replace("Input Output", "Input and Output")), want(),
                 id="input-and-output"),
    pytest.param(unified(lambda n: f"## {n}".replace("Input Output", "I/O")), want(), id="i-o"),
    pytest.param(
        unified(lambda n: f"{n}\n" + "-" * len(n)), want(), id="setext-underline"),
    # --- extra text, order ---------------------------------------------------------
    pytest.param(unified(before="Sure! Here is the rewritten code in the unified format.\n\n"), want(),
                 id="text-before"),
    pytest.param(unified(after="\n\n---\n\nThis keeps the original logic. Let me know!"), want(),
                 id="text-after-rule"),
    pytest.param(unified(after="\n\n## Notes\nThe generator keeps inputs small."), want(),
                 id="text-after-other-heading"),
    pytest.param(unified(main="x = 1\n```\nThe function below wraps it:\n```python\n" + MAIN),
                 want(), id="prose-between-blocks-in-main"),
    pytest.param(unified(order=(3, 1, 0, 2)), want(), id="out-of-order"),
    pytest.param(unified(order=(0, 2, 1, 3)), want(), id="generator-before-io"),
    pytest.param(unified(ps=PS + "\n\n### Example\nFor `x = 1.5` the answer is 2."),
                 want(ps=PS + "\n\n### Example\nFor `x = 1.5` the answer is 2."), id="subheading-kept"),
    pytest.param(unified(lambda n: f"**{n}:** " + (PS if n == NAMES[3] else ""),
                         ps="").rstrip(), want(), id="bold-heading-inline-text"),
    # --- fences ------------------------------------------------------------------------
    pytest.param(unified(fence="```py"), want(), id="fence-py"),
    pytest.param(unified(fence="```Python3"), want(), id="fence-python3"),
    pytest.param(unified(fence="```"), want(), id="bare-fence"),
    pytest.param(unified(fence="~~~python", close="~~~"), want(), id="tilde-fence"),
    pytest.param(unified(fence="````python", close="````",
                         main=MAIN + '\nFENCE = "```"\n```\n# not the end'),
                 want(main=MAIN + '\nFENCE = "```"\n```\n# not the end'), id="four-backtick-fence"),
    pytest.param(unified(order=(0, 1, 3, 2)).rstrip("`\n"), want(), id="missing-last-fence"),
    pytest.param(_without_last_close(unified(order=(0, 1, 3, 2))), want(), id="missing-last-fence-2"),
    pytest.param(unified().replace("floor(x) + 1\n```", "floor(x) + 1```"), want(),
                 id="closing-fence-glued-to-code"),
    pytest.param(unified(fence="   ```python", close="   ```",
                         main=MAIN.replace("\n", "\n   "), gen=GEN.replace("\n", "\n   ")),
                 want(), id="indented-fences"),
    pytest.param(unified(ps=f"```\n{PS}\n```"), want(), id="statement-in-fence"),
    pytest.param(unified(io=f"```text\n{IO}\n```"), want(), id="io-in-text-fence"),
    pytest.param(unified(main=MAIN.replace("    ", "\t")), want(main=MAIN.replace("    ", "\t")),
                 id="tabs-kept"),
    pytest.param(unified(lambda n: f"## {n}", ps="Étant donné `x` — quel entier? 数字 ✓"),
                 want(ps="Étant donné `x` — quel entier? 数字 ✓"), id="unicode"),
    pytest.param("```markdown\n" + unified() + "\n```", want(), id="wrapped-in-markdown-fence"),
    pytest.param("Here you go:\n````md\n" + unified() + "\n````\nDone.", want(),
                 id="wrapped-in-4-backtick-md-fence"),
    pytest.param("```markdown\n" + unified(), want(), id="markdown-wrapper-left-open"),
    pytest.param(unified(ps=PS + "\n```markdown\n# Title\n```\nEnd."),
                 want(ps=PS + "\n```markdown\n# Title\n```\nEnd."), id="markdown-example-in-statement"),
    # --- line endings ---------------------------------------------------------------------
    pytest.param(unified().replace("\n", "\r\n"), want(), id="crlf"),
    pytest.param(unified().replace("\n", "\r"), want(), id="cr-only"),
    # --- code choice -----------------------------------------------------------------------
    pytest.param(unified(main="class Helper:\n    pass\n```\n\n```python\n" + MAIN),
                 want(), id="helper-block-then-main-block"),
    pytest.param(unified(main="def main_solution(x):\n    return 0\n```\nOops, fixed:\n```python\n" + MAIN),
                 want(), id="draft-then-fixed-main"),
    pytest.param(unified(main=MAIN + "\n```\nExample run:\n```\n>>> main_solution(1.5)\n2"),
                 want(), id="main-block-then-example-block"),
    pytest.param(unified(main="# no main here\nx = 1"), want(main="# no main here\nx = 1"),
                 id="main-without-def-kept-for-caller"),
    # (unfenced code is read as markdown: a "# main function" comment there would be a heading)
    pytest.param(unified(main=MAIN.replace("# main function\n", ""))
                 .replace("```python\nimport math", "import math", 1).replace("+ 1\n```", "+ 1", 1),
                 want(main=MAIN.replace("# main function\n", "")), id="main-without-fence"),
    pytest.param(unified(main=MAIN.replace("# main function", "# Input Generator\n# Problem Statement")),
                 want(main=MAIN.replace("# main function", "# Input Generator\n# Problem Statement")),
                 id="heading-like-comments-in-code"),
    # --- repeated and missing sections ------------------------------------------------------
    pytest.param(unified() + "\n\nWait, a corrected version:\n\n" + unified(ps="Fixed: " + PS),
                 want(ps="Fixed: " + PS), id="whole-answer-repeated"),
    pytest.param(unified() + "\n\n## Main Function Explanation\nIt adds one.", want(),
                 id="later-same-name-heading-without-code"),
    pytest.param(unified(order=(0, 1, 2)), want(ps=None, missing=[NAMES[3]]), id="no-statement"),
    pytest.param(unified(io=""), want(io=None, missing=[NAMES[1]]), id="empty-io"),
    pytest.param(unified(main="", fence="", close=""), want(main=None, missing=[NAMES[0]]),
                 id="main-heading-no-code"),
    pytest.param(unified(fence="```python\n```\n```python", gen="", main=MAIN),
                 want(gen=None, missing=[NAMES[2]]), id="empty-blocks"),
    pytest.param(unified(order=(1, 3)), want(main=None, gen=None, missing=[NAMES[0], NAMES[2]]),
                 id="two-missing"),
    pytest.param(unified(ps="---\n" + PS), want(), id="rule-right-after-heading"),
    pytest.param(
        unified()[: unified().index("    return {")],
        want(gen="import random\n\ndef input_generator():", ps=None, missing=[NAMES[3]]),
        id="truncated-in-generator"),
    pytest.param(
        # A fence left open in the middle swallows what follows: those sections are missing.
        unified().replace("floor(x) + 1\n```", "floor(x) + 1", 1),
        {"missing": [NAMES[1], NAMES[2]], "ps": PS}, id="open-fence-mid-text"),
    pytest.param("The code computes something.\n\n```python\n" + MAIN + "\n```",
                 dict(main=None, io=None, gen=None, ps=None, missing=list(NAMES)), id="no-headings"),
    pytest.param("", dict(main=None, io=None, gen=None, ps=None, missing=list(NAMES)), id="empty"),
    pytest.param(None, dict(main=None, io=None, gen=None, ps=None, missing=list(NAMES)), id="none"),
    pytest.param(12345, dict(main=None, io=None, gen=None, ps=None, missing=list(NAMES)), id="not-text"),
    pytest.param("## Main Function\n" * 3, dict(main=None, missing=list(NAMES)), id="headings-only"),
]


@pytest.mark.parametrize("text, expected", SECTION_CASES)
def test_parse_unified_table(text, expected):
    u = parse_unified(text)
    assert isinstance(u, Unified)
    got = dict(main=u.main_code, io=u.io_description, gen=u.generator_code,
               ps=u.problem_statement, missing=u.missing)
    for k, v in expected.items():
        assert got[k] == v, k


# The one "has a main function" rule (sections.defines_function), on the cases where the two
# rules the code had before disagreed: generation.py wanted an unindented ``def``, the block
# choice also took an indented or ``async`` one.
DEFINES_CASES = [
    ("def main_solution(x):\n    return x", True),
    ("import math\n\ndef  main_solution\t(x):\n    return x", True),
    ("class S:\n    def main_solution(self, x):\n        return x", False),   # a method
    ("def outer():\n    def main_solution(x):\n        return x", False),     # nested
    ("    def main_solution(x):\n        return x", False),                   # indented block
    ("async def main_solution(x):\n    return x", False),                     # a coroutine
    ("def main_solutions(x):\n    return x", False),
    ("# def main_solution(x): see below\nmain_solution = print", False),
]


@pytest.mark.parametrize("code, defines", DEFINES_CASES)
def test_defines_function(code, defines):
    assert defines_function(code, "main_solution") is defines


def test_the_block_kept_defines_the_function_at_module_level():
    # a later block with only a method named main_solution does not win over the block
    # that defines it at module level, so the sample is kept
    method = "class Helper:\n    def main_solution(self):\n        return 0"
    text = unified(main=MAIN + "\n```\n\n```python\n" + method)
    assert parse_unified(text).main_code == MAIN
    assert sections_of({"output": text}).main_code == MAIN
    # a sample whose only main_solution is a coroutine or a method is dropped
    for main in ("async def main_solution(x):\n    return x", method):
        assert sections_of({"output": unified(main=main)}).drop == st.DROP_NO_MAIN
    assert sections_of({"output": unified()}).drop == ""


def test_section_table_is_large_enough():
    assert len(SECTION_CASES) >= 40


def test_realistic_unified_fixture():
    u = parse_unified((FIXTURES / "extract_unified_sample.md").read_text())
    assert u.missing == []
    assert u.main_code.startswith("# import necessary packages\nfrom collections import deque")
    assert u.main_code.endswith("    return graph.distance(src, dst)")
    assert "class Graph:" in u.main_code          # "# main function" comment did not split it
    assert u.io_description.startswith("Input:\n  `edges`")
    assert u.io_description.endswith("cannot be reached.")
    assert u.generator_code.startswith("import random\n\ndef input_generator():")
    assert u.problem_statement.startswith("A courier network")
    assert u.problem_statement.endswith("when there is no route.")


def test_parse_unified_long_odd_lines_return():
    # lines built to trip backtracking regexes; only behaviour is asserted
    text = ("## Main Function\n" + "**" * 100 + " " * 100 + "x\n" + "- " * 5000 + "x\n"
            + " " * 50000 + "y\n" + "```" + "a " * 20000 + "`\n") * 20
    u = parse_unified(text)
    assert u.main_code is None and NAMES[0] in u.missing


# ============================================================================ JSON answers

LONG_REASONING = (
    "Let's trace it. We have $\\frac{n}{2}$ and the set $\\{1, 2\\}$; it's {not JSON}. "
    'A draft: {"output": 7}. Hmm, "quoted" text, a dict {"n": 3} and f(x) = {x^2}.\n\n'
) * 1500   # about 200 KB of reasoning with braces, quotes and drafts

DEEP = '{"output": ' + "[" * 150 + "]" * 150 + "}"

JSON_CASES = [
    # text, key, expected value (None = no answer), expected reason prefix
    # --- usual shapes ------------------------------------------------------------------------
    pytest.param('Reasoning...\n\n```json\n{"output": 3}\n```', "output", {"output": 3}, "", id="fenced"),
    pytest.param('The final answer is {"output": 3}.', "output", {"output": 3}, "", id="prose-sentence"),
    pytest.param('```json\n{"output": [1, 2]}\n```\n\nThis is because the list is sorted.', "output",
                 {"output": [1, 2]}, "", id="json-then-sentence"),
    pytest.param('```\n{"output": "abc"}\n```', "output", {"output": "abc"}, "", id="bare-fence"),
    pytest.param("```python\n{'output': [1, 2]}\n```", "output", {"output": [1, 2]}, "", id="python-fence"),
    pytest.param('<answer>{"output": -2.5e-3}</answer>', "output", {"output": -0.0025}, "", id="tags"),
    pytest.param('{\n  "input": {\n    "n": 3,\n    "names": ["a", "b"]\n  }\n}', "input",
                 {"input": {"n": 3, "names": ["a", "b"]}}, "", id="pretty-printed"),
    pytest.param('So:\r\n```json\r\n{"output": 1}\r\n```\r\n', "output", {"output": 1}, "", id="crlf"),
    pytest.param('[{"output": 1}]', "output", {"output": 1}, "", id="inside-a-list"),
    pytest.param("{}", None, {}, "", id="empty-object-no-key"),
    pytest.param('Therefore:\n\n```json\n{\n    "output": {\n        "length": 0,\n'
                 '        "subsequence": ""\n    }\n}\n```', "output",
                 {"output": {"length": 0, "subsequence": ""}}, "", id="pretty-nested"),
    pytest.param('Output: `{"output": "c94d2a1c"}`', "output", {"output": "c94d2a1c"}, "", id="inline-code"),
    pytest.param('**{"output": false}**', "output", {"output": False}, "", id="bold-json"),
    # --- \boxed -------------------------------------------------------------------------------
    pytest.param('\\boxed{{"output": 3}}', "output", {"output": 3}, "", id="boxed-double-brace"),
    pytest.param('Thus $\\boxed{{"input": {"n": 3}}}$.', "input", {"input": {"n": 3}}, "", id="boxed-input"),
    pytest.param('\\boxed{"output": 3}', "output", {"output": 3}, "", id="boxed-single-brace"),
    pytest.param('\\boxed{ {"output": [true, false]} }', "output", {"output": [True, False]}, "",
                 id="boxed-spaced"),
    pytest.param('**Final Answer**\n\\[\n\\boxed{\\{"output": 38\\}}\n\\]', "output", {"output": 38}, "",
                 id="boxed-latex-escaped-braces"),
    pytest.param('\\boxed{\\{"input": \\{"n": 3\\}\\}}', "input", {"input": {"n": 3}}, "",
                 id="boxed-latex-escaped-nested"),
    pytest.param('\\boxed{{"output": 1}, {"output": 2}}', "output", None, AMBIGUOUS, id="boxed-two"),
    # --- Python literals and forgiveness -----------------------------------------------------------
    pytest.param('{"output": True}', "output", {"output": True}, "", id="python-true"),
    pytest.param("{'output': None}", "output", {"output": None}, "", id="python-none"),
    pytest.param("{'input': {'s': 'abc', 'k': 2}}", "input", {"input": {"s": "abc", "k": 2}}, "",
                 id="single-quotes"),
    pytest.param("{'output': true, 'x': null}", None, {"output": True, "x": None}, "",
                 id="json-names-in-python"),
    pytest.param('{"output": [1, 2, 3,],}', "output", {"output": [1, 2, 3]}, "", id="trailing-commas"),
    pytest.param('{"output": (1, 2)}', "output", {"output": [1, 2]}, "", id="tuple"),
    pytest.param('{"output": [(1, "a"), (2, "b")]}', "output", {"output": [[1, "a"], [2, "b"]]}, "",
                 id="tuples-in-list"),
    pytest.param('{"output": ()}', "output", {"output": []}, "", id="empty-tuple"),
    pytest.param('{"output": (7,)}', "output", {"output": [7]}, "", id="one-tuple"),
    pytest.param('{"output": 3  # the count\n}', "output", {"output": 3}, "", id="python-comment"),
    pytest.param('{"output": {1: "a", 2: "b"}}', "output", {"output": {"1": "a", "2": "b"}}, "",
                 id="int-keys-become-strings"),
    pytest.param("{'output': \"it's\"}", "output", {"output": "it's"}, "", id="mixed-quotes"),
    pytest.param("{'output': 'C:\\path'}", "output", {"output": "C:\\path"}, "", id="python-invalid-escape"),
    pytest.param('{"output": ' + "9" * 100 + "}", "output", {"output": int("9" * 100)}, "", id="big-int"),
    pytest.param("""{'output': "'''", }""", "output", {"output": "'''"}, "",
                 id="triple-quotes-inside-string"),
    # --- strings that fool naive scanners ------------------------------------------------------------
    pytest.param('{"output": "}{"}', "output", {"output": "}{"}, "", id="braces-in-string"),
    pytest.param('{"output": "say \\"hi\\" {ok}"}', "output", {"output": 'say "hi" {ok}'}, "",
                 id="escaped-quotes"),
    pytest.param('{"output": "{\\"a\\": 1}"}', "output", {"output": '{"a": 1}'}, "", id="json-in-string"),
    pytest.param('{"output": "héllo 世界 😀"}', "output", {"output": "héllo 世界 😀"}, "",
                 id="unicode"),
    pytest.param('{"output": "\\u00e9\\ud83d\\ude00"}', "output", {"output": "é😀"}, "",
                 id="unicode-escapes"),
    pytest.param('{"output": "a\\/b"}', "output", {"output": "a/b"}, "", id="json-slash-escape"),
    pytest.param("Let's see, it's {\"output\": \"don't\"}, isn't it?", "output", {"output": "don't"}, "",
                 id="apostrophes-around"),
    pytest.param('We get $\\frac{1}{2}$ and $\\{x\\}$, then {"output": 0.5}.', "output", {"output": 0.5}, "",
                 id="latex-before"),
    pytest.param('{"output": 3}\n\nNote: for sets like {a, b we stop.', "output", {"output": 3}, "",
                 id="stray-open-brace-after"),
    # --- drafts and the last answer ------------------------------------------------------------------
    pytest.param('At first I thought {"output": 4}.\n\nChecking again, the answer is {"output": 5}.',
                 "output", {"output": 5}, "", id="draft-then-final"),
    pytest.param('```json\n{"output": 1}\n```\nWait, that is wrong.\n```json\n{"output": 2}\n```', "output",
                 {"output": 2}, "", id="corrected-fence"),
    pytest.param('{"input": {"n": 1}}\n\nThis gives {"n": 1} as kwargs.', "input", {"input": {"n": 1}}, "",
                 id="later-object-without-key"),
    pytest.param('For {"n": 2} we get 4, so {"output": 4} and {"output": 4}.', "output", {"output": 4}, "",
                 id="same-answer-twice"),
    pytest.param(LONG_REASONING + '\n```json\n{"output": [3, 1, 2]}\n```\n', "output", {"output": [3, 1, 2]},
                 "", id="200kb-reasoning"),
    pytest.param('{"output": 3}\nwhere {"n": x} was the input.', "output", {"output": 3}, "",
                 id="invalid-object-without-key-after"),
    pytest.param('{"output": 3}\n\nTo check:\n```python\nprint("{", main_solution(3))\n```', "output",
                 {"output": 3}, "", id="code-with-open-brace-after"),
    # --- no answer --------------------------------------------------------------------------------
    pytest.param("The output is 5.", "output", None, NO_JSON, id="no-json"),
    pytest.param("output: 5", "output", None, NO_JSON, id="bare-key-value"),
    pytest.param("{output: 5}", "output", None, NO_JSON, id="unquoted-key"),
    pytest.param('{"result": 5}', "output", None, 'no object with key "output"', id="wrong-key"),
    pytest.param('{"n": 3}', "input", None, 'no object with key "input"', id="kwargs-without-input"),
    pytest.param("", "output", None, NO_TEXT, id="empty"),
    pytest.param(None, "output", None, NO_TEXT, id="none"),
    pytest.param("  \n ", "output", None, NO_TEXT, id="blank"),
    # --- truncated -------------------------------------------------------------------------------------
    pytest.param('Draft: {"output": 1}\n\nFinal:\n```json\n{"output": [1, 2,', "output", None, INCOMPLETE,
                 id="truncated-final-after-draft"),
    pytest.param('{"output": "abc', "output", None, INCOMPLETE, id="truncated-in-string"),
    pytest.param('I first got {"output": 1}.\n\nSo the final answer is {"output": [1, 2,', "output", None,
                 INCOMPLETE, id="truncated-in-prose-after-draft"),
    pytest.param('Draft {"output": 1}\n\nFinal: {"output": [1, 2\n\nThat is all.', "output", None, INCOMPLETE,
                 id="unclosed-final-then-prose"),
    pytest.param('So the answer is:\n```json\n{', "output", None, INCOMPLETE, id="truncated-after-brace"),
    pytest.param('Draft {"output": 1}.\n\nFinal answer:\n```json\n', "output", None, INCOMPLETE,
                 id="truncated-after-json-fence"),
    pytest.param('```json\n{"output": 1}\n', "output", {"output": 1}, "", id="only-closing-fence-missing"),
    pytest.param('{"output": {"a": 1}, "b": [2,', None, None, INCOMPLETE, id="truncated-around-inner-object"),
    pytest.param('\\boxed{{"input": {"n": 3, "m":', "input", None, INCOMPLETE, id="truncated-boxed"),
    # --- refused values ---------------------------------------------------------------------------------
    pytest.param('{"output": NaN}', "output", None, INVALID, id="nan"),
    pytest.param('{"output": -Infinity}', "output", None, INVALID, id="minus-infinity"),
    pytest.param('{"output": 1e400}', "output", None, INVALID, id="overflow-float"),
    pytest.param('{"output": {1, 2}}', "output", None, INVALID, id="set"),
    pytest.param('{"output": b"xy"}', "output", None, INVALID, id="bytes"),
    pytest.param('{"output": [1, 2, ...]}', "output", None, INVALID, id="ellipsis"),
    pytest.param('{"output": 1+2j}', "output", None, INVALID, id="complex"),
    pytest.param('{"output": 1/3}', "output", None, INVALID, id="expression"),
    pytest.param('{"output": 9**9**9}', "output", None, INVALID, id="power-not-evaluated"),
    pytest.param('{"output": ' + "1" * 5000 + "}", "output", None, INVALID, id="number-too-long"),
    pytest.param(DEEP, "output", None, INVALID, id="too-deep"),
    pytest.param('{"output": {(1, 2): 3}}', "output", None, INVALID, id="tuple-key"),
    pytest.param('{"output": "\\ud800"}', "output", None, INVALID, id="lone-surrogate"),
    pytest.param('{"output": """abc"""}', "output", None, INVALID, id="triple-quoted-string"),
    pytest.param('{"output": 3}\n\nCorrection: {"output": undefined}', "output", None, INVALID,
                 id="invalid-final-hides-draft"),
    pytest.param('{"output": 3}\n{"answer": {"output": 4}, oops}', "output", None, INVALID,
                 id="broken-wrapper-at-end"),
    # --- ambiguous --------------------------------------------------------------------------------------
    pytest.param('either {"output": 1} or {"output": 2}', "output", None, AMBIGUOUS, id="two-on-one-line"),
    pytest.param('{"output": 3} (or {"output": 3.0} as a float)', "output", None, AMBIGUOUS,
                 id="int-vs-float-on-one-line"),
    pytest.param('```json\n{"output": 1}\n{"output": 2}\n```', "output", None, AMBIGUOUS,
                 id="two-in-one-fence"),
    pytest.param('{"output": (5)}', "output", None, AMBIGUOUS, id="parenthesised-value"),
    pytest.param('{"output": 1, "output": 2}', "output", None, AMBIGUOUS, id="duplicate-key"),
    pytest.param("{'output': 1, 'output': 1}", "output", None, AMBIGUOUS, id="duplicate-key-python"),
    pytest.param('{"output": {1: "a", "1": "b"}}', "output", None, AMBIGUOUS, id="int-and-str-key"),
    pytest.param('{"output": "a" "b"}', "output", None, AMBIGUOUS, id="adjacent-strings"),
    pytest.param('{"output": "a\\/b",}', "output", None, AMBIGUOUS, id="slash-escape-not-json"),
    pytest.param(" ".join(['{"output": x}'] * 150) + ' {"output": 2}', "output", None, AMBIGUOUS,
                 id="too-many-rivals"),
]


@pytest.mark.parametrize("text, key, value, reason", JSON_CASES)
def test_extract_json_answer_table(text, key, value, reason):
    got = extract_json_answer(text, key)
    assert isinstance(got, Answer)
    assert got.value == value
    if value is not None:
        assert got.reason == ""
        assert json.loads(json.dumps(got.value)) == got.value   # JSON-representable
        assert type(got.value) is dict
    else:
        assert got.reason.startswith(reason), got.reason
        assert got.reason and len(got.reason) < 80 and "\n" not in got.reason


def test_json_table_is_large_enough():
    assert len(JSON_CASES) >= 40


def test_types_are_exact():
    # 1, 1.0 and True are different answers
    assert type(extract_json_answer('{"output": 1.0}', "output").value["output"]) is float
    assert extract_json_answer("{'output': (True, 1)}", "output").value["output"] == [True, 1]
    assert type(extract_json_answer("{'output': (True, 1)}", "output").value["output"][0]) is bool


def test_without_key_returns_last_object():
    got = extract_json_answer('{"input": {"n": 1}}\n\nthen\n\n{"output": 2}')
    assert got == Answer({"output": 2}, "")


def test_nested_key_is_not_searched():
    # the answer object is the outermost valid object; a wrapper without the key is not an answer
    got = extract_json_answer('{"answer": {"output": 3}}', "output")
    assert got.value is None and got.reason == 'no object with key "output"'


def test_reasons_are_usable_in_messages():
    assert extract_json_answer("no json", "output").reason == "no JSON object"
    assert extract_json_answer('{"a": 1}', "output").reason == 'no object with key "output"'
    assert extract_json_answer('{"output": [1,', "output").reason == "incomplete JSON at the end"
    assert extract_json_answer('{"output": 1, "output": 2}', "output").reason == \
        'ambiguous: duplicate key "output"'


@pytest.mark.parametrize("text", [
    "{" * 200_000,
    '{"' * 100_000,
    "{}" * 100_000,
    "{" * 100_000 + "}" * 100_000,
    "{" + "'a" * 100_000,
    "{" + ': "' * 60_000,
    '{"output": "' + "a" * 900_000 + '"}',
    '{"output": ' + "1" * 100_000 + "}",
    "x" * 2_000_000 + "{",
    '{"output": 1, "x": "' + '\\"' * 60_000 + '\n}',          # escaped quotes on one long line
    '{"output": 1, "x": """' + '\\"' * 60_000 + '\n"""}',
], ids=["open-braces", "open-objects", "many-empty-objects", "deep-braces", "apostrophes", "colon-quotes",
        "900kb-string", "100k-digit-number", "2mb-then-brace", "escaped-quotes-line", "triple-quoted-line"])
def test_adversarial_texts_end_with_a_reason(text):
    # Only behaviour is asserted; these run in a fraction of a second each (linear scanner).
    got = extract_json_answer(text, "output")
    if got.value is None:
        assert got.reason
    else:
        assert got.value == {"output": "a" * 900_000}


def test_python_literal_over_its_limit_is_refused_but_json_is_read():
    items = "1, " * 70_000
    assert extract_json_answer('{"output": [' + items + "]}", "output").reason.startswith(INVALID)
    got = extract_json_answer('{"output": [' + items + "1]}", "output")
    assert got.reason == "" and len(got.value["output"]) == 70_001


def test_object_over_size_limit_is_refused():
    got = extract_json_answer('{"output": "' + "a" * 1_100_000 + '"}', "output")
    assert got.value is None and got.reason.startswith(INVALID)


def _random_value(r, depth=0):
    k = r.randrange(8 if depth < 4 else 5)
    if k == 0:
        return r.randint(-10**12, 10**12)
    if k == 1:
        return r.choice([0.5, -1.25, 1e-7, 3.0, 1e20])
    if k == 2:
        return r.choice([True, False, None])
    if k in (3, 4):   # strings full of characters that confuse scanners
        return "".join(r.choice("ab {}[]()\"'\\:,\n\té😀/#") for _ in range(r.randint(0, 8)))
    if k in (5, 6):
        return [_random_value(r, depth + 1) for _ in range(r.randint(0, 4))]
    return {"".join(r.choice("k{}\"' ") for _ in range(r.randint(1, 4))): _random_value(r, depth + 1)
            for _ in range(r.randint(0, 4))}


def test_round_trip_of_random_values_in_common_wrappings():
    r = random.Random(7)
    for _ in range(300):
        obj = {"output": _random_value(r)}
        for text in (
            "Reasoning, it's {fine}.\n```json\n" + json.dumps(obj, indent=r.choice([None, 2]))
            + "\n```\nDone.",
            "The answer is " + json.dumps(obj, ensure_ascii=False) + ".",
            "\\boxed{" + json.dumps(obj) + "}",
            "So: " + repr(obj),                                  # Python literal
        ):
            got = extract_json_answer(text, "output")
            assert json.dumps(got.value) == json.dumps(obj), text   # same types too (1 vs 1.0)


@pytest.mark.parametrize("final", [
    json.dumps({"output": {"a": [1, 2, {"b": 'x}y\\"z'}], "c": None}}, indent=2),
    json.dumps({"output": "it's a \"test\" {"}),
    "{'output': (1, 'a', True),}",
])
def test_final_answer_cut_anywhere_is_incomplete_never_the_draft(final):
    draft = 'Draft answer: {"output": [9, 9]}\n\nLet me recheck that.\n\n```json\n'
    text = draft + final + "\n```\n"
    for cut in range(len(draft), len(draft) + len(final)):
        assert extract_json_answer(text[:cut], "output") == Answer(None, INCOMPLETE), text[len(draft):cut]
    assert extract_json_answer(text, "output").value["output"] != [9, 9]
