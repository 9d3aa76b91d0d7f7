#!/usr/bin/env bash
# The first run in a new --cache-dir, whole process, timed from outside: with the machine-wide memo of measured
# choices empty (A: auto measures) or already holding the choice (B), and the textbook path (T: textbook_run.py,
# image_dataset_from_directory -> preprocess_input -> predict over as many images as the harness extracted), in
# alternating rounds.
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
run "$warm/home" "$warm/first" > "$warm/log" 2>&1 || { echo "the warm-up run failed" >&2; exit 1; }
# As many images as the harness extracts (its own line: "features from N forward passes (M images)").
IMAGES=$(sed -n 's/.*forward passes (\([0-9]*\) images).*/\1/p' "$warm/log" | head -1)
echo "the harness extracts ${IMAGES:?the warm-up run printed no image count} images; the textbook path reads as many"
for round in $(seq "$ROUNDS"); do
    for side in A B T; do
        folder=$(mktemp -d)
        home=$([ "$side" = A ] && echo "$folder/home" || echo "$warm/home")
        start=$(date +%s.%N)
        if [ "$side" = T ]; then
            "$PYTHON" -m benchmark.speed.textbook_run "$DATA" --backbone "$BACKBONE" --images "$IMAGES" > "$folder/log" 2>&1
        else
            run "$home" "$folder" > "$folder/log" 2>&1
        fi
        code=$?
        echo "round $round side $side exit $code wall $(echo "$(date +%s.%N) - $start" | bc) s"
        rm -rf "$folder"
    done
done
