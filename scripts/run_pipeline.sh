#!/usr/bin/env bash
# The whole pipeline of the method's README in one command, step by step:
#   1.1 build_transform_msg  1.2 inference  2 parse_gen_ios  3 build_spec_msg  4 inference
#   5 pipeline_check  6.1 build_spec_rev_msg  6.2 inference  6.3 pipeline_check  6.4 assemble
# then a report (src/report.py) when it exists, and the funnel from raw files to final records.
#
# Offline demo (default): the demo's raw code set, answered by the replay server from
# data/demo/answers.jsonl (answers written for the demo, not produced by a model):
#     bash scripts/run_pipeline.sh
# Your own raw code file and endpoint (key in OPENAI_API_KEY or DEEPSEEK_API_KEY):
#     bash scripts/run_pipeline.sh --raw_code_file data/rawcode_1k.jsonl --out_dir data/run1 \
#         --model deepseek-chat [--base_url https://api.deepseek.com]
# Re-run an earlier run without the API (its inference outputs as recorded answers):
#     bash scripts/run_pipeline.sh --raw_code_file data/rawcode_1k.jsonl --out_dir data/run1b \
#         --answers data/run1/rawcode_unified.jsonl data/run1/spec_gens.jsonl data/run1/spec_gens_rev.jsonl
#
# A step that finishes writes a marker in <out_dir>/.done/; a rerun of the same command
# skips finished steps and resumes the unfinished one (each step resumes on its own).
# The first failing step stops the run with its message. To start over, remove <out_dir>.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLER="$PWD"
cd "$ROOT"   # steps run from the repo root; paths given on the command line are the caller's

usage() {
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --raw_code_file FILE  raw code JSONL, one {"content": ...} per line [data/demo/rawcode_demo.jsonl]
  --out_dir DIR         where every file of the run goes [data/demo_run]
  --answers FILE...     recorded answers for the replay server [data/demo/answers.jsonl when
                        neither --model nor --base_url is given]
  --model NAME          model of a real endpoint (needed with --base_url)
  --base_url URL        OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1
  --python_path PY      interpreter that runs the generated code [the one running the steps]
  --run_path DIR        scratch directory of executed code [<out_dir>/run]
  --num_thread N        requests in flight [1 with the replay server (same files every run), 64 otherwise]
  --temperature T       [0.7]
  --max_tokens N        [4096]
  --limit N             only the first N raw files
  --answer_rule RULE    how answers are read: method (the last JSON object, holding the key)
                        or lenient (see README) [method]
  --drop_failed         leave out of the final file the predictions that failed both turns
  --batch_api           the three inference rounds go through the endpoint's Batch API (half
                        the price, answers within 24 h); each round waits for its batches,
                        and a rerun re-attaches to them (see README, batch mode)
  --poll_interval S     seconds between two looks at the batches [60]
  -h, --help            this help
The steps run under $PYTHON (default: python, else python3).
EOF
}

die() { echo "run_pipeline: error: $*" >&2; exit 1; }

RAW="data/demo/rawcode_demo.jsonl"
OUT="data/demo_run"
ANSWERS=()
MODEL=""
BASE_URL=""
PYTHON_PATH=""
RUN_PATH=""
NUM_THREAD=""
TEMPERATURE="0.7"
MAX_TOKENS="4096"
LIMIT=""
ANSWER_RULE="method"
DROP_FAILED=()
BATCH=()

