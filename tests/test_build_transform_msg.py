"""build_transform_msg.py: raw code records -> transform prompts."""

import subprocess
import sys

import pytest

import build_transform_msg as step
from annoy_datasync.prompts import load_prompts
from testutil import FIXTURES, SRC, assert_bad_input_refused, read, run_step


def run(argv, capsys):
    return run_step(step.main, argv, capsys)


def test_raw_records_get_messages_and_keep_their_fields(tmp_path, capsys):
    out = tmp_path / "msg.jsonl"
    rc, err = run(["--raw_code_file", FIXTURES / "steps_rawcode.jsonl", "--raw_code_msg_file", out],
                  capsys)
    assert rc == 0
    raw = read(FIXTURES / "steps_rawcode.jsonl")
    got = read(out)
    assert [r["blob_id"] for r in got] == ["a1", "b2"]          # blank content skipped
    for r in got:
        src = next(x for x in raw if x["blob_id"] == r["blob_id"])
        assert {k: v for k, v in r.items() if k != "messages"} == src   # every field carried
        assert len(r["messages"]) == 1 and r["messages"][0]["role"] == "user"
        prompt = r["messages"][0]["content"]
        assert src["content"] in prompt                          # braces and {{code}} untouched
        assert prompt == load_prompts().transform(src["content"])
    assert err.strip().splitlines()[-1] == "build_transform_msg: messages=2 skipped_empty_content=1"


def run_with_prompts(tmp_path, capsys, yaml_text):
    """Run the step on the fixture with `yaml_text` as its --prompts file: (rc, stderr, output)."""
    mine = tmp_path / "p.yaml"
    mine.write_text(yaml_text)
    out = tmp_path / "out.jsonl"
    rc, err = run(["--raw_code_file", FIXTURES / "steps_rawcode.jsonl", "--raw_code_msg_file", out,
                   "--prompts", mine], capsys)
    return rc, err, out


def test_prompts_override_changes_the_wording(tmp_path, capsys):
    rc, _, out = run_with_prompts(tmp_path, capsys, "transform: |-\n  REWRITE THIS:\n  {{code}}\n")
    assert rc == 0
    first = read(out)[0]
    assert first["messages"][0]["content"] == "REWRITE THIS:\n" + first["content"]


@pytest.mark.parametrize("lines, expect", [
    (None, "no such file"),
    (["this is not json", '{"content": "x"}'], ":1: not valid JSON"),
    (['{"content": "x = 1"}', '{"code": "y = 2", "path": "a.py"}'], ':2: no "content" field (keys: code, path)'),
    (['{"content": ["x"]}'], ':1: "content" should be str, got list'),
])
def test_bad_input_exits_1_with_file_line_and_leaves_no_output(tmp_path, capsys, lines, expect):
    assert_bad_input_refused(step.main, capsys, tmp_path / "raw.jsonl", lines,
                             ("--raw_code_file", "--raw_code_msg_file"), expect)


def test_bad_prompts_file_exits_1_before_writing(tmp_path, capsys):
    rc, err, out = run_with_prompts(tmp_path, capsys, "transform: 'no placeholder'\n")
    assert rc == 1 and "lacks {{code}}" in err and not out.exists()


def test_help_describes_input_and_output_from_the_repo_root(tmp_path):
    res = subprocess.run([sys.executable, str(SRC / "build_transform_msg.py"), "--help"],
                         capture_output=True, text=True, check=True)
    assert "--raw_code_file" in res.stdout and '"messages"' in res.stdout and "Input" in res.stdout
