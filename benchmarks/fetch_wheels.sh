#!/usr/bin/env bash
# Fetch, on a machine with pip access, the wheels benchmarks/gpu.sh installs on the GPU machine (Python
# 3.12, x86_64, no network; it has torch, triton, lightning, numpy, pandas, pyarrow and pytest):
# hydra-core, omegaconf and datasets with what they need, and a setuptools new enough to install
# this project. The big ones the GPU machine already has are left out, to keep wheels/ small
# (it travels with the working tree: `carry: ["wheels"]`). W&B is not fetched: no GPU check logs to it.
#
#   bash benchmarks/fetch_wheels.sh      # -> wheels/ (~12 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p wheels
pip wheel -q --no-deps -w wheels antlr4-python3-runtime==4.9.3  # hydra's pin is published as a source archive only
pip download -q --python-version 3.12 --only-binary=:all: --find-links wheels -d wheels \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any hydra-core==1.3.2 omegaconf==2.3.0 datasets "setuptools>=77"
rm -f wheels/numpy-*.whl wheels/pandas-*.whl wheels/pyarrow-*.whl wheels/python_dateutil-*.whl wheels/tzdata-*.whl
du -sh wheels
