#!/usr/bin/env bash
# The whole pipeline of the method's README in one command, step by step:
#   1.1 build_transform_msg  1.2 inference  2 parse_gen_ios  3 build_spec_msg  4 inference
#   5 pipeline_check  6.1 build_spec_rev_msg  6.2 inference  6.3 pipeline_check  6.4 assemble
# then a report (src/report.py), and the funnel from raw files to final records.
#
# Offline demo (default): the demo's raw code set, answered by the replay server from
# data/demo/answers.jsonl (answers written for the demo, not produced by a model):
#     bash scripts/run_pipeline.sh
# Your own raw code file and endpoint (key in OPENAI_API_KEY or DEEPSEEK_API_KEY):
#     bash scripts/run_pipeline.sh --raw_code_file data/rawcode_1k.jsonl --out_dir data/run1 \
#         --model deepseek-chat [--base_url https://api.deepseek.com]
# Re-run an earlier run without the API (its inference outputs as recorded answers):
#     bash scripts/run_pipeline.sh --raw_code_file data/rawcode_1k.jsonl --out_dir data/run1b \
#         --answers data/run1/rawcode_1k_unified.jsonl data/run1/spec_1k_gens.jsonl \
#                   data/run1/spec_1k_gens_rev.jsonl
#
# The files of a run are named as in the method's README, after the run's name (--name):
# data/run1/rawcode_1k_msg.jsonl, data/run1/spec_1k_gens.jsonl, ... (src/annoy_datasync/layout.py).
# A step that finishes writes a marker in <out_dir>/.done/; a rerun of the same command
# skips finished steps and resumes the unfinished one (each step resumes on its own).
# The first failing step stops the run with its message. To start over, remove <out_dir>.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLER="$PWD"
cd "$ROOT"   # steps run from the repo root; paths given on the command line are the caller's

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
    cat <<'EOF'
Options:
  --raw_code_file FILE  raw code JSONL, one {"content": ...} per line [data/demo/rawcode_demo.jsonl]
  --out_dir DIR         where every file of the run goes [data/demo_run]
  --name NAME           the run's name in its file names (1k in rawcode_1k_msg.jsonl) [X for a
                        raw code file rawcode_X.jsonl, else the raw code file's name without .jsonl]
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
  --batch_discount F    share of the listed price a batch answer saves, for the cost in the
                        rounds' summaries and the report (needs --batch_api) [the price
                        table's batch_discount of the model, else 0.5]
  --prices FILE         YAML price table for the cost in the rounds' summaries and the report
                        [src/annoy_datasync/prices.yaml]
  -h, --help            this help
The steps run under $PYTHON (default: python, else python3).
EOF
}

die() { echo "run_pipeline: error: $*" >&2; exit 1; }

RAW="data/demo/rawcode_demo.jsonl"
OUT="data/demo_run"
NAME=""
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
BATCH_API=""
PRICES=()   # the price flags: every inference round and the report take them
PRICE_TABLE=""
DISCOUNT=""

need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
here() { [[ "$1" == /* ]] && echo "$1" || echo "$CALLER/$1"; }  # a caller's path, absolute
while [[ $# -gt 0 ]]; do
    case "$1" in
        --raw_code_file) need "$@"; RAW="$(here "$2")"; shift 2 ;;
        --out_dir) need "$@"; OUT="$(here "$2")"; shift 2 ;;
        --name) need "$@"; NAME="$2"; shift 2 ;;
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
        --batch_api) BATCH+=(--batch_api); BATCH_API=1; shift ;;
        --poll_interval) need "$@"; BATCH+=(--poll_interval "$2"); shift 2 ;;
        --batch_discount) need "$@"; DISCOUNT="$2"; PRICES+=(--batch_discount "$2"); shift 2 ;;
        --prices) need "$@"; PRICE_TABLE="$(here "$2")"; PRICES+=(--prices "$PRICE_TABLE"); shift 2 ;;
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
[[ -z "$DISCOUNT" || -n "$BATCH_API" ]] \
    || die "--batch_discount goes with --batch_api (it prices the answers of batches)"
[[ -z "$PRICE_TABLE" || -f "$PRICE_TABLE" ]] || die "$PRICE_TABLE: no such price table (--prices)"

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

# --- files of the run (names as in the method's README, under --out_dir) --------------
# RUN_NAME and one variable per file: RAW_CODE, TRANSFORM_MSG, UNIFIED, PARSED, SPEC_MSG, GENS,
# VERIFIED, REV_MSG, REV_GENS, REV_VERIFIED, FINAL (src/annoy_datasync/layout.py names them)
files=$(PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" \
        "$PY" -m annoy_datasync.layout run "$OUT" "$RAW" "$NAME") \
    || die "--name ${NAME:-(from $RAW)}: no file names for this run (see the message above)"
eval "$files"
RAW_USED="$RAW"
if [[ -n "$LIMIT" ]]; then   # the first --limit raw files, copied into the run
    RAW_USED="$RAW_CODE"
    [[ ! "$RAW_USED" -ef "$RAW" ]] \
        || die "--limit would overwrite the raw code file $RAW with its first $LIMIT lines;" \
               "give another --out_dir or --name"
fi

mkdir -p "$OUT" "$OUT/.done"
DONE="$OUT/.done"
# finished steps whose files are not there: the directory was written under other names
for pair in "subset:$RAW_USED" "transform_msg:$TRANSFORM_MSG"; do
    if [[ -f "$DONE/${pair%%:*}" && ! -f "${pair#*:}" ]]; then
        die "$OUT holds a run written under other file names (by an older run_pipeline.sh," \
            "or with another --name), as ${pair#*:} is missing; remove $OUT or choose another --out_dir"
    fi
done

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
    args+=(${BATCH[@]+"${BATCH[@]}"} ${PRICES[@]+"${PRICES[@]}"})
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
[[ "$OUT" -ef "$ROOT/data/demo_run" && -z "$LIMIT" && "$MODE" == "replay" ]] && FIGURE="figures/demo_run.png"

report() {
    "$PY" src/report.py --run_dir "$OUT" --name "$RUN_NAME" --raw_code_file "$RAW_USED" \
        --output_md "$OUT/report.md" --output_json "$OUT/report.json" \
        --figure "$FIGURE" --title "Run report: $RAW_USED ($MODE mode, model $MODEL)" --quiet \
        ${PRICES[@]+"${PRICES[@]}"}
    echo "report: $OUT/report.md, figure: $FIGURE" >&2
}

echo "run_pipeline: $RAW_USED -> $OUT ($MODE mode, model $MODEL)" >&2
[[ -z "$LIMIT" ]] || run_step subset subset
run_step transform_msg "$PY" src/build_transform_msg.py --raw_code_file "$RAW_USED" --raw_code_msg_file "$TRANSFORM_MSG"
run_step transform_inference infer "$TRANSFORM_MSG" "$UNIFIED"
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
[[ -f "$OUT/report.json" ]] || rm -f "$DONE/report"   # the funnel below reads it
run_step report report

# --- the funnel, as the report counted it from the files on disk ----------------------
FUNNEL=(--funnel_of "$OUT/report.json")
[[ "$MODE" != "replay" ]] || FUNNEL+=(--replay)
"$PY" src/report.py "${FUNNEL[@]}"
