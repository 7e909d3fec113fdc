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

from annoy_datasync import cli, status
from annoy_datasync.jsonl import atomic_write, read_jsonl, require, require_type
from annoy_datasync.prompts import load_prompts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw_code_file", default="data/rawcode_1k.jsonl",
                   help="raw code JSONL with a \"content\" field (default: %(default)s)")
    p.add_argument("--raw_code_msg_file", default="data/rawcode_1k_msg.jsonl",
                   help="output: raw records plus \"messages\" (default: %(default)s)")
    p.add_argument("--prompts", metavar="FILE",
                   help="YAML file overriding prompt templates (default: the built-in ones)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    prompts = load_prompts(args.prompts)
    counts: Counter[str] = Counter()
    reader = read_jsonl(args.raw_code_file)
    with atomic_write(args.raw_code_msg_file) as out:
        for lineno, rec in reader:
            require(rec, ["content"], args.raw_code_file, lineno)
            require_type(rec["content"], str, "content", args.raw_code_file, lineno)
            if not rec["content"].strip():
                counts[status.SKIP_EMPTY_CONTENT] += 1
                continue
            rec["messages"] = [{"role": "user", "content": prompts.transform(rec["content"])}]
            out.write(rec)
            counts["messages"] += 1
    counts[status.SKIP_BAD_LINE] += len(reader.bad)
    print(cli.summary(counts, "build_transform_msg:"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
