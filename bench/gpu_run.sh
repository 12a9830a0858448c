#!/usr/bin/env bash
# Every GPU measurement in ONE call that ends within 9 minutes (docs/PERFORMANCE.md, "On a GPU"):
#   bash bench/gpu_run.sh --out $OUT/performance-gpu.json   a lent H100/H200 (device tool: carry .whl, timeout 560)
#   bash bench/gpu_run.sh --smoke [--out FILE]              the same parts on any CPU with CI-sized models
#   bash bench/gpu_run.sh check                             only the import check (seconds)
# The parts, their time budgets and the JSON: bench/gpu_bench.py (other options pass through to it).
# Without --out: $OUT/performance-gpu.json, else bench-results/ (--smoke: a new temporary folder).
# Wheels from bench/gpu_wheels.sh are installed first when .whl/ is there (not for --smoke). The
# output is also written beside the JSON (performance-gpu.log). Exit status: 0; 1 when a part
# failed (the JSON says which and why); 3 when something does not import; 4 when the time limit
# cut the run (the JSON holds what was measured).
set -euo pipefail
started="$(date +%s.%N)"  # the time limit counts from here: the wheels' install is in it
here="$(pwd)"
cd "$(dirname "$0")/.."
smoke=0
check=0
out=""
args=()
while (($#)); do
  case "$1" in
    --smoke) smoke=1; args+=("$1") ;;
    check | --check) check=1 ;;
    --out) out="$2"; shift ;;
    --out=*) out="${1#--out=}" ;;
    *) args+=("$1") ;;
  esac
  shift
done
if ((!smoke)) && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
if ((check)); then
  exec "${python}" bench/gpu_bench.py --check
fi
if [[ -z "${out}" ]]; then
  if ((smoke)); then
    out="$(mktemp -d)/performance-gpu.json"
  else
    out="${OUT:-$(pwd)/bench-results}/performance-gpu.json"
  fi
fi
[[ "${out}" = /* ]] || out="${here}/${out}"  # relative to where it was called from
mkdir -p "$(dirname "${out}")"
if ((!smoke)); then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>/dev/null || true
fi
"${python}" bench/gpu_bench.py --started "${started}" --out "${out}" ${args[@]+"${args[@]}"} 2>&1 \
  | tee "${out%.json}.log"
