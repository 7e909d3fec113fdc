#!/usr/bin/env bash
# Verify predictions, then re-check with fewer workers only what load could have caused.
#
#   bash scripts/pipeline_check.sh PARSED GENS VERIFIED [PYTHON] [RUN_PATH]
#
# PYTHON (default: python3) runs the reference code; RUN_PATH (default: verify.py's) holds the
# executions' scratch directories. Environment: WORKERS (default: number of CPUs), TIMEOUT
# (CPU budget in seconds per execution, default: verify.py's; code that stops computing for as
# long is stopped too, as wall_timeout), RETRIES (re-check rounds, default 1; each halves the
# workers), PIPELINE_PYTHON (interpreter of the steps, default python, else python3;
# run_pipeline.sh sets it to its own), ANSWER_RULE (verify.py --answer_rule: method, the
# default, or lenient), READ_PATHS (directories the reference code may read, read-only,
# separated by ':'; passed as --read_path to verify.py; by default it sees only the
# interpreter and its own scratch).
#
# A timeout (the code used its whole CPU budget) is final: the same on any machine at any
# load. The re-check rounds run again only the verdicts verify.py selects with
# `--recheck load` (wall stops, and timeouts written by another implementation under a
# wall-clock limit), with the same budget: a genuine infinite loop is never run again.
#
# VERIFIED is only ever replaced whole (temp file + rename): a kill at any point leaves the
# old file or the new one. A rerun resumes: verdicts already in VERIFIED for identical lines
# of GENS are reused, and only the load-dependent ones are checked again.
set -euo pipefail

if [ $# -lt 3 ] || [ $# -gt 5 ]; then
    echo "usage: [READ_PATHS=DIR[:DIR...]] bash $0 PARSED GENS VERIFIED [PYTHON] [RUN_PATH]" >&2
    exit 2
fi
SRC="$(cd "$(dirname "$0")/.." && pwd)/src"
PY=${PIPELINE_PYTHON:-$(command -v python || command -v python3 || echo python3)}
# RUN_PATH_DEFAULT, CPU_BUDGET_DEFAULT: the defaults every step shares (annoy_datasync/layout.py)
defaults=$(PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m annoy_datasync.layout defaults) \
    || { echo "error: $PY could not run $SRC/annoy_datasync/layout.py (see above); set" \
              "PIPELINE_PYTHON to the interpreter of the steps" >&2; exit 1; }
eval "$defaults"
PARSED=$1
GENS=$2
VERIFIED=$3
CODE_PYTHON=${4:-python3}
RUN_PATH=${5:-$RUN_PATH_DEFAULT}
WORKERS=${WORKERS:-$(nproc)}
TIMEOUT=${TIMEOUT:-$CPU_BUDGET_DEFAULT}
RETRIES=${RETRIES:-1}
VERIFY="$SRC/verify.py"

for name in WORKERS RETRIES; do
    [[ ${!name} =~ ^[0-9]+$ ]] || { echo "error: $name=${!name}: should be a whole number" >&2; exit 2; }
done
[[ $TIMEOUT =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "error: TIMEOUT=$TIMEOUT: should be a number of seconds" >&2; exit 2; }

for f in "$PARSED" "$GENS"; do
    [ -f "$f" ] || { echo "error: $f: no such file" >&2; exit 1; }
done

common=(--parsed_file "$PARSED" --python_path "$CODE_PYTHON" --run_path "$RUN_PATH")
if [ -n "${ANSWER_RULE:-}" ]; then
    common+=(--answer_rule "$ANSWER_RULE")
fi
if [ -n "${READ_PATHS:-}" ]; then
    IFS=: read -r -a read_dirs <<< "$READ_PATHS"
    for d in "${read_dirs[@]}"; do
        [ -n "$d" ] && common+=(--read_path "$d")
    done
fi

resume=()
if [ -s "$VERIFIED" ]; then
    resume=(--resume_from "$VERIFIED")
fi
echo "pipeline_check: verifying $GENS (workers=$WORKERS, timeout=${TIMEOUT}s)" >&2
"$PY" "$VERIFY" "${common[@]}" --gens_file "$GENS" --output_file "$VERIFIED" \
    --workers "$WORKERS" --timeout "$TIMEOUT" ${resume[@]+"${resume[@]}"}

workers=$WORKERS
for ((i = 1; i <= RETRIES; i++)); do
    workers=$(( workers > 1 ? workers / 2 : 1 ))
    echo "pipeline_check: re-checking what load could have caused (round $i, workers=$workers)" >&2
    "$PY" "$VERIFY" "${common[@]}" --gens_file "$VERIFIED" --output_file "$VERIFIED" \
        --recheck load --workers "$workers" --timeout "$TIMEOUT"
done
