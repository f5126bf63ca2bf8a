#!/usr/bin/env bash
# The GPU checks the open issues ask for, in stages that each fit one call of the device tool
# (10 minutes a call, 30 a session). From the repository root on the GPU machine:
#
#   bash benchmarks/gpu.sh check    # installs, imports, and one Triton kernel on the GPU (a minute)
#   bash benchmarks/gpu.sh tests    # pytest -m "kernels or gpu" on CUDA, then the model tests
#   bash benchmarks/gpu.sh bench    # lra bench layers|kernels|train --device cuda
#   bash benchmarks/gpu.sh train    # full ListOps generated, then S4D's recipe for 9 minutes
#   bash benchmarks/gpu.sh flash    # attention/dispatch/flash tests on CUDA, lra doctor --kernels,
#                                   # then flash/listops (dropout 0.1) for 5 minutes on our kernel
#   bash benchmarks/gpu.sh recipes  # two identical deterministic scan backwards, the scan, S4D/S4,
#                                   # LightNet kernel tests, the bench at listops and pathx shapes
#
# The machine has torch, triton, lightning, pandas, pyarrow and pytest but no network: the rest
# comes from wheels/ (git-ignored; carry it), fetched beforehand on a machine with pip access by
# `bash benchmarks/fetch_wheels.sh`; only the wheels whose packages are missing get installed.
# What a stage writes (benchmarks/results/*.json named by device, leaderboard/runs/**) is copied
# to $OUT, which the device tool brings back; commit it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?"which stage: check, tests, bench, train, flash or recipes"}
export WANDB_MODE=disabled TRITON_INTERPRET=0

python benchmarks/install_wheels.py wheels
pip install -q --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

case "$stage" in
  check)
    python - <<'PY'
import datasets, hydra, lightning, torch, triton
from lra.kernels.attention import attention
print(f"torch {torch.__version__}, triton {triton.__version__}, lightning {lightning.__version__}, "
      f"hydra {hydra.__version__}, datasets {datasets.__version__}, {torch.cuda.get_device_name()}")
q = torch.randn(2, 4, 300, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
out = attention(q, q, q, torch.tensor([300, 123], device="cuda"))
out.float().sum().backward()
print("Triton attention ran forward and backward:", tuple(out.shape),
      "finite:", bool(q.grad.isfinite().all()))
PY
    python -m lra list
    ;;
  tests)
    python -m pytest -q -m "kernels or gpu" -p no:cacheprovider
    python -m pytest -q -p no:cacheprovider tests/test_s4.py tests/test_s4d.py tests/test_mamba.py \
        tests/test_lightnet.py tests/test_flash.py tests/test_models.py
    ;;
  bench)
    python -m lra bench layers --device cuda
    python -m lra bench kernels --device cuda
    python -m lra bench train --device cuda
    python -m lra bench report "$(ls -t benchmarks/results/kernels-*.json | head -1)" \
        "$(ls -t benchmarks/results/train-*.json | head -1)" | tee benchmarks/results/report-gpu.md
    ;;
  train)
    python -m lra data generate listops --workers "$(nproc)"
    python -m lra train experiment=s4d/listops trainer.max_time=00:00:09:00 trainer.progress=false
    ;;
  flash)
    python -m pytest -q -p no:cacheprovider tests/test_kernels_attention.py tests/test_dispatch.py \
        tests/test_flash.py
    python -m lra doctor --kernels
    python -m lra data generate listops --workers "$(nproc)"
    python -m lra train experiment=flash/listops trainer.max_time=00:00:05:00 trainer.progress=false
    python - <<'PY'
import json, pathlib
path = max(pathlib.Path("leaderboard/runs/listops/flash").glob("*.json"),
           key=lambda p: p.stat().st_mtime)
record = json.loads(path.read_text())
print(path, record["status"], record["metrics"].get("test_acc"), record.get("kernels"))
assert record["kernels"]["attention"]["path"] == "triton", "flash/listops did not train on our kernel"
PY
    ;;
  recipes)
    python -m pytest -q -p no:cacheprovider tests/test_kernels_selective_scan.py -k deterministic
    python -m pytest -q -p no:cacheprovider -m "kernels or gpu" tests/test_kernels_ssm.py \
        tests/test_kernels_additive_recurrence.py tests/test_kernels_compile.py
    python -m lra bench kernels --device cuda --tasks listops pathx --repeats 5
    ;;
  *)
    echo "unknown stage $stage: check, tests, bench, train, flash or recipes" >&2
    exit 2
    ;;
esac

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/benchmarks" "$OUT/leaderboard"
  cp -r benchmarks/results "$OUT/benchmarks/"
  [ -d leaderboard/runs ] && cp -r leaderboard/runs "$OUT/leaderboard/"
fi
