"""Dev tool: write the demo's raw code file and the recorded answers of every model call.

Reads data/demo/authored/ (manifest.yaml, raw/<name>.py, transform/<name>.md) and writes
  data/demo/rawcode_demo.jsonl   the raw code set, one file per line (manifest order);
  data/demo/answers.jsonl        {"messages", "output", "reasoning", "finish_reason"} for
                                 every model call of a demo run (transform, turn 1, turn 2).
The prediction prompts hold the I/O pairs that parse_gen_ios.py computes, so the tool runs
the pipeline's own steps (through the replay server, in a scratch directory) to learn the
exact prompts, and writes each answer the way a model might: reasoning, then the final
JSON, in several shapes (```json fence, prose, \\boxed{}, Python literals, which the
method's answer rule counts as no answer), some right and some wrong, one truncated, one with no JSON at all. Which answers are right is decided
from the true I/O pair by a choice seeded with the sample's name and the prompt's place, so
the same prompts always get the same answers. None of these answers came from a model.

Re-run it whenever the prompt templates or the steps change what a prompt says:
    python data/demo/make_answers.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "src"))

import yaml  # noqa: E402

from annoy_datasync.chat_server import ChatServer  # noqa: E402
from annoy_datasync.jsonl import read_jsonl, write_jsonl  # noqa: E402
from annoy_datasync.replay import AnswerBook, load_answers, make_responder, message_key  # noqa: E402

AUTHORED = os.path.join(HERE, "authored")
P_CORRECT_1 = 0.6   # share of right first-turn answers
P_CORRECT_2 = 0.55  # share of right revisions

# How a careful solver would describe the computation, per sample (used in the reasoning).
HOW = {
    "sieve_primes": "I list the numbers from 2 up to the limit and cross out the multiples of every prime up to its square root; what remains are the primes.",
    "caesar_cipher": "Each letter moves along the alphabet by the shift (backwards when decrypting), wrapping around after z; spaces and punctuation stay.",
    "binary_search": "I compare the target with the middle of the remaining range and keep the half that can still hold it.",
    "tower_of_hanoi": "Moving n disks means moving n-1 disks to the spare peg, the largest disk to the target, then the n-1 disks on top of it; that takes 2^n - 1 moves.",
    "roman_numerals": "I take the largest numeral value that still fits (M, CM, D, CD, C, XC, L, XL, X, IX, V, IV, I) again and again.",
    "collatz": "I follow the sequence: halve even numbers, replace odd ones by 3n + 1, counting steps and remembering the peak.",
    "bubble_sort": "Each pass swaps neighbours that are out of order; the number of swaps equals the number of inversions of the list.",
    "knapsack": "I consider the items one by one and, for every capacity, keep the better of skipping or taking the item.",
    "dijkstra": "Starting from the start place at distance 0, I repeatedly settle the closest unsettled place and relax its outgoing roads.",
    "game_of_life": "For every generation I count the live neighbours of each cell and apply the survival and birth rules.",
    "bank_account": "I apply the operations in order: deposits add, withdrawals larger than the balance are refused, interest adds 2% rounded to cents.",
    "balanced_brackets": "I push every opening bracket on a stack and pop it when the matching closing bracket arrives.",
    "run_length": "I walk through the string and write the length of each run of equal letters followed by the letter.",
    "gcd_lcm": "Euclid's algorithm gives the gcd pair by pair, and lcm(a, b) = a * b / gcd(a, b), folded over the list.",
    "compound_interest": "The amount is P (1 + r/n)^(n t); the interest is the amount minus the principal, both rounded to cents.",
    "anagram_groups": "Words with the same sorted letters belong together; groups are listed in order of their first word.",
    "matrix_ops": "Entry (i, j) of the product is the dot product of row i of the first matrix with column j of the second.",
    "random_walk": "The walk is fixed by the seed: I follow the sequence of left and right steps the generator produces.",
    "number_words": "I spell the thousands, then the hundreds with 'and', then the tens and units joined by a hyphen.",
    "n_queens": "Placing one queen per row and backtracking when a column or diagonal is attacked, I count the complete placements.",
}
GENERIC_HOW = "I follow the procedure described in the problem step by step."

# One prompt of these samples gets a special answer (first prompt of that kind in the file).
SPECIAL = {
    ("collatz", "o"): "truncated",           # finish_reason "length": the client records a failure
    ("roman_numerals", "o"): "no_json",      # reasoning only: verify says no_answer
    ("matrix_ops", "i"): "raises",           # incompatible shapes: the reference code raises
    ("n_queens", "i"): "bad_shape",          # {"input": 6}: not an object: main_solution(6) is called
}
STYLES = ("fence", "prose", "boxed", "python", "fence", "prose")


# --------------------------------------------------------------------------------------------
# the raw code set

def load_manifest() -> list[dict]:
    with open(os.path.join(AUTHORED, "manifest.yaml")) as fh:
        return yaml.safe_load(fh)["files"]


def raw_records(manifest: list[dict]) -> list[dict]:
    out = []
    for e in manifest:
        with open(os.path.join(AUTHORED, "raw", e["name"] + ".py")) as fh:
            content = fh.read()
        out.append({"repo_name": e["repo_name"], "path": e["path"], "content": content})
    return out


def transform_answers(msg_file: str, manifest: list[dict]) -> list[dict]:
    by_path = {e["path"]: e for e in manifest}
    out = []
    for _, rec in read_jsonl(msg_file):
        e = by_path[rec["path"]]
        with open(os.path.join(AUTHORED, "transform", e["name"] + ".md")) as fh:
            text = fh.read().rstrip("\n")
        out.append({"messages": rec["messages"], "output": text, "reasoning": None,
                    "finish_reason": e.get("finish_reason", "stop")})
    return out


# --------------------------------------------------------------------------------------------
# rendering answers

def rng_for(*parts: object) -> random.Random:
    seed = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(seed[:16], 16))


def perturb(value, rng: random.Random):
    """A plausible wrong value of the same shape."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-2, -1, 1, 2, 10])
    if isinstance(value, float):
        return round(value * 1.07 + 0.5, 2)
    if isinstance(value, str):
        if not value:
            return "a"
        i = rng.randrange(len(value))
        ch = value[i]
        new = "e" if ch != "e" else "o"
        return value[:i] + new + value[i + 1:]
    if isinstance(value, list):
        if not value:
            return [1]
        i = rng.randrange(len(value))
        if rng.random() < 0.25 and len(value) > 1:
            return value[:i] + value[i + 1:]
        return value[:i] + [perturb(value[i], rng)] + value[i + 1:]
    if isinstance(value, dict):
        if not value:
            return {"x": 1}
        # change a non-empty value when there is one: "[] -> [1]" is not a plausible slip
        keys = sorted(k for k, v in value.items() if v not in ([], {}, "")) or sorted(value)
        k = rng.choice(keys)
        return {**value, k: perturb(value[k], rng)}
    return 0


