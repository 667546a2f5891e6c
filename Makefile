# One command to try it, one to test it:  make demo   |   make test
# Every target (re)runs its install step; pip makes that a no-op when nothing changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch the tests run, installed before the `hf` extra so that pip keeps it. The Dockerfile's
# ARG TORCH_VERSION and the README's CPU install must name the same version (tests/unit/test_deploy.py).
# Where pip resolves this pin to the multi-GB CUDA wheel (Linux with pip's own index), install the CPU
# build instead: make TORCH_INDEX_URL=<PyTorch's CPU wheel index, from pytorch.org's install selector> test
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=

.PHONY: venv install install-dev ls-venv demo test lint lint-deploy typecheck unit test-label-studio bench-sampling bench-serve clean

venv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip

install: venv  ## core runtime: enough for the default model, images, video, DICOM
	$(BIN)/pip install -q -e .

install-dev: venv  ## + Hugging Face models and the test/lint tools
	$(BIN)/pip install -q $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)") "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[hf,dev]"

ls-venv:  ## the separate Label Studio venv for its integration tests (never the service venv)
	tests/tools/make_ls_venv.sh

demo: install  ## make sample media and preannotate it with the default model
	$(BIN)/preannotate demo --out demo-output

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layers in pyproject.toml [tool.importlinter]: nothing imports upward

lint-deploy: install-dev  ## render k8s/ overlays, strict-validate, policy checks, yamllint, hadolint
	$(BIN)/python tests/tools/check_manifests.py

typecheck: install-dev
	$(BIN)/mypy

unit: install-dev
	$(BIN)/python -m pytest

test: lint typecheck unit  ## everything CI runs (Label Studio tests run when its venv exists: make ls-venv)

test-label-studio: install-dev ls-venv
	PREANNOTATE_REQUIRE_LABEL_STUDIO=1 $(BIN)/python -m pytest -m label_studio

bench-sampling: install
	$(BIN)/python -m benchmarks.bench_sampling

bench-serve: install-dev
	$(BIN)/python -m benchmarks.bench_serve

clean:
	rm -rf demo-output .pytest_cache .mypy_cache .ruff_cache
