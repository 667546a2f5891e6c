# One command to try it, one to test it:  make demo   |   make test
# Every target (re)runs its install step; pip makes that a no-op when nothing changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 resolves to a local CPU wheel on our machines; a looser pin pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv install install-dev ls-venv demo test lint lint-deploy typecheck unit test-label-studio bench-sampling bench-serve clean

venv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip

install: venv  ## core runtime: enough for the default model, images, video, DICOM
	$(BIN)/pip install -q -e .

install-dev: venv  ## + Hugging Face models and the test/lint tools
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[hf,dev]"

ls-venv:  ## the separate Label Studio venv for its integration tests (never the service venv)
	tests/tools/make_ls_venv.sh

demo: install  ## make sample media and preannotate it with the default model
	$(BIN)/preannotate demo --out demo-output

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
