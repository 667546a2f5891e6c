#!/usr/bin/env bash
# Create (or reuse) the separate virtualenv with darwin-py, the judge of our Darwin JSON 2.0 files.
# darwin-py never goes into the service venv: its pins clash with ours (rich<14 against import-linter's).
#
# Usage: tests/tools/make_darwin_venv.sh [VENV_DIR]
#   VENV_DIR defaults to $PREANNOTATE_DARWIN_VENV, else ~/.cache/preannotate-ci/darwin-venv-$DARWIN_PY_VERSION.
# Prints the venv path on success. A finished venv is marked with .complete; an interrupted first install
# (no marker) is started over instead of being mistaken for a working one.
set -euo pipefail

DARWIN_PY_VERSION="${DARWIN_PY_VERSION:-3.6.3}"
cache="${PREANNOTATE_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preannotate-ci}"
venv="${1:-${PREANNOTATE_DARWIN_VENV:-$cache/darwin-venv-$DARWIN_PY_VERSION}}"
python="${DARWIN_PYTHON:-python3}"

# Reuse a finished venv, but always run the install (a no-op when satisfied): never skip an install step.
if [[ ! -f "$venv/.complete" ]]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/pip" install -q "darwin-py==$DARWIN_PY_VERSION"
"$venv/bin/python" -c "import darwin.importer.formats.darwin, darwin.utils" >/dev/null
touch "$venv/.complete"
echo "$venv"