need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
here() { [[ "$1" == /* ]] && echo "$1" || echo "$CALLER/$1"; }  # a caller's path, absolute
while [[ $# -gt 0 ]]; do
    case "$1" in
        --raw_code_file) need "$@"; RAW="$(here "$2")"; shift 2 ;;
        --out_dir) need "$@"; OUT="$(here "$2")"; shift 2 ;;
        --answers) shift
            while [[ $# -gt 0 && "$1" != --* ]]; do ANSWERS+=("$(here "$1")"); shift; done
            [[ ${#ANSWERS[@]} -gt 0 ]] || die "--answers needs at least one file (see --help)" ;;
        --model) need "$@"; MODEL="$2"; shift 2 ;;
        --base_url) need "$@"; BASE_URL="$2"; shift 2 ;;
        --python_path) need "$@"; PYTHON_PATH="$2"; [[ "$2" != */* ]] || PYTHON_PATH="$(here "$2")"; shift 2 ;;
        --run_path) need "$@"; RUN_PATH="$(here "$2")"; shift 2 ;;
        --num_thread) need "$@"; NUM_THREAD="$2"; shift 2 ;;
        --temperature) need "$@"; TEMPERATURE="$2"; shift 2 ;;
        --max_tokens) need "$@"; MAX_TOKENS="$2"; shift 2 ;;
        --limit) need "$@"; LIMIT="$2"; shift 2 ;;
        --answer_rule) need "$@"; ANSWER_RULE="$2"; shift 2 ;;
        --drop_failed) DROP_FAILED=(--drop_failed); shift ;;
        --batch_api) BATCH+=(--batch_api); shift ;;
        --poll_interval) need "$@"; BATCH+=(--poll_interval "$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

PY="${PYTHON:-$(command -v python || command -v python3 || true)}"
[[ -n "$PY" ]] || die "no python found; set PYTHON=/path/to/python3.11"
PYTHON_PATH="${PYTHON_PATH:-$("$PY" -c 'import sys; print(sys.executable)')}"
# pipeline_check.sh runs verify.py: under the same interpreter as every other step
export PIPELINE_PYTHON="$PY"
[[ "$ANSWER_RULE" == method || "$ANSWER_RULE" == lenient ]] \
    || die "--answer_rule: method or lenient, not $ANSWER_RULE"
export ANSWER_RULE
RUN_PATH="${RUN_PATH:-$OUT/run}"
[[ -f "$RAW" ]] || die "$RAW: no such raw code file (pass --raw_code_file)"
[[ -z "$LIMIT" || "$LIMIT" =~ ^[1-9][0-9]*$ ]] || die "--limit $LIMIT: should be a positive integer"

if [[ ${#ANSWERS[@]} -eq 0 && -z "$MODEL" && -z "$BASE_URL" ]]; then
    ANSWERS=("data/demo/answers.jsonl")
fi
if [[ ${#ANSWERS[@]} -gt 0 ]]; then
    MODE="replay"
    [[ -z "$BASE_URL" ]] || die "--answers and --base_url exclude each other: replay answers, or ask a real endpoint"
    [[ ${#BATCH[@]} -eq 0 ]] || die "--batch_api and --poll_interval need a real endpoint (--model), not recorded answers"
    for a in "${ANSWERS[@]}"; do [[ -f "$a" ]] || die "$a: no such answers file"; done
    MODEL="${MODEL:-replay}"
    NUM_THREAD="${NUM_THREAD:-1}"   # local answers are instant; one at a time keeps file order stable
else
    MODE="api"
    [[ -n "$MODEL" ]] || die "--base_url needs --model (the model name the endpoint serves)"
    NUM_THREAD="${NUM_THREAD:-64}"
fi

mkdir -p "$OUT" "$OUT/.done"
DONE="$OUT/.done"

# --- files of the run (names as in the method's README, under --out_dir) --------------
RAW_USED="$RAW"
if [[ -n "$LIMIT" ]]; then
    RAW_USED="$OUT/rawcode.jsonl"
fi
MSG="$OUT/rawcode_msg.jsonl"
UNIFIED="$OUT/rawcode_unified.jsonl"
PARSED="$OUT/rawcode_parsed.jsonl"
SPEC_MSG="$OUT/spec_msg.jsonl"
GENS="$OUT/spec_gens.jsonl"
VERIFIED="$OUT/spec_gens_verified.jsonl"
REV_MSG="$OUT/spec_msg_rev.jsonl"
REV_GENS="$OUT/spec_gens_rev.jsonl"
REV_VERIFIED="$OUT/spec_gens_rev_verified.jsonl"
FINAL="$OUT/spec_demo_final.jsonl"

STEPS=(subset transform_msg transform_inference parse spec_msg spec_inference check_turn1
       rev_msg rev_inference check_turn2 assemble report)

# --- the replay server: started on first need, stopped when this script ends -----------
REPLAY_PID=""
STEP_PID=""
BASE="$BASE_URL"
cleanup() {
    if [[ -n "$REPLAY_PID" ]]; then
        kill "$REPLAY_PID" 2>/dev/null || true
        wait "$REPLAY_PID" 2>/dev/null || true
        REPLAY_PID=""
    fi
}
on_signal() {  # stop the running step (its whole process group), then the replay server
    if [[ -n "$STEP_PID" ]]; then
        kill -TERM -- "-$STEP_PID" 2>/dev/null || kill -TERM "$STEP_PID" 2>/dev/null || true
        wait "$STEP_PID" 2>/dev/null || true
    fi
    echo "run_pipeline: interrupted; rerun the same command to resume" >&2
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

start_replay() {
    [[ "$MODE" == "replay" && -z "$REPLAY_PID" ]] || return 0
    local port_file="$OUT/.replay_port"
    rm -f "$port_file"
    "$PY" src/replay_server.py --answers "${ANSWERS[@]}" --port_file "$port_file" \
        --exit_with_pid $$ 2>>"$OUT/replay_server.log" &
    REPLAY_PID=$!
    local waited=0
    while [[ ! -s "$port_file" ]]; do
        kill -0 "$REPLAY_PID" 2>/dev/null || { REPLAY_PID=""; die "the replay server did not start; see $OUT/replay_server.log"; }
        sleep 0.1
        waited=$((waited + 1))
        [[ $waited -lt 600 ]] || die "the replay server did not start within 60 s; see $OUT/replay_server.log"
    done
    BASE="http://127.0.0.1:$(cat "$port_file")/v1"
    echo "[replay] answering from ${ANSWERS[*]} at $BASE" >&2
}

# run_step NAME CMD...: skip when finished; otherwise run, stop the whole run on failure,
# and mark it finished. A step that runs invalidates the markers of every later step.
run_step() {
    local name="$1"; shift
    if [[ -f "$DONE/$name" ]]; then
        echo "[skip] $name (finished earlier; remove $DONE/$name to redo it)" >&2
        return 0
    fi
    local later=0 s
    for s in "${STEPS[@]}"; do
        [[ $later -eq 1 ]] && rm -f "$DONE/$s"
        [[ "$s" == "$name" ]] && later=1
    done
    echo "[run] $name" >&2
    [[ "$name" != *_inference ]] || start_replay
    # The step runs in its own process group (set -m) and the script waits for it, so a
    # signal reaches the traps at once and on_signal can stop the step with all it started.
    local rc=0
    set -m
    "$@" &
    STEP_PID=$!
    set +m
    wait "$STEP_PID" || rc=$?
    STEP_PID=""
    if [[ $rc -ne 0 ]]; then
        if [[ "$MODE" == "replay" && "$name" == *_inference ]]; then
            echo "run_pipeline: if the replay server had no answer for these requests, the recorded answers do not match the prompts (for the demo: python data/demo/make_answers.py)" >&2
        fi
        die "step '$name' failed (exit $rc): see its message above; fix the cause and rerun the same command (finished steps are skipped)"
    fi
    touch "$DONE/$name"
}

infer() {  # infer INPUT OUTPUT (the replay server, if any, was started by run_step)
    local args=(--input "$1" --output "$2" --model "$MODEL" --num_thread "$NUM_THREAD"
                --temperature "$TEMPERATURE" --max_tokens "$MAX_TOKENS" --no_progress)
    [[ -n "$BASE" ]] && args+=(--base_url "$BASE")
    args+=(${BATCH[@]+"${BATCH[@]}"})
    if [[ "$MODE" == "replay" ]]; then  # recorded answers: nothing worth caching
        OPENAI_API_KEY=sk-replay-demo "$PY" src/batched_api_inference.py "${args[@]}" --no_cache
    else
        "$PY" src/batched_api_inference.py "${args[@]}"
    fi
}

subset() {  # the first --limit raw files, written whole then renamed
    head -n "$LIMIT" "$RAW" > "$RAW_USED.tmp" && mv "$RAW_USED.tmp" "$RAW_USED"
}

# the demo's figure is the one the README shows; other runs keep theirs beside their files
FIGURE="$OUT/report.png"
[[ "$OUT" == "data/demo_run" && -z "$LIMIT" && "$MODE" == "replay" ]] && FIGURE="figures/demo_run.png"

report() {
    "$PY" src/report.py --raw_code_file "$RAW_USED" --raw_code_msg_file "$MSG" \
        --unified_file "$UNIFIED" --parsed_file "$PARSED" --spec_msg_file "$SPEC_MSG" \
        --gens_file "$GENS" --verified_file "$VERIFIED" --rev_msg_file "$REV_MSG" \
        --rev_gens_file "$REV_GENS" --rev_verified_file "$REV_VERIFIED" --final_file "$FINAL" \
        --output_md "$OUT/report.md" --output_json "$OUT/report.json" \
        --figure "$FIGURE" --title "Run report: $RAW_USED ($MODE mode, model $MODEL)" --quiet
    echo "report: $OUT/report.md, figure: $FIGURE" >&2
}

echo "run_pipeline: $RAW_USED -> $OUT ($MODE mode, model $MODEL)" >&2
[[ -z "$LIMIT" ]] || run_step subset subset
run_step transform_msg "$PY" src/build_transform_msg.py --raw_code_file "$RAW_USED" --raw_code_msg_file "$MSG"
run_step transform_inference infer "$MSG" "$UNIFIED"
run_step parse "$PY" src/parse_gen_ios.py --input_file "$UNIFIED" --output_file "$PARSED" \
    --python_path "$PYTHON_PATH" --run_path "$RUN_PATH"
run_step spec_msg "$PY" src/build_spec_msg.py --input_file "$PARSED" --output_file "$SPEC_MSG"
run_step spec_inference infer "$SPEC_MSG" "$GENS"
run_step check_turn1 bash scripts/pipeline_check.sh "$PARSED" "$GENS" "$VERIFIED" "$PYTHON_PATH" "$RUN_PATH"
run_step rev_msg "$PY" src/build_spec_rev_msg.py --input_file "$VERIFIED" --output_file "$REV_MSG" \
    --answer_rule "$ANSWER_RULE"
run_step rev_inference infer "$REV_MSG" "$REV_GENS"
run_step check_turn2 bash scripts/pipeline_check.sh "$PARSED" "$REV_GENS" "$REV_VERIFIED" "$PYTHON_PATH" "$RUN_PATH"
run_step assemble "$PY" src/assemble_spec_demo.py --result_file_turn1 "$VERIFIED" \
    --result_file_turn2 "$REV_VERIFIED" --output_file "$FINAL" ${DROP_FAILED[@]+"${DROP_FAILED[@]}"}
cleanup
run_step report report

# --- the funnel, counted from the files on disk ------------------------------------------
"$PY" - "$MODE" "$RAW_USED" "$UNIFIED" "$PARSED" "$SPEC_MSG" "$VERIFIED" "$REV_VERIFIED" "$FINAL" \
    "$GENS" "$REV_GENS" <<'EOF'
import json, os, sys
from collections import Counter

sys.path.insert(0, "src")
from annoy_datasync.status import FAIL_BAD_REQUEST, SUCCESS

def lines(path):
    if not os.path.exists(path):
        return
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield rec

def count(path):
    return sum(1 for _ in lines(path))

def passed(path):
    return sum(1 for r in lines(path) if isinstance(r.get("res"), dict) and r["res"].get("status") == SUCCESS)

mode, raw, unified, parsed, spec, verified, rev_verified, final, gens, rev_gens = sys.argv[1:]
rows = [("raw files", count(raw)), ("unified", count(unified)), ("parsed", count(parsed)),
        ("prompts", count(spec)), ("turn-1 successes", passed(verified)),
        ("turn-2 answers", count(rev_verified)), ("turn-2 successes", passed(rev_verified)),
        ("final records", count(final))]
print("funnel:")
for name, n in rows:
    print(f"  {name:<17} {n}")
failed = {step: Counter(r.get("reason") for r in lines(out + ".failed.jsonl"))
          for step, out in (("transform", unified), ("turn 1", gens), ("turn 2", rev_gens))}
print("failed requests: " + ", ".join(
    f"{step} {sum(c.values())}" + (" (" + " ".join(f"{k}={v}" for k, v in c.most_common()) + ")" if c else "")
    for step, c in failed.items()))
unknown = sum(c[FAIL_BAD_REQUEST] for c in failed.values())
if mode == "replay" and unknown:
    print(f"warning: the replay server had no recorded answer for {unknown} request(s): the answers "
          f"do not match these prompts (for the demo, rebuild them: python data/demo/make_answers.py)")
print(f"final data: {final}")
EOF
