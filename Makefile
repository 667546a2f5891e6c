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

.PHONY: venv install install-dev ls-venv darwin-venv demo screenshots test lint lint-deploy typecheck unit test-label-studio bench-sampling bench-serve gpu-check clean

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

darwin-venv:  ## the separate darwin-py venv that judges our Darwin JSON files (its pins clash with ours)
	tests/tools/make_darwin_venv.sh

demo: install  ## sample media preannotated with builtin:nanodet (fetched once with npm; else CenterFace), previews drawn
	$(BIN)/preannotate demo --out demo-output

screenshots: install-dev  ## docs/ui-jobs.png, docs/ui-job.png: the job page in headless Chromium (apt: chromium chromium-driver)
	$(BIN)/python -m tests.tools.ui_screenshots --out docs

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

# Run ON a lent GPU machine (Python 3.12 image with torch and onnxruntime, no network), after
# tests/tools/gpu_wheels.sh here filled .whl/: the CUDA tests, then the GPU benchmarks with short settings
# (under 9 minutes together). New results land in benchmarks/results/, and in $OUT/results when OUT is set.
GPU_SITE ?= /tmp/site
GPU_PYTHON ?= python3
gpu-check:  ## CUDA tests + GPU benchmarks on a lent GPU (see benchmarks/README.md, GPU)
	$(GPU_PYTHON) -m pip install -q --upgrade --no-index --no-deps --no-compile --target $(GPU_SITE) .whl/*.whl
	@mkdir -p benchmarks/results && touch $(GPU_SITE)/.gpu-check-start
	export PYTHONPATH=$(GPU_SITE):. ; \
	if [ -f .gpu-models/nanodet.json ]; then PREANNOTATE_MODEL_DIR=/tmp/models $(GPU_PYTHON) -m service.cli models fetch nanodet --from-dir .gpu-models && export PREANNOTATE_TEST_NANODET_DIR=/tmp/models ; fi ; \
	$(GPU_PYTHON) -c "import onnxruntime as ort, torch; print('onnxruntime', ort.__version__, ort.get_available_providers()); print('torch', torch.__version__, 'cuda:', torch.cuda.is_available() and torch.cuda.get_device_name(0))" ; \
	timeout 240 $(GPU_PYTHON) -m pytest tests/gpu -q -p no:cacheprovider ; status=$$? ; \
	timeout 90 $(GPU_PYTHON) -m benchmarks.bench_feed --quick ; \
	timeout 90 $(GPU_PYTHON) -m benchmarks.bench_infer --frames 32 --repeats 2 ; \
	timeout 120 $(GPU_PYTHON) -m benchmarks.bench_e2e --duration 20 --repeats 1 ; \
	timeout 90 $(GPU_PYTHON) -m benchmarks.bench_serve --requests 32 ; \
	if [ -n "$$OUT" ]; then \
		mkdir -p "$$OUT/results" && find benchmarks/results -type f -newer $(GPU_SITE)/.gpu-check-start -exec cp {} "$$OUT/results/" \; ; \
	fi ; \
	exit $$status

clean:
	rm -rf demo-output .pytest_cache .mypy_cache .ruff_cache
