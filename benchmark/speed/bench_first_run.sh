#!/usr/bin/env bash
# The first run in a new --cache-dir, whole process, timed from outside: with the machine-wide memo of measured
# choices empty (A: auto measures) or already holding the choice (B), in alternating rounds.
# Usage: bash benchmark/speed/bench_first_run.sh DATA [BACKBONE] [ROUNDS]   (from the repository root)
set -u
DATA=${1:?usage: bench_first_run.sh DATA [BACKBONE] [ROUNDS]}
BACKBONE=${2:-ResNet50}
ROUNDS=${3:-3}
PYTHON=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=3
run() {  # run CXR_BENCH_HOME FOLDER: one extraction of 100 images per class into FOLDER's new cache
    CXR_BENCH_HOME=$1 "$PYTHON" run_benchmark.py --data "$DATA" --backbones "$BACKBONE" --weights none \
        --extract-only --limit-per-class 100 --no-progress --cache-dir "$2/cache" --results-dir "$2/results"
}
warm=$(mktemp -d)
trap 'rm -rf "$warm"' EXIT
run "$warm/home" "$warm/first" > /dev/null 2>&1 || { echo "the warm-up run failed" >&2; exit 1; }
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        folder=$(mktemp -d)
        home=$([ "$side" = A ] && echo "$folder/home" || echo "$warm/home")
        start=$(date +%s.%N)
        run "$home" "$folder" > "$folder/log" 2>&1
        code=$?
        echo "round $round side $side exit $code wall $(echo "$(date +%s.%N) - $start" | bc) s"
        rm -rf "$folder"
    done
done
