#!/usr/bin/env bash
# Create (or reuse) the separate virtualenv that runs a real Label Studio for the integration tests.
# Label Studio must never go into the service venv: its pins (Django, numpy, pyarrow ...) and its second
# cv2 distribution (opencv-python-headless next to our opencv-python) break the service environment.
#
# Usage: tests/tools/make_ls_venv.sh [VENV_DIR]
#   VENV_DIR defaults to $PREANNOTATE_LS_VENV, else ~/.cache/preannotate-ci/ls-venv-$LS_VERSION.
# Prints the venv path on success. A finished venv is marked with .complete; an interrupted first install
# (no marker) is started over instead of being mistaken for a working one.
set -euo pipefail

LS_VERSION="${LS_VERSION:-1.23.2}"
cache="${PREANNOTATE_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preannotate-ci}"
venv="${1:-${PREANNOTATE_LS_VENV:-$cache/ls-venv-$LS_VERSION}}"
python="${LS_PYTHON:-python3}"

# Reuse a finished venv, but always run the install (a no-op when satisfied): never skip an install step.
if [[ ! -f "$venv/.complete" ]]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/pip" install -q "label-studio==$LS_VERSION"
# `label-studio version` prints and exits; `--version` would start a server.
"$venv/bin/label-studio" version >/dev/null 2>&1 || true
touch "$venv/.complete"
echo "$venv"
