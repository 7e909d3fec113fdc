"""The two answer rules side by side: the method's (default) and the lenient one."""

import json
import random

import pytest

from annoy_datasync.answers import (
    INVALID, LENIENT, METHOD, NO_JSON, NO_KEY, NO_TEXT, NOT_OBJECT, extract_answer,
)

FENCE = "```"

# (answer text, key, value under the method's rule or its reason prefix,
#  value under the lenient rule or its reason prefix)
TABLE = [
    # a Python literal is not the JSON answer the prompt asks for
    ("So the answer is {'output': 38}", "output", INVALID, {"output": 38}),
    # the key only in an earlier object: the method reads the last object only
    ('{"output": 3}\n\nMy confidence: {"level": "high"}', "output", NO_KEY, {"output": 3}),
    # the last object is not an object (a json block holding a list)
    (f'{FENCE}json\n[{{"output": 3}}]\n{FENCE}', "output", NOT_OBJECT, {"output": 3}),
    # no object at all
    ("The output is 3.", "output", NO_JSON, NO_JSON),
    ("", "output", NO_TEXT, NO_TEXT),
    # fenced: the last ```json block wins, even over a later unfenced object
    (f'{FENCE}json\n{{"output": 1}}\n{FENCE}\nor maybe {{"output": 2}}', "output",
     {"output": 1}, {"output": 2}),
    (f'{FENCE}json\n{{"output": 1}}\n{FENCE}\n{FENCE}json\n{{"output": 2}}\n{FENCE}', "output",
     {"output": 2}, {"output": 2}),
    # unfenced, with text after the object
    ('Thus {"output": [1, 2]} is what it returns.', "output", {"output": [1, 2]}, {"output": [1, 2]}),
    # True/None as Python writes them (the method tolerates them)
    ('{"output": True, "note": None}', "output", {"output": True, "note": None},
     {"output": True, "note": None}),
    ('{"input": {"flag": False}}', "input", {"input": {"flag": False}}, {"input": {"flag": False}}),
    # a string value holding a raw newline: kept (the original deleted it)
    ('{"output": "line one\nline two"}', "output", {"output": "line one\nline two"}, INVALID),
    # a string value holding parentheses: kept as written, also when tuples are rewritten
    ('{"output": "f(x) = (a)", "n": 1}', "output", {"output": "f(x) = (a)", "n": 1},
     {"output": "f(x) = (a)", "n": 1}),
    ('{"output": ["f(x)", (1, 2)], "ok": True}', "output", {"output": ["f(x)", [1, 2]], "ok": True},
     {"output": ["f(x)", [1, 2]], "ok": True}),
    # the words True/None inside strings stay words
    ('{"output": "None of them is True", "x": None}', "output",
     {"output": "None of them is True", "x": None}, {"output": "None of them is True", "x": None}),
    # braces inside strings are no object boundaries
    ('{"output": "{not} an {object"}', "output", {"output": "{not} an {object"},
     {"output": "{not} an {object"}),
    # \boxed{} and escaped braces
    ('\\boxed{{"output": 7}}', "output", {"output": 7}, {"output": 7}),
    ('\\boxed{\\{"output": 7\\}}', "output", {"output": 7}, {"output": 7}),
    ('The answer: \\{"output": 7\\}', "output", {"output": 7}, NO_JSON),
    ('\\boxed{\\text{answer: } {"output": 7}}', "output", {"output": 7}, {"output": 7}),
    # CRLF line ends
    (f'Answer:\r\n{FENCE}json\r\n{{\r\n  "output": 5\r\n}}\r\n{FENCE}\r\nDone.', "output",
     {"output": 5}, {"output": 5}),
    # a json block that does not parse: no answer under the method (no draft elsewhere)
    (f'{{"output": 1}}\n{FENCE}json\n{{"output": 2,,}}\n{FENCE}', "output", INVALID, INVALID),
    # a json block with prose-like comments around the object: its last object
    (f'{FENCE}json\n// final\n{{"output": 4}}\n{FENCE}', "output", {"output": 4}, {"output": 4}),
    # the last object is LaTeX, not JSON: no answer under the method
    ('{"output": 2} since $x^{2}$', "output", INVALID, {"output": 2}),
    # NaN is not JSON under either rule
    ('{"output": NaN}', "output", INVALID, INVALID),
]


@pytest.mark.parametrize("text, key, method, lenient", TABLE)
def test_answer_rules(text, key, method, lenient):
    for rule, want in ((METHOD, method), (LENIENT, lenient)):
        got = extract_answer(text, key, rule)
        if isinstance(want, dict):
            assert got.value == want and got.reason == "", (rule, got)
        else:
            assert got.value is None and got.reason.startswith(want), (rule, got)


def test_method_is_the_default_and_unknown_rules_are_refused():
    assert extract_answer("{'output': 1}", "output").value is None
    with pytest.raises(ValueError):
        extract_answer('{"output": 1}', "output", "strict")


