"""Prompt templates: defaults, rendering with braces, partial overrides, clear errors."""

import json

import pytest

from annoy_datasync.jsonl import InputError
from annoy_datasync.prompts import TEMPLATE_FIELDS, fill, load_prompts, placeholders
from testutil import FIXTURES

HEADINGS = ("## Main Function", "## Input Output Description", "## Input Generator",
            "## Problem Statement")


def test_defaults_have_every_template_with_exactly_its_placeholders():
    p = load_prompts()
    assert set(p) == set(TEMPLATE_FIELDS)
    for name, fields in TEMPLATE_FIELDS.items():
        assert placeholders(p[name]) == set(fields), name


def test_transform_prompt_names_the_four_headings_and_embeds_code_verbatim():
    code = 'd = {"a": {1: 2}}\nprint(f"{{code}} {d}")\n'
    text = load_prompts().transform(code)
    for h in HEADINGS:
        assert h in text
    assert "main_solution" in text and "input_generator()" in text
    # inserted once, never re-scanned: the literal {{code}} inside the code survives
    assert code in text


def test_fill_is_a_single_pass_and_leaves_single_braces_alone():
    assert fill("a {x} {{v}} {}", {"v": "{{v}} {y}"}) == "a {x} {{v}} {y} {}"
    with pytest.raises(KeyError):
        fill("{{missing}}", {})


def test_output_prediction_shows_input_as_json_and_appends_refcode_tip():
    p = load_prompts()
    io = {"input": {"s": "café", "flag": True, "xs": [1, None]}, "output": {"ok": False}}
    text = p.prediction("o", problem="PROBLEM?", io_requirements="REQS", io=io,
                        refcode="def main_solution(s):\n    return {}")
    assert "PROBLEM?" in text and "REQS" in text
    assert json.dumps(io["input"], ensure_ascii=False) in text   # JSON, not Python repr
    assert "True" not in text and '{"output": <value>}' in text
    assert text.endswith("def main_solution(s):\n    return {}\n```")
    assert "Hint: the reference code" in text


def test_input_prediction_shows_output_and_no_tip_without_refcode():
    p = load_prompts()
    text = p.prediction("i", problem="P", io_requirements="R", io={"input": {"n": 1}, "output": [3, "x"]})
    assert '[3, "x"]' in text and '{"n": 1}' not in text
    assert '{"input": {...}}' in text
    assert "reference code" not in text
    with pytest.raises(ValueError):
        p.prediction("x", problem="P", io_requirements="R", io={"input": {}, "output": 1})


def test_revision_wraps_the_verifier_message():
    text = load_prompts().revision("Your predicted output 3 is wrong.")
    assert text.startswith("Your predicted output 3 is wrong.")
    assert "differs from every answer" in text


def test_partial_override_replaces_only_the_named_templates():
    default = load_prompts()
    p = load_prompts(FIXTURES / "steps_prompts_override.yaml")
    assert p["output_pred"].startswith("OVERRIDDEN") and p["revision"].startswith("OVERRIDDEN")
    assert p["input_pred"] == default["input_pred"] and p["transform"] == default["transform"]
    assert p.origin["revision"].endswith("steps_prompts_override.yaml")
    assert p.revision("bad") == "OVERRIDDEN feedback: bad"


@pytest.mark.parametrize("content, expect", [
    ("outptu_pred: 'x {{input}}'\n", ['unknown template "outptu_pred"', "known: input_pred"]),
    ("output_pred: '{{problem}} {{io_requirements}}'\n", ['"output_pred" lacks {{input}}']),
    ("revision: '{{feedback}} {{status}}'\n", ['"revision" uses {{status}}', "never filled"]),
    ("revision: 3\n", ['"revision" should be text, got int']),
    ("- revision\n", ["YAML mapping", "got a list"]),
    ("revision: '{{feedback}}'\n  bad: [\n", [":2: not valid YAML"]),
])
def test_bad_prompt_files_give_a_clear_error_naming_the_file(tmp_path, content, expect):
    f = tmp_path / "mine.yaml"
    f.write_text(content)
    with pytest.raises(InputError) as exc:
        load_prompts(f)
    msg = str(exc.value)
    assert msg.startswith(str(f))
    for part in expect:
        assert part in msg


def test_missing_prompts_file(tmp_path):
    with pytest.raises(InputError, match="no such prompts file"):
        load_prompts(tmp_path / "nope.yaml")


def test_empty_override_file_keeps_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("# nothing\n")
    assert dict(load_prompts(f)) == dict(load_prompts())
