#!/usr/bin/env bash
# The bare main command (`python run_benchmark.py`, no options: the phantom set, six backbones at their default
# sizes, the default grid) as a newcomer's first run, whole process, timed from outside: revision NEW against
# revision OLD, each from a fresh clone (no results/, no cache) with an empty machine-wide memo, in alternating
# rounds (the order reversed every other round). Both run in this checkout's virtual environment.
# Usage: bash benchmark/speed/bench_main_command.sh OLD [NEW] [ROUNDS]   (from the repository root; NEW: HEAD)
set -u
OLD=${1:?usage: bench_main_command.sh OLD [NEW] [ROUNDS]}
NEW=${2:-HEAD}
ROUNDS=${3:-3}
root=$(pwd)
PYTHON=${PYTHON:-$root/.venv/bin/python}  # not resolved: the link is the virtual environment
export TF_CPP_MIN_LOG_LEVEL=3
run() {  # run NAME REVISION: one bare main command from a fresh clone of REVISION
    folder=$(mktemp -d)
    git clone -q "$root" "$folder/repo" && git -C "$folder/repo" checkout -q "$2"
    start=$(date +%s.%N)
    (cd "$folder/repo" && CXR_BENCH_HOME="$folder/home" "$PYTHON" run_benchmark.py > "$folder/log" 2>&1)
    code=$?
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    echo "round $round $1 ($(git -C "$folder/repo" rev-parse --short HEAD)) exit $code wall $wall s," \
        "$(grep -o 'done in [0-9]* s' "$folder/log")"
    rm -rf "$folder"
}
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then run old "$OLD"; run new "$NEW"; else run new "$NEW"; run old "$OLD"; fi
done
