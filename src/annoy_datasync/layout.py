"""The files of a run and the defaults every step shares: one place for their names.

A run's files are named after the run in the pattern of the method's README: with directory
`data` and run name `1k`, the transform prompts are `data/rawcode_1k_msg.jsonl`, the turn-1
verdicts `data/spec_1k_gens_verified.jsonl`. Each file has a role (`ROLES`, in pipeline
order) and a pattern (`FILES`); `run_files(directory, name)` gives every path of a run. The
README calls the final file of its own run (`1k`) `spec_demo_final.jsonl`, not
`spec_1k_final.jsonl`; that run keeps the name, any other run `NAME` gets
`spec_NAME_final.jsonl`. The step scripts' defaults are the README's run (`DEFAULTS`).

A step writes side files next to its main output: `side_file(path, FAILED)` is
`<path>.failed.jsonl`.

The shell scripts read the same names: ``python -m annoy_datasync.layout defaults`` prints
the shared defaults, ``python -m annoy_datasync.layout run DIR RAW_CODE_FILE [NAME]`` also a
run's name and files, as shell assignments to `eval` (see `shell_assignments`).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence

# role -> (its file name in the run NAME, what the file holds and the step that writes it)
FILES = {
    "raw_code": ("rawcode_{name}.jsonl", "raw code (step 1.1 input)"),
    "transform_msg": ("rawcode_{name}_msg.jsonl", "transform prompts (1.1)"),
    "unified": ("rawcode_{name}_unified.jsonl", "unified responses (1.2)"),
    "parsed": ("rawcode_{name}_parsed.jsonl", "parsed samples (2)"),
    "spec_msg": ("spec_{name}_msg.jsonl", "prediction prompts (3)"),
    "gens": ("spec_{name}_gens.jsonl", "turn-1 answers (4)"),
    "verified": ("spec_{name}_gens_verified.jsonl", "turn-1 verdicts (5)"),
    "rev_msg": ("spec_{name}_msg_rev.jsonl", "revision prompts (6.1)"),
    "rev_gens": ("spec_{name}_gens_rev.jsonl", "turn-2 answers (6.2)"),
    "rev_verified": ("spec_{name}_gens_rev_verified.jsonl", "turn-2 verdicts (6.3)"),
    "final": ("spec_{name}_final.jsonl", "final dataset (6.4)"),
}
ROLES = tuple(FILES)   # in pipeline order

DATA_DIR = "data"                     # where the steps read and write by default
METHOD_NAME = "1k"                    # the run of the method's README
METHOD_FINAL = "spec_demo_final.jsonl"  # that run's final file, as the README names it

RUN_PATH = "./temp/run"   # scratch directories of executed code
CPU_BUDGET = 5.0          # CPU seconds per execution of model-written code (the method's 5 s)

# side files: <main file>.<kind>.jsonl
FAILED = "failed"     # requests that did not succeed (batched_api_inference.py)
DROPPED = "dropped"   # responses parsing dropped, with reasons (parse_gen_ios.py)
REJECTS = "rejects"   # lines that are not JSON objects (verify.py)


def file_name(role: str, name: str) -> str:
    """The file name of `role` in a run named `name`."""
    if role == "final" and name == METHOD_NAME:
        return METHOD_FINAL
    return FILES[role][0].format(name=name)


def run_files(directory: str, name: str) -> dict[str, str]:
    """role -> path of every file of the run `name` in `directory`."""
    if not name or os.sep in name:
        raise ValueError(f"run name {name!r}: should be a non-empty part of a file name, "
                         f"without {os.sep}")
    return {role: os.path.join(directory, file_name(role, name)) for role in ROLES}


DEFAULTS = run_files(DATA_DIR, METHOD_NAME)   # the step scripts' default files


def side_file(path: str, kind: str) -> str:
    """The side file of kind `kind` (FAILED, DROPPED, REJECTS) a step writes next to `path`."""
    return f"{path}.{kind}.jsonl"


def run_name(raw_code_file: str) -> str:
    """The run name a raw code file gives: X for ``rawcode_X.jsonl``, else the file's stem."""
    base = os.path.basename(raw_code_file)
    m = re.fullmatch(r"rawcode_(.+)\.jsonl", base)
    if m:
        return m.group(1)
    return os.path.splitext(base)[0] or base


def shell_assignments(values: Mapping[str, object]) -> str:
    """``NAME='value'`` lines, quoted for the shell, one per item, keys upper-cased: what a
    bash script `eval`s to take names from here."""
    lines = []
    for key, value in values.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        lines.append(f"{key.upper()}={shlex.quote(text)}")
    return "\n".join(lines) + "\n"


def shared_defaults() -> dict[str, object]:
    return {"run_path_default": RUN_PATH, "cpu_budget_default": CPU_BUDGET}


def _main(argv: Sequence[str]) -> int:
    """The entry of the shell scripts (see the module docstring)."""
    if argv[:1] == ["defaults"] and len(argv) == 1:
        values = shared_defaults()
    elif argv[:1] == ["run"] and len(argv) in (3, 4):
        directory, raw = argv[1], argv[2]
        name = argv[3] if len(argv) == 4 and argv[3] else run_name(raw)
        try:
            files = run_files(directory, name)
        except ValueError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        values = {**shared_defaults(), "run_name": name, **files}
    else:
        sys.stderr.write("usage: python -m annoy_datasync.layout defaults\n"
                         "       python -m annoy_datasync.layout run DIR RAW_CODE_FILE [NAME]\n")
        return 2
    sys.stdout.write(shell_assignments(values))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