def nudge_floats(value, rng: random.Random):
    """The same value with floats off in the 6th digit, as a model rounding by hand might."""
    if isinstance(value, float):
        return value * (1 + rng.choice([-1, 1]) * 2e-6)
    if isinstance(value, list):
        return [nudge_floats(v, rng) for v in value]
    if isinstance(value, dict):
        return {k: nudge_floats(v, rng) for k, v in value.items()}
    return value


def show(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def final_json(obj: dict, style: str) -> str:
    if style == "fence":
        return "```json\n" + json.dumps(obj, indent=2, ensure_ascii=False) + "\n```"
    if style == "prose":
        return "So the final answer is " + show(obj) + "."
    if style == "boxed":
        return "\\boxed{" + show(obj) + "}"
    if style == "python":
        return "Final answer: " + repr(obj)
    raise ValueError(style)


def describe_inputs(kwargs: dict) -> str:
    return ", ".join(f"`{k}` = {show(v)}" for k, v in kwargs.items())


def output_answer(name: str, io: dict, value, style: str) -> str:
    how = HOW.get(name, GENERIC_HOW)
    text = (f"We are given {describe_inputs(io['input'])}.\n\n{how}\n\n"
            f"Carrying this out on the given inputs, the result comes to {show(value)}.\n\n")
    return text + final_json({"output": value}, style)


def input_answer(name: str, io: dict, kwargs, style: str) -> str:
    how = HOW.get(name, GENERIC_HOW)
    text = (f"We need inputs whose result is {show(io['output'])}.\n\n{how}\n\n"
            f"Working backwards, a choice that should give exactly this result is "
            f"{describe_inputs(kwargs) if isinstance(kwargs, dict) else show(kwargs)}.\n\n")
    return text + final_json({"input": kwargs}, style)


def special_answer(kind: str, name: str, io: dict, io_pred: str) -> tuple[str, str]:
    how = HOW.get(name, GENERIC_HOW)
    if kind == "truncated":
        return (f"We are given {describe_inputs(io['input'])}.\n\n{how}\n\nLet me write the "
                f"sequence out in full. Starting from the first value, the next one is", "length")
    if kind == "no_json":
        return (f"We are given {describe_inputs(io['input'])}.\n\n{how}\n\nWriting the numeral "
                f"symbol by symbol, the answer is {show(io['output'])}.", "stop")
    if kind == "raises":
        bad = {"a": [[1, 2, 3]], "b": [[1, 2, 3]]}
        return input_answer(name, io, bad, "fence"), "stop"
    if kind == "bad_shape":
        guess = next(iter(io["input"].values()))
        text = (f"We need inputs whose result is {show(io['output'])}.\n\n{how}\n\n"
                f"The board size {guess} gives this count.\n\n")
        return text + final_json({"input": guess}, "prose"), "stop"
    raise ValueError(kind)


def revision_answer(name: str, io: dict, io_pred: str, correct: bool, rng: random.Random) -> str:
    opener = rng.choice([
        "You are right, I made a mistake. Let me redo the computation carefully.",
        "Let me re-check my work from the start.",
        "I see the problem with my previous answer; going through it again step by step.",
    ])
    style = rng.choice(STYLES)
    if io_pred == "o":
        value = io["output"] if correct else perturb(perturb(io["output"], rng), rng)
        return opener + "\n\n" + output_answer(name, io, value, style)
    kwargs = io["input"] if correct else perturb(io["input"], rng)
    return opener + "\n\n" + input_answer(name, io, kwargs, style)


# --------------------------------------------------------------------------------------------
# running the steps

def run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env=env)