def test_types_survive_the_method_rule():
    got = extract_answer('{"output": [1.0, 2, "3", null, {"a": false}]}', "output").value
    assert got == {"output": [1.0, 2, "3", None, {"a": False}]}
    assert type(got["output"][0]) is float and type(got["output"][1]) is int


def test_unclosed_braces_before_the_answer_do_not_hide_it():
    # a cut-off draft (braces never closed) before the final object
    text = "{" * 200_000 + '{"output": 1}'
    assert extract_answer(text, "output").value == {"output": 1}


def _random_value(r, depth=0):
    k = r.randint(0, 7 if depth < 3 else 4)
    if k == 0:
        return r.choice([0, -3, 2.5, 1e-7, 10 ** 20])
    if k == 1:
        return r.choice([True, False, None])
    if k in (2, 3, 4):   # strings full of what confuses scanners and the Python retry
        parts = ["{", "}", "(", ")", '"', "'", "\\", ":", ",", "\n", "None", "True", "é", " "]
        return "".join(r.choice(parts) for _ in range(r.randint(0, 8)))
    if k in (5, 6):
        return [_random_value(r, depth + 1) for _ in range(r.randint(0, 4))]
    return {f"k{i}{{": _random_value(r, depth + 1) for i in range(r.randint(0, 3))}


def test_method_rule_round_trips_random_values_in_common_wrappings():
    r = random.Random(11)
    for _ in range(300):
        obj = {"output": _random_value(r)}
        body = json.dumps(obj, indent=r.choice([None, 2]), ensure_ascii=r.random() < 0.5)
        for text in (f"It's {{fine}}, I think.\n{FENCE}json\n{body}\n{FENCE}\nDone.",
                     f"The answer is {body}.",
                     f"\\boxed{{{body}}}",
                     f"Answer:\n{body}\n".replace("\n", "\r\n")):
            got = extract_answer(text, "output")
            assert json.dumps(got.value) == json.dumps(obj), (text, got)


def test_method_rule_never_raises_on_garbage():
    r = random.Random(5)
    alphabet = "{}[]()\"'\\:,\n\r `json output input True None boxed"
    for _ in range(2000):
        text = "".join(r.choice(alphabet) for _ in range(r.randint(0, 60)))
        got = extract_answer(text, "output")
        assert (got.value is None) != (got.reason == "")


@pytest.mark.parametrize("text", [
    "{" * 20_000 + "}" * 20_000,                    # braces nested thousands deep
    "\\boxed{" * 3_000 + "}" * 3_000,               # boxes inside boxes
    "{" * 20_000 + '{"output": 1}' + "}" * 20_000,  # an answer under thousands of wrappers
])
def test_method_rule_parses_deep_nesting_a_bounded_number_of_times(text, monkeypatch):
    # Every parse attempt reads the whole span, so one attempt per nesting level made the
    # rule quadratic (an 80,000-character answer of nested braces took minutes).
    import annoy_datasync.answers as answers
    calls = []
    real = answers._method_loads
    monkeypatch.setattr(answers, "_method_loads", lambda s: calls.append(len(s)) or real(s))
    got = extract_answer(text, "output")
    assert got.value is None and got.reason.startswith(INVALID)
    assert len(calls) <= answers.MAX_DEPTH + 2


def test_method_rule_unwraps_a_few_boxes_and_double_braces():
    text = "\\boxed{" * 3 + '{{"output": [1, {"a": 2}]}}' + "}" * 3
    assert extract_answer(text, "output").value == {"output": [1, {"a": 2}]}


@pytest.mark.parametrize("text", [
    'So the answer is: ```json\n{"output": 1}\n```',
    'We have $\\{x\\}$ and \\frac{1}{2}, so ```json\n{"output": 1}\n```\n',
])
def test_a_json_block_opened_mid_line_is_read_by_both_rules(text):
    # the fence that closes it stands alone on the last line: not a block left open
    for rule in (METHOD, LENIENT):
        assert extract_answer(text, "output", rule).value == {"output": 1}, rule


def test_a_json_block_left_open_is_still_a_cut_off_answer_for_the_lenient_rule():
    text = '{"output": 1} was a draft.\n```json\n{"output": 2'
    assert extract_answer(text, "output", LENIENT).reason.startswith("incomplete")


def test_lenient_rule_unescapes_a_bounded_number_of_latex_objects(monkeypatch):
    # {\{ nested thousands deep: one unescape of the whole span per level was quadratic
    import annoy_datasync.answers as answers
    calls = []
    real = answers._unescape_latex_object
    monkeypatch.setattr(answers, "_unescape_latex_object", lambda s: calls.append(1) or real(s))
    text = "{\\{" * 5_000 + "\\}}" * 5_000
    assert extract_answer(text, "output", LENIENT).value is None
    assert len(calls) <= answers.MAX_DEPTH
    assert extract_answer('\\boxed{\\{"output": 7\\}}', "output", LENIENT).value == {"output": 7}
