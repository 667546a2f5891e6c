"""Run a script with label-studio-sdk in Label Studio's own venv (label_studio.md §1: never in the service venv).

The script reads JSON from stdin and prints JSON; tests skip without the venv, as the real-server tests do.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.integration.label_studio import ls_venv, require_label_studio


def run_ls_sdk(script: str, payload: Any, *, timeout_s: float = 120.0) -> Any:
    """``script``'s JSON output for ``payload`` (JSON on its stdin), run by the LS venv's python."""
    require_label_studio()
    done = subprocess.run(
        [str(ls_venv() / "bin" / "python"), "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


VALIDATE = """
import json, sys
from label_studio_sdk.label_interface import LabelInterface
cases = json.load(sys.stdin)
print(json.dumps([LabelInterface(c["config"]).validate_prediction(c["prediction"], return_errors=True) for c in cases]))
"""
"""Validate ``[{"config", "prediction"}, ...]``: a list of error lists (empty: valid)."""

BRUSH = """
import json, sys
import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle
out = []
for case in json.load(sys.stdin):
    mask = np.asarray(case["mask"], np.uint8)
    alpha = decode_rle(case["rle"]).reshape(*mask.shape, 4)[..., 3]
    out.append({"encoded": mask2rle(mask * 255), "alpha": (alpha > 0).astype(int).tolist()})
print(json.dumps(out))
"""
"""For ``[{"mask", "rle"}, ...]``: the converter's own ``mask2rle`` of each mask and its ``decode_rle`` of ``rle``."""
