"""Step 1.1: build the transform prompts that turn raw code files into the unified format.

Input  (--raw_code_file): JSONL, one raw code file per line: {"content": str, ...}.
Output (--raw_code_msg_file): the same records, in the same order, each with an added
  "messages": [{"role": "user", "content": <transform prompt>}]; every other field is
  kept as it is. Records whose "content" is blank are skipped (counted).
The output is written whole through a temp file, so a failed run leaves no partial file.
--prompts FILE replaces the wording of the "transform" template (see prompts.yaml).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator

from annoy_datasync import cli, status
from annoy_datasync.jsonl import require, require_type
from annoy_datasync.prompts import load_prompts


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    cli.add_file_arg(p, "--raw_code_file", "raw_code", 'raw code JSONL with a "content" field')
    cli.add_file_arg(p, "--raw_code_msg_file", "transform_msg",
                     'output: raw records plus "messages"')
    cli.add_prompts_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    prompts = load_prompts(args.prompts)
    path = args.raw_code_file

    def convert(lineno: int, rec: dict, counts: Counter) -> Iterator[dict]:
        require(rec, ["content"], path, lineno)
        require_type(rec["content"], str, "content", path, lineno)
        if not rec["content"].strip():
            counts[status.SKIP_EMPTY_CONTENT] += 1
            return
        rec["messages"] = [{"role": "user", "content": prompts.transform(rec["content"])}]
        counts["messages"] += 1
        yield rec

    cli.convert_file(path, args.raw_code_msg_file, convert, "build_transform_msg")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
