#!/usr/bin/env bash
# Verify predictions, then re-check the timeouts with fewer workers and more time.
#
#   bash scripts/pipeline_check.sh PARSED GENS VERIFIED [PYTHON] [RUN_PATH]
#
# PYTHON (default: python3) runs the reference code; RUN_PATH (default ./temp/run) holds the
# executions' scratch directories. Environment: WORKERS (default: number of CPUs), TIMEOUT
# (seconds per execution, default 5), RETRIES (timeout re-checks, default 3; each halves the
# workers and doubles the timeout), PIPELINE_PYTHON (interpreter of the steps, default python3),
# READ_PATHS (directories the reference code may read, read-only, separated by ':'; passed as
# --read_path to verify.py; by default it sees only the interpreter and its own scratch).
#
# VERIFIED is only ever replaced whole (temp file + rename): a kill at any point leaves the
# old file or the new one. A rerun resumes: verdicts already in VERIFIED for identical lines
# of GENS are reused, and only the timeouts are checked again.
set -euo pipefail

if [ $# -lt 3 ] || [ $# -gt 5 ]; then
    echo "usage: [READ_PATHS=DIR[:DIR...]] bash $0 PARSED GENS VERIFIED [PYTHON] [RUN_PATH]" >&2
    exit 2
fi
PARSED=$1
GENS=$2
VERIFIED=$3
CODE_PYTHON=${4:-python3}
RUN_PATH=${5:-./temp/run}
PY=${PIPELINE_PYTHON:-python3}
WORKERS=${WORKERS:-$(nproc)}
TIMEOUT=${TIMEOUT:-5}
RETRIES=${RETRIES:-3}
VERIFY="$(cd "$(dirname "$0")/.." && pwd)/src/verify.py"

for name in WORKERS RETRIES; do
    [[ ${!name} =~ ^[0-9]+$ ]] || { echo "error: $name=${!name}: should be a whole number" >&2; exit 2; }
done
[[ $TIMEOUT =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "error: TIMEOUT=$TIMEOUT: should be a number of seconds" >&2; exit 2; }

for f in "$PARSED" "$GENS"; do
    [ -f "$f" ] || { echo "error: $f: no such file" >&2; exit 1; }
done

common=(--parsed_file "$PARSED" --python_path "$CODE_PYTHON" --run_path "$RUN_PATH")
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
timeout=$TIMEOUT
for ((i = 1; i <= RETRIES; i++)); do
    workers=$(( workers > 1 ? workers / 2 : 1 ))
    timeout=$(awk -v t="$timeout" 'BEGIN { print t * 2 }')   # TIMEOUT may be 2.5
    echo "pipeline_check: re-checking timeouts (round $i, workers=$workers, timeout=${timeout}s)" >&2
    "$PY" "$VERIFY" "${common[@]}" --gens_file "$VERIFIED" --output_file "$VERIFIED" \
        --recheck timeout --workers "$workers" --timeout "$timeout"
done
