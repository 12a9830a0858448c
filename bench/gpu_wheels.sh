#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels that bench/speed.py needs on a lent GPU machine whose
# image has PyTorch, transformers and accelerate but not diffusers (see docs/PERFORMANCE.md).
# They land in .whl/ (ignored by git); bench/gpu_run.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
# ftfy (and its wcwidth): Wan's pipeline cleans every prompt with ftfy.fix_text.
for wheel in diffusers==0.42.1 importlib_metadata==8.7.0 zipp==3.23.0 ftfy==6.3.1 wcwidth==0.2.13; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "${wheel}"
done
ls -l .whl
