"""``models`` stays a pure inference package: no service/web imports, torch only where it is needed."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

MODELS_DIR = Path(__file__).resolve().parents[3] / "models"
FORBIDDEN = ("service", "fastapi", "pydantic_settings", "starlette")
HEAVY = ("torch", "transformers", "torchcodec")  # torchcodec imports torch
# The only modules allowed to import torch/transformers/torchcodec, and only inside functions or TYPE_CHECKING.
HEAVY_ALLOWED = {
    "detectors/hf_transformers.py",
    "detectors/hf_zero_shot.py",
    "detectors/hf_checkpoint.py",
    "detectors/hf_instance_segmentation.py",
    "segmenters/hf_sam.py",
    "runtimes/torch.py",
    "runtimes/torch_preprocess.py",
    "video_decode.py",
}


def _imports(tree: ast.AST) -> Iterator[tuple[ast.stmt, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module


def _top(module: str) -> str:
    return module.split(".")[0]


def _module_level_imports(node: ast.AST) -> Iterator[str]:
    """Imports executed at import time: not inside functions or ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            continue
        if isinstance(child, ast.Import):
            yield from (alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
            yield child.module
        else:
            yield from _module_level_imports(child)


SOURCES = sorted(MODELS_DIR.rglob("*.py"))


def test_sources_found() -> None:
    assert len(SOURCES) > 10


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(MODELS_DIR)))
def test_no_service_or_web_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [name for _, name in _imports(tree) if _top(name) in FORBIDDEN]
    assert not bad, f"{path} imports {bad}; models/ must not depend on the service layer"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(MODELS_DIR)))
def test_torch_only_lazily_and_only_in_the_hf_modules(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative = path.relative_to(MODELS_DIR).as_posix()
    if relative in HEAVY_ALLOWED:
        eager = [name for name in _module_level_imports(tree) if _top(name) in HEAVY]
        assert not eager, f"{path} imports {eager} at module level; import inside functions"
    else:
        used = [name for _, name in _imports(tree) if _top(name) in HEAVY]
        assert not used, f"{path} imports {used}; only {sorted(HEAVY_ALLOWED)} may"


def test_importing_the_onnx_side_leaves_torch_unloaded() -> None:
    code = (
        "import sys\n"
        "import models.registry, models.detectors.onnx_auto, models.detectors.centerface_onnx\n"
        "import models.detectors.hf_transformers, models.video_decode\n"
        "print(sorted(m for m in ('torch', 'transformers', 'torchcodec') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=MODELS_DIR.parent, timeout=120
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
