import json
import os
import stat

import pytest

from annoy_datasync.jsonl import (BOM, MESSAGES_HINT, Appender, InputError, LineIndex, loads_line,
                                  messages_problem, open_lines, read_jsonl, repair_tail, require,
                                  require_messages, write_jsonl)


def test_read_skips_bad_lines_with_count(tmp_path, caplog):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n{"a": 2\n[1, 2]\n\n{"a": 3}\n{"a": 4')
    r = read_jsonl(p)
    got = [(n, rec["a"]) for n, rec in r]
    assert got == [(1, 1), (5, 3)]
    assert [n for n, _ in r.bad] == [2, 3, 6]
    assert "a.jsonl:2" in caplog.text and "torn" in caplog.text


def test_first_line_not_json_is_an_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("id,name\n1,x\n")
    with pytest.raises(InputError, match=r"a.jsonl:1: .*JSONL"):
        list(read_jsonl(p))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_require_names_file_line_and_keys(tmp_path):
    with pytest.raises(InputError, match=r'x.jsonl:17: no "messages" field \(keys: content, path\)'):
        require({"content": 1, "path": 2}, ["messages"], "x.jsonl", 17)


def test_appender_repairs_torn_tail_and_keeps_it(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "out')
    with Appender(p) as w:
        w.write({"i": 2})
    lines = p.read_text().splitlines()
    assert [json.loads(x)["i"] for x in lines] == [0, 1, 2]
    assert b'"out' in (tmp_path / "out.jsonl.torn").read_bytes()
    assert repair_tail(p) == 0


def test_write_jsonl_atomic_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "w.jsonl"
    write_jsonl(p, [{"a": 1}])

    def gen():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(p, gen())
    assert p.read_text() == '{"a": 1}\n'
    assert [f for f in os.listdir(tmp_path)] == ["w.jsonl"]


def test_appender_keeps_a_whole_last_record_without_newline(tmp_path):
    # e.g. an answers file written by another tool: its last answer must not be cut off
    # (and paid for again by the inference resume)
    p = tmp_path / "out.jsonl"
    p.write_bytes(b'{"i": 0}\n{"i": 1}')
    with Appender(p) as w:
        w.write({"i": 2})
    assert [json.loads(x)["i"] for x in p.read_text().splitlines()] == [0, 1, 2]
    assert not (tmp_path / "out.jsonl.torn").exists()


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    # mkstemp creates 0600: a rewritten data file must not become private to its writer
    old = os.umask(0o022)
    try:
        p = tmp_path / "w.jsonl"
        write_jsonl(p, [{"a": 1}])
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        p.chmod(0o640)
        write_jsonl(p, [{"a": 2}])      # a rewrite keeps the mode the user chose
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_lines_json_cannot_hold_are_skipped_not_a_crash(tmp_path, caplog):
    # Python refuses ints over 4300 digits with a plain ValueError and deep nesting with
    # RecursionError: neither is a JSONDecodeError, and both used to escape with a traceback
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"big": ' + "1" * 5000 + '}\n{"deep": ' + "[" * 100_000
                 + "]" * 100_000 + '}\n{"a": 2}\n')
    reader = read_jsonl(p)
    assert [r["a"] for _, r in reader] == [1, 2]
    assert [lineno for lineno, _ in reader.bad] == [2, 3]
    assert "x.jsonl:2" in caplog.text and "x.jsonl:3" in caplog.text
    p.write_text('{"a": 1}\n{"big": ' + "1" * 5000 + "}")   # as a torn-looking last line
    with Appender(p) as w:
        w.write({"a": 2})
    assert [json.loads(x)["a"] for x in p.read_text().splitlines()] == [1, 2]


def test_line_index_reads_the_lines_read_jsonl_numbers(tmp_path):
    p = tmp_path / "x.jsonl"
    # blank lines, a multi-byte character, a line that is not JSON, a torn last line
    p.write_bytes('{"a": 1}\n\n{"b": "é\u2028"}\nnot json\r\n{"c": 3}\n{"d":'.encode("utf-8"))
    with LineIndex(p) as idx:
        assert len(idx) == 6
        for lineno, rec in read_jsonl(p):
            assert json.loads(idx.line(lineno)) == rec
        assert idx.line(2) == b"\n" and idx.line(4) == b"not json\r\n" and idx.line(6) == b'{"d":'
        assert idx.line(1) == b'{"a": 1}\n'        # again, after later lines
        for bad in (0, 7):
            with pytest.raises(IndexError):
                idx.line(bad)
    with pytest.raises(InputError, match="no such file"):
        LineIndex(tmp_path / "missing.jsonl")



def test_a_byte_order_mark_starts_a_file_and_nothing_else(tmp_path, caplog):
    # what Windows editors and pandas' to_json(encoding="utf-8-sig") write first
    p = tmp_path / "bom.jsonl"
    p.write_bytes(BOM + b'{"a": 1}\n' + BOM + b'{"a": 2}\n{"a": 3}\n' + BOM + b"\n")
    r = read_jsonl(p)
    assert [(n, rec["a"]) for n, rec in r] == [(1, 1), (3, 3)]   # the same line numbers
    assert [n for n, _ in r.bad] == [2, 4]                         # elsewhere: a bad line
    assert "bom.jsonl:2" in caplog.text and "byte order mark" in caplog.text
    with LineIndex(p) as idx:
        assert idx.line(1) == b'{"a": 1}\n' and idx.line(2) == BOM + b'{"a": 2}\n'
    with open_lines(p) as fh:
        assert fh.readline() == b'{"a": 1}\n'
        at = fh.tell()
    with open_lines(p, at) as fh:                                  # an offset is the file's
        assert fh.readline() == BOM + b'{"a": 2}\n'
    with pytest.raises(ValueError, match="byte order mark"):
        loads_line(BOM + b'{"a": 2}\n')
    # a file that is only a mark is empty, not "not JSONL"
    p.write_bytes(BOM)
    assert list(read_jsonl(p)) == []
    # the first line of a BOM file that is not JSON is still the error it always was
    p.write_bytes(BOM + b"id,name\n1,x\n")
    with pytest.raises(InputError, match=r"bom.jsonl:1: .*JSONL"):
        list(read_jsonl(p))


U, A = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}


@pytest.mark.parametrize("record, problem", [
    ({"content": "code", "path": "a.py"}, 'no "messages" field (keys: content, path)'),
    ({"messages": "q"}, '"messages" should be a non-empty list, got str'),
    ({"messages": []}, '"messages" should be a non-empty list, got an empty list'),
    ({"messages": [U, "q"]}, "messages[1] should be an object, got str"),
    ({"messages": [{"content": "q"}]}, 'messages[0]["role"] should be str, got nothing'),
    ({"messages": [{"role": "user", "content": ["q"]}]},
     'messages[0]["content"] should be {want}, got list'),
    ({"messages": [{"role": "user", "content": []}]},
     'messages[0]["content"] should be {want}, got list'),
    ({"messages": [{"role": "user", "content": None}]},
     'messages[0]["content"] should be {want}, got NoneType'),
])
def test_messages_problem_names_file_line_and_the_fix(record, problem):
    for prompt_last in (False, True):
        want = "str" if prompt_last else "str or a list of content parts"
        got = messages_problem(record, "m.jsonl", 4, prompt_last=prompt_last)
        assert got == f"m.jsonl:4: {problem.format(want=want)}; {MESSAGES_HINT}"
        with pytest.raises(InputError) as err:
            require_messages(record, "m.jsonl", 4, prompt_last=prompt_last)
        assert str(err.value) == got


def test_content_parts_are_requests_but_not_text_to_build_on():
    """The chat API takes a list of content parts (text, images) as a turn's content: the
    inference step sends such a request; the steps that build new text from a conversation
    need strings."""
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}
    assert messages_problem(parts, "m.jsonl", 1) == ""
    assert messages_problem(parts, "m.jsonl", 1, prompt_last=True).startswith(
        'm.jsonl:1: messages[0]["content"] should be str, got list')


