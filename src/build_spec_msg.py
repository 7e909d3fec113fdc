"""Step 3: build the input- and output-prediction prompts from the parsed samples.

Input  (--input_file): parsed JSONL (parse_gen_ios.py, or the original implementation),
  one sample per line: {"problem_description", "io_requirements", "refcode",
  "ios": [{"input": {kwargs}, "output": value}, ...], ...}.
Output (--output_file): JSONL, one prompt per line:
  {"messages": [{"role": "user", "content": prompt}], "itemid": 0-based line of the sample
   in the input file, "ioid": index into its "ios", "io_pred": "i" (predict an input
   from the output) or "o" (predict the output from the input)}.
For each sample, the first --num_ios pairs (default 3) each give one "i" and one "o"
prompt, so 6 prompts per sample with 3 or more pairs, fewer when it has fewer; with
--seed N the pairs are a random choice instead, the same for the same N. Each prompt
ends with the reference-code tip unless --no_refcode. Samples without pairs are skipped
(counted). The output is written through a temp file: a failed run leaves no partial file.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from collections.abc import Iterator

from annoy_datasync import cli, status
from annoy_datasync.jsonl import InputError, require, require_type, where
from annoy_datasync.prompts import Prompts, load_prompts


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    cli.add_file_arg(p, "--input_file", "parsed", "parsed samples JSONL")
    cli.add_file_arg(p, "--output_file", "spec_msg", "output: prediction prompts JSONL")
    p.add_argument("--num_ios", type=positive_int, default=3,
                   help="I/O pairs used per sample, each giving one input- and one "
                        "output-prediction prompt (default: %(default)s)")
    p.add_argument("--no_refcode", action="store_true",
                   help="leave the reference-code tip out of the prompts")
    p.add_argument("--seed", type=int, default=None,
                   help="pick the pairs at random with this seed instead of taking the first ones")
    cli.add_prompts_arg(p)
    return p


def choose_ios(n_ios: int, num_ios: int, seed: int | None, itemid: int) -> list[int]:
    """Indices of the pairs to use: the first `num_ios`, or a seeded choice per sample."""
    if seed is None or n_ios <= num_ios:
        return list(range(min(n_ios, num_ios)))
    # a string seed is hashed deterministically (not by hash()), so runs agree
    rng = random.Random(f"{seed}:{itemid}")
    return sorted(rng.sample(range(n_ios), num_ios))


def check_sample(rec: dict, path: str, lineno: int, need_refcode: bool) -> None:
    fields = ["problem_description", "io_requirements", "ios"] + (["refcode"] if need_refcode else [])
    require(rec, fields, path, lineno)
    for f in fields:
        require_type(rec[f], list if f == "ios" else str, f, path, lineno)


def check_io(io: object, k: int, path: str, lineno: int) -> None:
    if not isinstance(io, dict) or "input" not in io or "output" not in io:
        got = type(io).__name__ if not isinstance(io, dict) else "keys: " + (", ".join(sorted(io)) or "none")
        raise InputError(f'{where(path, lineno)}: ios[{k}] should be {{"input": {{...}}, "output": ...}} ({got})')
    if not isinstance(io["input"], dict):
        raise InputError(f'{where(path, lineno)}: ios[{k}]["input"] should be an object of '
                         f'keyword arguments, got {type(io["input"]).__name__}')


def sample_prompts(rec: dict, itemid: int, ioids: list[int], prompts: Prompts,
                   refcode: bool) -> list[dict]:
    out = []
    for ioid in ioids:
        for io_pred in ("i", "o"):
            text = prompts.prediction(
                io_pred, problem=rec["problem_description"], io_requirements=rec["io_requirements"],
                io=rec["ios"][ioid], refcode=rec["refcode"] if refcode else None)
            out.append({"messages": [{"role": "user", "content": text}],
                        "itemid": itemid, "ioid": ioid, "io_pred": io_pred})
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    prompts = load_prompts(args.prompts)
    path = args.input_file

    def convert(lineno: int, rec: dict, counts: Counter) -> Iterator[dict]:
        check_sample(rec, path, lineno, need_refcode=not args.no_refcode)
        ios = rec["ios"]
        for k, io in enumerate(ios):
            check_io(io, k, path, lineno)
        if not ios:
            counts[status.SKIP_NO_IOS] += 1
            return
        ioids = choose_ios(len(ios), args.num_ios, args.seed, itemid=lineno - 1)
        for msg in sample_prompts(rec, lineno - 1, ioids, prompts, refcode=not args.no_refcode):
            counts["prompts"] += 1
            yield msg
        counts["samples"] += 1
        if len(ios) < args.num_ios:
            counts["samples_with_fewer_ios"] += 1

    cli.convert_file(path, args.output_file, convert, "build_spec_msg")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
