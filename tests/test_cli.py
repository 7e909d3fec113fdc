"""cli.py: the flags several steps share are declared and checked in one place."""

from __future__ import annotations

import pytest

import parse_gen_ios
import verify
from annoy_datasync import cli
from annoy_datasync.jsonl import InputError, StepError

STEPS = {
    parse_gen_ios: ["--input_file", "in.jsonl", "--output_file", "out.jsonl"],
    verify: ["--parsed_file", "p.jsonl", "--gens_file", "g.jsonl", "--output_file", "v.jsonl"],
}


@pytest.mark.parametrize("step", list(STEPS), ids=lambda m: m.__name__)
@pytest.mark.parametrize("flags, says", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--timeout", "0"], "--timeout must be positive"),
    (["--timeout", "-1"], "--timeout must be positive"),
    (["--python_path", "no-such-python-here"], "--python_path no-such-python-here: not found on PATH"),
    (["--read_path", "/no/such/dir"], "--read_path /no/such/dir:"),
])
def test_executor_flags_are_checked_alike_by_every_step_that_runs_code(step, flags, says, capsys):
    with pytest.raises(SystemExit) as exc:
        step.main(STEPS[step] + flags)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("step", list(STEPS), ids=lambda m: m.__name__)
def test_a_bare_python_name_is_looked_up_on_path(step):
    parser = step.build_parser()
    args = parser.parse_args(STEPS[step] + ["--python_path", "sh", "--timeout", "0.5"])
    cli.check_executor_args(parser, args)
    assert args.python_path.startswith("/") and args.python_path.endswith("/sh")
    assert args.timeout == 0.5 and args.read_path == []


@pytest.mark.parametrize("error", [StepError, InputError])
def test_a_step_error_is_one_line_on_stderr_and_exit_1_even_when_its_text_has_several(
        error, capsys):
    def main(argv):
        # what a YAML parser or a server's error body puts in an exception's text
        raise error('p.yaml: not valid YAML (while parsing\n  in "p.yaml", line 1\nexpected \',\')')

    assert cli.run(main, []) == 1
    err = capsys.readouterr().err
    assert err == "error: p.yaml: not valid YAML (while parsing in \"p.yaml\", line 1 expected ',')\n"
