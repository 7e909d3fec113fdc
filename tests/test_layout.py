"""layout.py: the one place that names a run's files and the defaults the steps share."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import assemble_spec_demo
import build_spec_msg
import build_spec_rev_msg
import build_transform_msg
import export
import parse_gen_ios
import report
import verify
from annoy_datasync import layout
from testutil import ROOT


# the files of the method README's commands, in the order of its steps
METHOD_README = {
    "raw_code": "data/rawcode_1k.jsonl", "transform_msg": "data/rawcode_1k_msg.jsonl",
    "unified": "data/rawcode_1k_unified.jsonl", "parsed": "data/rawcode_1k_parsed.jsonl",
    "spec_msg": "data/spec_1k_msg.jsonl", "gens": "data/spec_1k_gens.jsonl",
    "verified": "data/spec_1k_gens_verified.jsonl", "rev_msg": "data/spec_1k_msg_rev.jsonl",
    "rev_gens": "data/spec_1k_gens_rev.jsonl",
    "rev_verified": "data/spec_1k_gens_rev_verified.jsonl", "final": "data/spec_demo_final.jsonl",
}


def test_the_method_readme_run_gets_exactly_its_names():
    assert layout.run_files("data", "1k") == METHOD_README
    assert layout.DEFAULTS == METHOD_README
    assert list(layout.DEFAULTS) == list(layout.ROLES)


def test_another_run_is_named_after_itself_in_its_directory():
    files = layout.run_files("out/run1", "fix")
    assert files["parsed"] == "out/run1/rawcode_fix_parsed.jsonl"
    assert files["rev_verified"] == "out/run1/spec_fix_gens_rev_verified.jsonl"
    assert files["final"] == "out/run1/spec_fix_final.jsonl"   # only 1k keeps the README's final
    assert layout.run_files("d", "demo")["final"] == "d/spec_demo_final.jsonl"


@pytest.mark.parametrize("name", ["", "a/b"])
def test_a_run_name_that_cannot_be_part_of_a_file_name_is_refused(name):
    with pytest.raises(ValueError, match="run name"):
        layout.run_files("data", name)


@pytest.mark.parametrize("raw, name", [
    ("data/rawcode_1k.jsonl", "1k"),
    ("data/demo/rawcode_demo.jsonl", "demo"),
    ("/x/rawcode_my_set.jsonl", "my_set"),
    ("pyedu.jsonl", "pyedu"),
    ("dir/rawcode.jsonl", "rawcode"),        # no run name in it: the stem
    ("dir/code.v2.jsonl", "code.v2"),
    ("dir/rawcode_x.json", "rawcode_x"),
])
def test_run_name_of_a_raw_code_file(raw, name):
    assert layout.run_name(raw) == name


def test_side_files_sit_next_to_their_main_file():
    assert layout.side_file("d/x.jsonl", layout.FAILED) == "d/x.jsonl.failed.jsonl"
    assert layout.side_file("d/x.jsonl", layout.DROPPED) == "d/x.jsonl.dropped.jsonl"
    assert layout.side_file("d/x.jsonl", layout.REJECTS) == "d/x.jsonl.rejects.jsonl"


def _shell(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    return subprocess.run(["bash", "-c", script, "bash", sys.executable, *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_the_shell_reads_the_same_names_and_defaults():
    script = ('set -eu; eval "$("$1" -m annoy_datasync.layout run "$2" "$3" "$4")"; '
              'printf "%s\\n" "$RUN_NAME" "$RAW_CODE" "$UNIFIED" "$FINAL" "$RUN_PATH_DEFAULT" '
              '"$CPU_BUDGET_DEFAULT"')
    odd_dir = "it's a dir $HOME `x`"   # quotes, spaces and shell syntax stay text
    proc = _shell(script, odd_dir, "in/rawcode_1k.jsonl", "")
    assert proc.returncode == 0, proc.stderr
    files = layout.run_files(odd_dir, "1k")
    assert proc.stdout.splitlines() == ["1k", files["raw_code"], files["unified"], files["final"],
                                        layout.RUN_PATH, "5"]
    proc = _shell(script, "d", "in/rawcode_1k.jsonl", "other")   # --name wins over the file's
    assert proc.stdout.splitlines()[:2] == ["other", "d/rawcode_other.jsonl"]
    bad = _shell(script, "d", "in/rawcode_1k.jsonl", "a/b")
    assert bad.returncode != 0 and "run name 'a/b'" in bad.stderr


def _defaults(module, *required: str):
    return vars(module.build_parser().parse_args(list(required)))


def test_every_step_defaults_to_the_method_readme_files_and_shared_defaults():
    d = METHOD_README
    assert (_defaults(build_transform_msg)["raw_code_file"],
            _defaults(build_transform_msg)["raw_code_msg_file"]) == (d["raw_code"], d["transform_msg"])
    assert (_defaults(build_spec_msg)["input_file"],
            _defaults(build_spec_msg)["output_file"]) == (d["parsed"], d["spec_msg"])
    assert (_defaults(build_spec_rev_msg)["input_file"],
            _defaults(build_spec_rev_msg)["output_file"]) == (d["verified"], d["rev_msg"])
    a = _defaults(assemble_spec_demo)
    assert (a["result_file_turn1"], a["result_file_turn2"], a["output_file"]) == (
        d["verified"], d["rev_verified"], d["final"])
    assert _defaults(export)["input_file"] == d["final"]
    for module, required in ((parse_gen_ios, ["--input_file", "u", "--output_file", "p"]),
                             (verify, ["--parsed_file", "p", "--gens_file", "g",
                                       "--output_file", "v"])):
        args = _defaults(module, *required)
        assert (args["run_path"], args["timeout"]) == ("./temp/run", 5.0)


def test_report_run_dir_and_name_use_the_same_patterns():
    parser = report.build_parser()
    for argv, expect in ((["--run_dir", "data", "--name", "1k"], METHOD_README),
                         ([], METHOD_README),
                         (["--run_dir", "r", "--name", "fix"], layout.run_files("r", "fix"))):
        args = parser.parse_args(argv)
        report.check_args(parser, args)
        assert {role: getattr(args, role) for role in layout.ROLES} == expect


RUN_FILE_NAME = re.compile(r"\b(?:rawcode|spec)_[\w {}<>-]*\.jsonl")   # rawcode_..., spec_...


def _run_file_names_written_in(path: str) -> list[tuple[int, str]]:
    """(line, name) of every file name of a run's kind in a file."""
    with open(path, encoding="utf-8") as fh:
        return [(n, m) for n, line in enumerate(fh, 1) for m in RUN_FILE_NAME.findall(line)]

