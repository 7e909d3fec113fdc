import json
import os

import pytest

from annoy_datasync.jsonl import Appender, InputError, read_jsonl, repair_tail, require, write_jsonl


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
