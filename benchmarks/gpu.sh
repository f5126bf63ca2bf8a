#!/usr/bin/env bash
# The GPU checks the open issues ask for, in stages that each fit one call of the device tool
# (10 minutes a call, 30 a session). From the repository root on the GPU machine:
#
#   bash benchmarks/gpu.sh tests    # pytest -m "kernels or gpu" on CUDA, then the model equivalence tests
#   bash benchmarks/gpu.sh bench    # lra bench layers|kernels|train --device cuda
#   bash benchmarks/gpu.sh train    # generated full ListOps, then S4D's published recipe for 9 minutes
#
# The machine has torch, triton, lightning, pandas, pyarrow and pytest but no network: the rest
# comes from wheels/ (git-ignored; carry it), fetched beforehand on a machine with pip access:
#   pip download --python-version 3.12 --only-binary=:all: --no-deps -d wheels \
#       hydra-core==1.3.2 omegaconf==2.3.0 datasets dill multiprocess wandb
#   pip wheel --no-deps -w wheels antlr4-python3-runtime==4.9.3
# What a stage writes (benchmarks/results/*.json named by device, leaderboard/runs/**) is copied
# to $OUT, which the device tool brings back; commit it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?"which stage: tests, bench or train"}
export WANDB_MODE=disabled TRITON_INTERPRET=0

pip install -q --no-index --find-links wheels --no-deps hydra-core omegaconf antlr4-python3-runtime \
    datasets dill multiprocess wandb
pip install -q --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

case "$stage" in
  tests)
    python -m pytest -q -m "kernels or gpu" -p no:cacheprovider
    python -m pytest -q -p no:cacheprovider tests/test_s4.py tests/test_s4d.py tests/test_mamba.py \
        tests/test_lightnet.py tests/test_flash.py tests/test_models.py
    ;;
  bench)
    lra bench layers --device cuda
    lra bench kernels --device cuda
    lra bench train --device cuda
    ;;
  train)
    lra data generate listops --workers "$(nproc)"
    lra train experiment=s4d/listops trainer.max_time=00:00:09:00 trainer.progress=false
    ;;
  *)
    echo "unknown stage $stage: tests, bench or train" >&2
    exit 2
    ;;
esac

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/benchmarks" "$OUT/leaderboard"
  cp -r benchmarks/results "$OUT/benchmarks/"
  [ -d leaderboard/runs ] && cp -r leaderboard/runs "$OUT/leaderboard/"
fi