def _layout_name(base: str) -> bool:
    """Whether `base` is a file layout names, in a run whose name has no "_" (as the
    examples' names have none: with one, rawcode_1k_gens.jsonl would be a raw code file)."""
    if base == layout.METHOD_FINAL:
        return True
    for pattern, _ in layout.FILES.values():
        head, tail = pattern.split("{name}")
        if base.startswith(head) and base.endswith(tail) and len(base) > len(head) + len(tail):
            name = base[len(head):len(base) - len(tail)]
            if "_" not in name and any(layout.file_name(role, name) == base
                                       for role in layout.ROLES):
                return True
    return False


def test_no_run_file_name_is_written_outside_layout_unless_layout_gives_it():
    """Help texts and usage examples elsewhere name a run's files only as layout names them:
    the report's help is built from layout, the shell usage's examples are checked here."""
    outside = [os.path.join(d, f) for d in ("src", "src/annoy_datasync", "scripts")
               for f in sorted(os.listdir(os.path.join(ROOT, d)))
               if f.endswith((".py", ".sh")) and f != "layout.py"]
    wrong = [f"{os.path.relpath(p, ROOT)}:{n}: {name}"
             for p in (os.path.join(ROOT, q) for q in outside)
             for n, name in _run_file_names_written_in(p) if not _layout_name(name)]
    assert wrong == []
    # the report's help spells no name: it has them from layout
    assert [name for _, name in _run_file_names_written_in(os.path.join(ROOT, "src", "report.py"))] == []
    assert f"DIR/{layout.file_name('verified', 'NAME')}" in report.build_parser().format_help()
