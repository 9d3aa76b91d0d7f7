#!/usr/bin/env bash
# One short run on a GPU machine (issue 28): the six backbones' extraction through the harness, Keras on JAX in
# float32, bfloat16 and float16, against timm on PyTorch (float32, bfloat16 and float16 autocast) on the same GPU.
#
#   bash benchmark/speed/bench_gpu.sh DATA OUT          (BACKBONES, VARIANTS, IMAGES=512, BATCH=128, ROUNDS=3,
#                                                        CEILING=8192, PER_BACKBONE_S=100 to change)
#
# Writes OUT/gpu.txt (nvidia-smi), OUT/bench.log (everything printed) and OUT/<backbone>.json (bench_extract's
# numbers). Cheapest backbone first, and it stops at the first backbone that fails, so a broken set-up costs one
# backbone's time, not the machine's whole lease. The GPU machines have no TensorFlow: KERAS_BACKEND=jax.
set -uo pipefail
data=${1:?usage: bench_gpu.sh DATA OUT}
out=${2:?usage: bench_gpu.sh DATA OUT}
backbones=${BACKBONES:-"MobileNetV2 ResNet50 VGG16 InceptionV3 Xception InceptionResNetV2"}
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import jax, keras; import torch, timm; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__,
'torch', torch.__version__, 'timm', timm.__version__)" 2>&1 | tee -a "$out/gpu.txt"
for backbone in $backbones; do
    echo "== $backbone $(date -u +%H:%M:%S)" | tee -a "$out/bench.log"
    timeout "${PER_BACKBONE_S:-100}" python3 -m benchmark.speed.bench_extract --data "$data" --backbone "$backbone" \
        --images "${IMAGES:-512}" --batch-size "${BATCH:-128}" --rounds "${ROUNDS:-3}" --ceiling-size "${CEILING:-8192}" \
        --variants ${VARIANTS:-harness-float32 harness-bfloat16 harness-float16 timm-float32 timm-bfloat16 timm-float16} \
        --json "$out/$backbone.json" 2>&1 | grep -v -e "^I0000" -e "^W0000" -e "^WARNING: All log" | tee -a "$out/bench.log"
    [ -s "$out/$backbone.json" ] || { echo "$backbone failed: stopping" | tee -a "$out/bench.log"; exit 1; }
done
