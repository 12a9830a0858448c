#!/usr/bin/env bash
# Run bench/speed.py on a lent GPU machine, one part per call (each must end within 10 minutes):
#   bash bench/gpu_run.sh main      plain diffusers vs the app, and each speed switch
#   bash bench/gpu_run.sh memory    memory modes, decode chunk size, DPM-Solver++ at 25 steps, DeepCache
#   bash bench/gpu_run.sh scaling   resolution x frames (feeds the page's estimates) and cold start
#   bash bench/gpu_run.sh compile   torch.compile (its compile time is in load_s)
# Wheels from bench/gpu_wheels.sh are installed first when .whl/ is there (carry it). Results go
# to $OUT (the device tool brings them back) or to bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
out="${OUT:-bench-results}"
mkdir -p "${out}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>/dev/null || true
part="${1:-main}"
speed() { python3 bench/speed.py --model-dir /tmp/i2v-random-real "$@" 2>&1 | tee -a "${out}/${part}.log"; }
case "${part}" in
  main) speed --out "${out}/main.json" --app attention_backend=flash --app attention_backend=cudnn \
          --app fuse_qkv=true --app channels_last=true --app cudnn_benchmark=true ;;
  memory) speed --out "${out}/memory.json" --app memory_mode=model_offload \
            --app memory_mode=sequential_offload --app decode_chunk_size=16 --app scheduler=dpmpp,steps=25 \
            --app deep_cache_interval=2 --app deep_cache_interval=3 ;;
  scaling) speed --out "${out}/scaling.json" --repeats 1 --scaling --cold-start ;;
  compile) speed --out "${out}/compile.json" --app compile=true ;;
  *) echo "unknown part: ${part} (main, memory, scaling or compile)" >&2; exit 2 ;;
esac
