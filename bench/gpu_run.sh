#!/usr/bin/env bash
# Run bench/speed.py on a lent GPU machine, one part per call (each must end within 10 minutes):
#   bash bench/gpu_run.sh main      plain diffusers vs the app, and each speed switch
#   bash bench/gpu_run.sh memory    memory modes, decode chunk size, DPM-Solver++ at 25 steps, DeepCache
#   bash bench/gpu_run.sh scaling   resolution x frames (feeds the page's estimates) and cold start
#   bash bench/gpu_run.sh compile   torch.compile (its compile time is in load_s)
#   bash bench/gpu_run.sh check     only the import check every part starts with
# Wheels from bench/gpu_wheels.sh are installed first when .whl/ is there (carry it). Results go
# to $OUT (the device tool brings them back) or to bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
python="${PYTHON:-python3}"
# Everything bench/speed.py imports, checked before the long run (diffusers arrives --no-deps, so its
# own requirements must be there too): a clear message and exit 3, in seconds, instead of a traceback
# minutes in.
"${python}" - <<'PY' || exit 3
import importlib
import sys

needed = ["torch", "diffusers", "transformers", "accelerate", "importlib_metadata", "zipp", "safetensors",
          "huggingface_hub", "filelock", "regex", "requests", "numpy", "PIL", "yaml"]
missing = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as error:  # an ImportError, or a module that fails while importing
        missing.append(f"{name} ({type(error).__name__}: {error})")
if not missing:
    try:
        from diffusers import I2VGenXLPipeline  # noqa: F401 (diffusers imports its pipelines lazily)
    except Exception as error:
        missing.append(f"diffusers.I2VGenXLPipeline ({type(error).__name__}: {error})")
if missing:
    print("bench/gpu_run.sh: cannot run, these do not import: " + "; ".join(missing), file=sys.stderr)
    print("Fetch their wheels with bench/gpu_wheels.sh on a machine with PyPI and carry .whl/.", file=sys.stderr)
    sys.exit(3)
print("imports: all there")
PY
out="${OUT:-bench-results}"
mkdir -p "${out}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>/dev/null || true
part="${1:-main}"
speed() { "${python}" bench/speed.py --model-dir /tmp/i2v-random-real "$@" 2>&1 | tee -a "${out}/${part}.log"; }
case "${part}" in
  main) speed --out "${out}/main.json" --app decode_chunk_size=1 --app attention_backend=flash \
          --app attention_backend=cudnn --app fuse_qkv=true --app channels_last=true --app cudnn_benchmark=true ;;
  memory) speed --out "${out}/memory.json" --app memory_mode=model_offload \
            --app memory_mode=sequential_offload --app decode_chunk_size=16 --app scheduler=dpmpp,steps=25 \
            --app deep_cache_interval=2 --app deep_cache_interval=3 ;;
  scaling) speed --out "${out}/scaling.json" --repeats 1 --scaling --cold-start ;;
  compile) speed --out "${out}/compile.json" --app compile=true ;;
  check) ;;
  *) echo "unknown part: ${part} (main, memory, scaling, compile or check)" >&2; exit 2 ;;
esac
