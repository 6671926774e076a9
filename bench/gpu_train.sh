#!/usr/bin/env bash
# InternVL2-1B full fine-tuning on one GPU: adapt train beside a plain PyTorch loop and a transformers Trainer
# (bench/bench_train.py), tokens/s, MFU against the GPU's measured bf16 matmul peak, peak GPU memory per runner.
#
#     bash bench/gpu_train.sh [BENCH_TRAIN_FLAGS]     # on a machine whose torch sees a CUDA GPU (else: no CUDA device)
#     PROFILE=1 STEPS=4 REPEATS=1 bash bench/gpu_train.sh   # profiler tables of each runner's steps, nothing written
#
# The model is the internvl2-1b preset at its real shapes with seeded random weights (no download); the data is the
# quick start's. Projector + LLM in full, vision frozen (InternVL's own "full" fine-tuning), bf16 autocast over float32
# master weights, AdamW fused. Wheels in .whl/ (if any) are installed first into a private target (a machine with no
# registry: this project's pinned transformers / peft / tokenizers beside the machine's own torch; fetch them where
# pip reaches PyPI, e.g. `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
# manylinux2014_x86_64 -d .whl transformers==5.24.0 peft==0.21.2 tokenizers==0.23.3 pydantic==2.14.4
# pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0`, the versions of
# requirements/dev.lock). The section is written into BENCHMARKS.md; with $OUT set, the log and BENCHMARKS.md are
# copied there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
label="$(python3 -c 'import torch; print(torch.cuda.get_device_name(0))')"
if [ -z "$label" ]; then echo "torch.cuda.get_device_name(0) is empty: no label for the block" >&2; exit 1; fi
out="${OUT:-/tmp/gpu-train}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt" || true
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
# PROFILE=1: torch.profiler tables of each run's timed steps into $out/profile/ instead of writing the section
publish=(--write)
if [ -n "${PROFILE:-}" ]; then publish=(--profile "$out/profile"); fi
python3 bench/bench_train.py --models internvl2-1b --precision "${PRECISION:-bf16}" --steps "${STEPS:-8}" \
  --batch-size "${BATCH:-32}" --repeats "${REPEATS:-2}" --threads "${THREADS:-8}" --workers "${WORKERS:-4}" \
  --label "$label" --work /tmp/bench-train-gpu \
  "${publish[@]}" "$@" 2>&1 | tee "$out/bench_train.log"
cp BENCHMARKS.md "$out/"