def step(script: str, *args: str) -> None:
    run([sys.executable, os.path.join("src", script), *args])


def infer(book: AnswerBook, inp: str, out: str) -> None:
    env = dict(os.environ, OPENAI_API_KEY="sk-replay-demo")
    with ChatServer(make_responder(book), record=False) as server:
        run([sys.executable, "src/batched_api_inference.py", "--input", inp, "--output", out,
             "--model", "replay", "--base_url", server.url, "--num_process", "1",
             "--num_thread", "1", "--temperature", "0", "--max_tokens", "4096"], env=env)


def sample_names(unified: str, parsed: str, manifest: list[dict]) -> list[str]:
    """The manifest name of each parsed sample, through meta.msgidx -> unified record."""
    by_path = {e["path"]: e["name"] for e in manifest}
    unified_recs = [rec for _, rec in read_jsonl(unified)]
    by_index = {rec.get("index", i): rec for i, rec in enumerate(unified_recs)}
    names = []
    for _, rec in read_jsonl(parsed):
        idx = rec["meta"]["msgidx"]
        u = by_index.get(idx)
        names.append(by_path[u["path"]] if u is not None and "path" in u else f"sample{idx}")
    return names


def author_turn1(spec_msg: str, parsed: str, names: list[str]) -> list[dict]:
    samples = [rec for _, rec in read_jsonl(parsed)]
    out, seen, used_special = [], set(), set()
    for _, rec in read_jsonl(spec_msg):
        key = message_key(rec["messages"])
        if key in seen:            # identical prompts (same output twice): one answer serves all
            continue
        seen.add(key)
        itemid, ioid, io_pred = rec["itemid"], rec["ioid"], rec["io_pred"]
        name = names[itemid]
        io = samples[itemid]["ios"][ioid]
        finish = "stop"
        special = SPECIAL.get((name, io_pred))
        if special and (name, io_pred) not in used_special:
            used_special.add((name, io_pred))
            text, finish = special_answer(special, name, io, io_pred)
        else:
            rng = rng_for(name, ioid, io_pred, "turn1")
            correct = rng.random() < P_CORRECT_1
            style = rng.choice(STYLES)
            if io_pred == "o":
                value = nudge_floats(io["output"], rng) if correct else perturb(io["output"], rng)
                text = output_answer(name, io, value, style)
            else:
                kwargs = io["input"] if correct else perturb(io["input"], rng)
                text = input_answer(name, io, kwargs, style)
        reasoning = None
        if finish == "stop" and rng_for(name, ioid, io_pred, "reasoning").random() < 0.2:
            # as a reasoning model answers: the thinking apart, a short reply after it
            reasoning = (f"Let me think about this carefully. {HOW.get(name, GENERIC_HOW)} "
                         f"I will work it through on the values given and double-check the result.")
        out.append({"messages": rec["messages"], "output": text, "reasoning": reasoning,
                    "finish_reason": finish})
    return out