def test_messages_that_end_with_the_prompt():
    assert require_messages({"messages": [U]}, "m.jsonl", 1, prompt_last=True) == [U]
    assert require_messages({"messages": [U, A]}, "m.jsonl", 1) == [U, A]
    assert messages_problem({"messages": [U, A]}, "m.jsonl", 2, prompt_last=True).startswith(
        'm.jsonl:2: messages should end with a user turn (the prompt the model answered), '
        'not "assistant"; is this a messages file?')


@pytest.mark.parametrize("text, says", [
    ("a: 1\nb: [2, 3]\n", None),
    ("a: 1\nb: [2,\n", r"y\.yaml:3: not valid YAML \(expected the node content"),
    ("a: 1\n\tb: 2\n", r"y\.yaml:2: not valid YAML"),
    (b"a: \xff\n", r"y\.yaml: not a UTF-8 text file"),
])
def test_read_yaml_names_file_and_line_of_what_does_not_parse(tmp_path, text, says):
    from annoy_datasync.jsonl import read_yaml
    p = tmp_path / "y.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    if says is None:
        assert read_yaml(p, "table") == {"a": 1, "b": [2, 3]}
        return
    with pytest.raises(InputError, match=says) as err:
        read_yaml(p, "table")
    assert "\n" not in str(err.value)


def test_read_yaml_of_a_missing_file_says_what_it_should_hold(tmp_path):
    from annoy_datasync.jsonl import read_yaml
    with pytest.raises(InputError, match=r"nope\.yaml: no such price table file"):
        read_yaml(tmp_path / "nope.yaml", "price table")


def test_a_lone_surrogate_is_written_as_an_escape_and_reads_back_the_same(tmp_path):
    """A model's text may hold a lone surrogate (valid JSON as an escape, no UTF-8 text):
    every writer keeps it, as the escape, instead of crashing; other text stays as it is."""
    records = [{"output": "think \ud800 then ```json\n{}\n```", "n": 1},
               {"output": "café ✓", "k": {"\udfff": ["\udc80"]}},
               {"output": "café ✓"}]
    path = tmp_path / "a.jsonl"
    with Appender(path) as out:
        for r in records:
            out.write(r)
    write_jsonl(tmp_path / "w.jsonl", records)
    for p in (path, tmp_path / "w.jsonl"):
        raw = p.read_bytes()
        raw.decode("utf-8")                          # a valid UTF-8 file
        assert raw.splitlines()[2] == '{"output": "café ✓"}'.encode()   # unicode kept as is
        assert [rec for _, rec in read_jsonl(p)] == records


def test_a_whole_text_file_with_a_lone_surrogate_is_written(tmp_path):
    """report.py writes counts keyed by corpus strings (categories, reasons) through
    atomic_text, as JSON with the text kept: a lone surrogate in one is its JSON escape."""
    from annoy_datasync.jsonl import atomic_text
    report = {"categories": {"math \ud800": 3, "é": 1}}
    with atomic_text(tmp_path / "r.json") as fh:
        fh.write(json.dumps(report, ensure_ascii=False))
    assert json.loads((tmp_path / "r.json").read_bytes().decode("utf-8")) == report
