"""darwin-py's own parser, the judge of our Darwin JSON 2.0 files, run from its separate venv.

darwin-py never goes into the service venv (its rich<14 pin clashes with ours): ``tests/tools/make_darwin_venv.sh``
creates a venv at ``$PREANNOTATE_DARWIN_VENV`` or ``~/.cache/preannotate-ci/darwin-venv-<version>``, and the
tests run ``_PARSE`` there in a subprocess. Without it they skip, unless ``PREANNOTATE_REQUIRE_DARWIN`` is set
(CI), where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.label_studio import ci_cache_dir

DARWIN_PY_VERSION = "3.6.3"

# Parses each file with parse_path (the importer's entry) and parse_darwin_json, and prints what darwin-py made of
# every annotation: its class and type, and per video frame the frame's type and data.
_PARSE = r"""
import json, sys
from pathlib import Path
from darwin.importer.formats.darwin import parse_path
from darwin.utils import parse_darwin_json
import darwin.datatypes as dt

def annotation(a):
    out = {"id": a.id, "name": a.annotation_class.name, "type": a.annotation_class.annotation_type,
           "slot_names": a.slot_names}
    if isinstance(a, dt.VideoAnnotation):
        out["frames"] = {str(f): {"type": v.annotation_class.annotation_type, "data": v.data}
                         for f, v in a.frames.items()}
        out["keyframes"] = {str(f): k for f, k in a.keyframes.items()}
        out["segments"] = a.segments
    else:
        out["data"] = a.data
    return out

files = []
for name in sys.argv[1:]:
    parsed = parse_path(Path(name))
    again = parse_darwin_json(Path(name), 0)
    assert parsed is not None and again is not None, name
    files.append({"is_video": parsed.is_video, "slots": [s.name for s in parsed.slots],
                  "annotations": [None if a is None else annotation(a) for a in parsed.annotations],
                  "same": len(parsed.annotations) == len(again.annotations)})
print(json.dumps(files, default=str))
"""


def darwin_venv() -> Path:
    return Path(os.environ.get("PREANNOTATE_DARWIN_VENV") or ci_cache_dir() / f"darwin-venv-{DARWIN_PY_VERSION}")


def require_darwin_py() -> Path:
    """The darwin-py venv's python; skips (or fails under PREANNOTATE_REQUIRE_DARWIN) without it."""
    python = darwin_venv() / "bin" / "python"
    if not (python.exists() and (darwin_venv() / ".complete").exists()):
        reason = (
            f"darwin-py venv not found at {darwin_venv()}: create it with tests/tools/make_darwin_venv.sh "
            "(or point PREANNOTATE_DARWIN_VENV at one)"
        )
        if os.environ.get("PREANNOTATE_REQUIRE_DARWIN"):
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def darwin_py_parse(paths: list[Path]) -> list[dict[str, Any]]:
    """What darwin-py's parser makes of each file: ``{"is_video", "slots", "annotations": [...], "same"}``."""
    python = require_darwin_py()
    done = subprocess.run(
        [str(python), "-c", _PARSE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # its own packages, not ours
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unsupported annotation type" not in done.stdout + done.stderr
    parsed: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed
