# `make help` lists the targets. The first run creates .venv and installs the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a CUDA machine: make install TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test leaderboard data bench kernels-check lint clean mutants docs

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/lra: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(BIN)/lra  ## create .venv and install the project with its test tools

train: install  ## train the default (S4D on generated mini-ListOps, CPU, a few minutes); ARGS= adds overrides
	$(BIN)/lra train $(ARGS)

test: install  ## run the test suite (one thread, W&B off); ARGS= passes pytest options
	OMP_NUM_THREADS=1 WANDB_MODE=disabled $(BIN)/python -m pytest $(ARGS)

leaderboard: install  ## render leaderboard/ (LEADERBOARD.md, index.html, CSV, Parquet) from leaderboard/runs
	$(BIN)/lra leaderboard

data: install  ## generate full ListOps (96K/2K/2K) under ./data/listops and tokenise it into its cache
	$(BIN)/lra data generate listops
	$(BIN)/lra data prepare listops

# `lra bench kernels|train|data|report`: docs/performance.md
bench: install  ## one block of each model (B8 L1024 D128 N64, 1 thread) -> benchmarks/results/
	OMP_NUM_THREADS=1 $(BIN)/lra bench layers

# TRITON=3.6: the check under that Triton release instead of .venv's (the newest, what CI runs),
# in its own .venv-triton3.6: the CPU torch, that Triton, what the check imports besides (omegaconf,
# numpy) and the project without its other dependencies
TRITON ?=
KERNELS_VENV := $(if $(TRITON),.venv-triton$(TRITON),$(VENV))
kernels-check: $(if $(TRITON),$(KERNELS_VENV)/installed,install)  ## compile every Triton kernel for an H100 (sm_90) without a GPU: shared memory, registers, spills; with .venv's Triton (the newest, as CI), TRITON=3.6: Triton 3.6 in .venv-triton3.6
	env -u TRITON_INTERPRET OMP_NUM_THREADS=1 $(KERNELS_VENV)/bin/python -m lra.bench.compile_check $(ARGS)

.venv-triton%/installed: pyproject.toml
	test -x .venv-triton$*/bin/python || $(PYTHON) -m venv .venv-triton$*
	.venv-triton$*/bin/python -m pip install -q --upgrade pip
	.venv-triton$*/bin/python -m pip install -q "$(TORCH_SPEC)" "triton==$*.*" omegaconf==2.3.0 numpy
	.venv-triton$*/bin/python -m pip install -q --no-deps -e .
	touch $@

# tests/mutants/catalogue.yaml; docs/mutants.md. ARGS=--fast: CI's subset; ARGS="--only NAME"
mutants: install  ## remove each protection in turn (tests/mutants/) and check its tests fail; before each release
	OMP_NUM_THREADS=1 WANDB_MODE=disabled $(BIN)/python tests/mutants/run.py $(ARGS)

docs: install  ## rewrite docs/recipes.md's tables (recipes, deviations) from conf/experiment and conf/references.yaml
	$(BIN)/python -m lra.recipes

lint: install  ## check style with ruff (CI runs it after the tests)
	$(BIN)/ruff check .

clean:  ## remove run folders and caches (keeps .venv, data and results)
	rm -rf runs outputs multirun .pytest_cache
