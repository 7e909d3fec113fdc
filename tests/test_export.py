"""export.py: exported files pass LLaMA-Factory's sharegpt rules; the options do what they say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import export
from annoy_datasync import cli
from annoy_datasync.export import TipRemover
from annoy_datasync.prompts import load_prompts

PROMPTS = load_prompts()
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                 "assistant_tag": "gpt"}


def check_sharegpt(line: dict, entry: dict) -> list[dict]:
    """LLaMA-Factory's rules for a supervised sharegpt example (data/README.md and its
    converter), read through the dataset_info entry: the messages column is a list; an
    optional leading system message; then user and assistant strictly alternate, user
    first, assistant last, so the count is even; every content a non-empty string.
    Returns the messages after the system one."""
    assert entry["formatting"] == "sharegpt"
    col = entry.get("columns", {}).get("messages", "conversations")
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
            "assistant_tag": "gpt", "system_tag": "system", **entry.get("tags", {})}
    role, content = tags["role_tag"], tags["content_tag"]
    msgs = line[col]
    assert isinstance(msgs, list) and msgs, "messages must be a non-empty list"
    if msgs[0].get(role) == tags["system_tag"]:
        assert isinstance(msgs[0][content], str) and msgs[0][content].strip()
        msgs = msgs[1:]
    assert len(msgs) >= 2 and len(msgs) % 2 == 0, f"odd message count {len(msgs)}"
    for i, m in enumerate(msgs):
        assert set(m) == {role, content}, m
        want = tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"]
        assert m[role] == want, f"turn {i} is {m[role]!r}, expected {want!r}"
        assert isinstance(m[content], str) and m[content].strip(), f"empty turn {i}"
    return msgs


def prompt_of(i: int, with_tip: bool = True) -> str:
    """The turn-1 prompt of record i, as build_spec_msg.py writes it (with or without tip)."""
    return PROMPTS.prediction("io"[i % 2], problem=f"Gear {i}: how many teeth?",
                              io_requirements="a (int): teeth", io={"input": {"a": i}, "output": i},
                              refcode=f"def main_solution(a):\n    return a  # {i}\n" if with_tip else None)


def final_records() -> list[dict]:
    """Final records as assemble_spec_demo.py writes them, built with the real prompts."""
    recs = []
    for i in range(6):
        pred = "io"[i % 2]
        prompt = prompt_of(i)
        rec = {"prompt": prompt, "turn_1": f"First try {i}.", "feedback_1": "Your answer is correct.",
               "turn_2": None, "feedback_2": None, "itemid": i, "ioid": 0, "io_pred": pred}
        if i >= 3:
            rec.update(feedback_1=f"Given the input {{\"a\": {i}}}, your predicted output 0 is wrong.",
                       turn_2=f"Second try {i}.", feedback_2="Your answer is correct.")
        if i == 5:
            rec.update(feedback_2="Still wrong.", failed=True)
        recs.append(rec)
    return recs


def write_final(tmp_path: Path, recs: list[dict] | None = None) -> Path:
    path = tmp_path / "final.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (recs or final_records())))
    return path


def export_run(tmp_path: Path, *extra: str, recs: list[dict] | None = None):
    src = write_final(tmp_path, recs)
    out = tmp_path / "export" / "annoy.jsonl"
    assert export.main(["--input_file", str(src), "--output_file", str(out), *extra]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    info = json.loads((out.parent / "dataset_info.json").read_text())
    return lines, info


def test_sharegpt_export_passes_llamafactory_rules(tmp_path, capsys):
    lines, info = export_run(tmp_path)
    entry = info["annoy"]
    recs = [r for r in final_records() if not r.get("failed")]
    assert len(lines) == len(recs)
    for line, rec in zip(lines, recs):
        msgs = check_sharegpt(line, entry)
        assert msgs[0]["value"] == rec["prompt"]  # the tip stays by default
        assert msgs[1]["value"] == rec["turn_1"]
        if rec["turn_2"] is None:
            assert len(msgs) == 2
        else:
            assert [m["value"] for m in msgs[2:]] == [PROMPTS.revision(rec["feedback_1"]),
                                                     rec["turn_2"]]
    assert "exported_single_turn=3 exported_multi_turn=2 skipped_failed=1" in capsys.readouterr().err


def test_dataset_info_entry_has_llamafactory_keys(tmp_path):
    (tmp_path / "export").mkdir()
    other = {"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}
    (tmp_path / "export" / "dataset_info.json").write_text(json.dumps(other))
    _, info = export_run(tmp_path, "--dataset_name", "annoy_pp")
    assert info["alpaca_en_demo"] == other["alpaca_en_demo"]  # other entries kept
    entry = info["annoy_pp"]
    assert entry == {"file_name": "annoy.jsonl", "formatting": "sharegpt",
                     "columns": {"messages": "conversations"}, "tags": SHAREGPT_TAGS}
    # file_name is relative to the directory of dataset_info.json (LLaMA-Factory's dataset_dir)
    assert (tmp_path / "export" / entry["file_name"]).is_file()


def test_openai_format_with_system_prompt(tmp_path):
    lines, info = export_run(tmp_path, "--format", "openai", "--system", "You reason carefully.")
    entry = info["annoy"]
    assert entry["columns"] == {"messages": "messages"}
    assert entry["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "system_tag": "system"}
    for line in lines:
        assert line["messages"][0] == {"role": "system", "content": "You reason carefully."}
        check_sharegpt(line, entry)
    assert [len(x["messages"]) for x in lines] == [3, 3, 3, 5, 5]


def test_sharegpt_system_prompt_is_a_column(tmp_path):
    lines, info = export_run(tmp_path, "--system", "Be brief.")
    assert info["annoy"]["columns"] == {"messages": "conversations", "system": "system"}
    assert all(x["system"] == "Be brief." for x in lines)


def test_drop_tip_cuts_the_refcode_tip(tmp_path, capsys):
    recs = final_records()
    recs[0]["prompt"] = "A prompt built with --no_refcode."
    lines, _ = export_run(tmp_path, "--drop_tip", recs=recs)
    err = capsys.readouterr().err
    assert "tip_removed=4" in err and "tip_not_found=1" in err
    assert lines[0]["conversations"][0]["value"] == "A prompt built with --no_refcode."
    for i, line in enumerate(lines[1:], start=1):
        assert line["conversations"][0]["value"] == prompt_of(i, with_tip=False)
        assert "main_solution" in recs[i]["prompt"]


def test_tip_template_matching_is_anchored_at_the_end():
    tip = TipRemover(template="Hint: see the code.\n```python\n{{refcode}}\n```")
    body = "Question. Someone wrote 'Hint: see the code.' in the problem."
    text, found = tip(body + "\n\nHint: see the code.\n```python\nx = 1\n```")
    assert found and text == body
    # the tip's words inside the problem only: nothing to cut
    assert tip(body) == (body, False)
    # code that itself contains the tip's words is still cut at the real tip
    code = "s = 'Hint: see the code.'\n"
    assert tip("Q\n\nHint: see the code.\n```python\n" + code + "\n```\n") == ("Q", True)
    with pytest.raises(ValueError):
        TipRemover(template="{{refcode}} is the code")


def test_tip_marker_for_other_prompt_wordings(tmp_path):
    recs = final_records()
    for r in recs:
        r["prompt"] = f"Question {r['itemid']}\n\nTip: here is code.\nprint(1)"
    lines, _ = export_run(tmp_path, "--drop_tip", "--tip_marker", "Tip: here is code.", recs=recs)
    assert [x["conversations"][0]["value"] for x in lines] == [f"Question {i}" for i in range(5)]


def test_tip_template_from_a_user_prompts_file(tmp_path):
    custom = tmp_path / "my_prompts.yaml"
    custom.write_text("refcode_tip: |-\n  REFERENCE (do not copy):\n  {{refcode}}\n")
    mine = load_prompts(custom)
    recs = final_records()
    for r in recs:
        r["prompt"] = "Q" + str(r["itemid"]) + "\n\n" + mine.render("refcode_tip", refcode="x = 2")
    lines, _ = export_run(tmp_path, "--drop_tip", "--prompts", str(custom), recs=recs)
    assert [x["conversations"][0]["value"] for x in lines] == [f"Q{i}" for i in range(5)]


def test_drop_feedback_keeps_prompt_and_turn_2(tmp_path, capsys):
    lines, info = export_run(tmp_path, "--drop_feedback")
    for line in lines:
        check_sharegpt(line, info["annoy"])
    assert all(len(x["conversations"]) == 2 for x in lines)
    assert [x["conversations"][1]["value"] for x in lines] == [
        "First try 0.", "First try 1.", "First try 2.", "Second try 3.", "Second try 4."]
    assert "exported_turn2_only=2" in capsys.readouterr().err


def test_raw_feedback_and_keep_failed(tmp_path):
    lines, info = export_run(tmp_path, "--raw_feedback", "--keep_failed")
    assert len(lines) == 6
    recs = final_records()
    for line, rec in zip(lines, recs):
        check_sharegpt(line, info["annoy"])
        if rec["turn_2"] is not None:
            assert line["conversations"][2]["value"] == rec["feedback_1"]


def test_bad_record_names_file_and_line(tmp_path, capsys):
    recs = final_records()
    del recs[2]["turn_1"]
    src = write_final(tmp_path, recs)
    out = tmp_path / "out.jsonl"
    assert cli.run(export.main, ["--input_file", str(src), "--output_file", str(out)]) == 1
    assert f'{src}:3: no "turn_1" field' in capsys.readouterr().err
    assert not out.exists()  # no partial output


def test_empty_answer_is_skipped_not_exported(tmp_path, capsys):
    recs = final_records()
    recs[1]["turn_1"] = "   "
    lines, info = export_run(tmp_path, recs=recs)
    assert len(lines) == 4
    assert "skipped_empty_text=1" in capsys.readouterr().err


def test_usage_errors(tmp_path):
    src = write_final(tmp_path)
    with pytest.raises(SystemExit) as exc:
        export.main(["--input_file", str(src), "--tip_marker", "Tip"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        export.main(["--input_file", str(src), "--format", "alpaca"])


def test_schema_checker_rejects_what_llamafactory_rejects():
    entry = {"formatting": "sharegpt", "columns": {"messages": "conversations"}}
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    check_sharegpt(good, entry)
    bad = [
        {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
        {"conversations": [{"from": "human", "value": "q"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "a"}]},
        {"conversations": []},
    ]
    for b in bad:
        with pytest.raises(AssertionError):
            check_sharegpt(b, entry)