def author_turn2(rev_msg: str, parsed: str, names: list[str]) -> list[dict]:
    samples = [rec for _, rec in read_jsonl(parsed)]
    out, seen = [], set()
    for _, rec in read_jsonl(rev_msg):
        key = message_key(rec["messages"])
        if key in seen:
            continue
        seen.add(key)
        itemid, ioid, io_pred = rec["itemid"], rec["ioid"], rec["io_pred"]
        name = names[itemid]
        rng = rng_for(name, ioid, io_pred, "turn2")
        correct = rng.random() < P_CORRECT_2
        text = revision_answer(name, samples[itemid]["ios"][ioid], io_pred, correct, rng)
        out.append({"messages": rec["messages"], "output": text, "reasoning": None,
                    "finish_reason": "stop"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw_out", default=os.path.join(HERE, "rawcode_demo.jsonl"))
    parser.add_argument("--answers_out", default=os.path.join(HERE, "answers.jsonl"))
    parser.add_argument("--work_dir", help="keep the scratch run here (default: a temp dir)")
    parser.add_argument("--python_path", default=sys.executable)
    args = parser.parse_args(argv)

    manifest = load_manifest()
    write_jsonl(args.raw_out, raw_records(manifest))
    work = args.work_dir or tempfile.mkdtemp(prefix="make_answers.")
    os.makedirs(work, exist_ok=True)
    f = {k: os.path.join(work, v) for k, v in {
        "msg": "msg.jsonl", "unified": "unified.jsonl", "parsed": "parsed.jsonl",
        "spec": "spec_msg.jsonl", "gens": "gens.jsonl", "verified": "gens_verified.jsonl",
        "rev": "msg_rev.jsonl", "run": "run"}.items()}

    step("build_transform_msg.py", "--raw_code_file", args.raw_out, "--raw_code_msg_file", f["msg"])
    answers = transform_answers(f["msg"], manifest)
    write_jsonl(os.path.join(work, "answers_transform.jsonl"), answers)
    infer(load_answers([os.path.join(work, "answers_transform.jsonl")]), f["msg"], f["unified"])
    step("parse_gen_ios.py", "--input_file", f["unified"], "--output_file", f["parsed"],
         "--python_path", args.python_path, "--run_path", f["run"])
    names = sample_names(f["unified"], f["parsed"], manifest)
    step("build_spec_msg.py", "--input_file", f["parsed"], "--output_file", f["spec"])

    turn1 = author_turn1(f["spec"], f["parsed"], names)
    write_jsonl(os.path.join(work, "answers_turn1.jsonl"), turn1)
    infer(load_answers([os.path.join(work, "answers_turn1.jsonl")]), f["spec"], f["gens"])
    run(["bash", "scripts/pipeline_check.sh", f["parsed"], f["gens"], f["verified"],
         args.python_path, f["run"]], env=dict(os.environ, PIPELINE_PYTHON=sys.executable))
    step("build_spec_rev_msg.py", "--input_file", f["verified"], "--output_file", f["rev"])
    turn2 = author_turn2(f["rev"], f["parsed"], names)

    n = write_jsonl(args.answers_out, answers + turn1 + turn2)
    print(f"wrote {args.raw_out} ({len(manifest)} files) and {args.answers_out} ({n} answers: "
          f"transform={len(answers)} turn1={len(turn1)} turn2={len(turn2)}); scratch run in {work}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
