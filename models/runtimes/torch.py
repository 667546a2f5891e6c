"""PyTorch runtime helpers: optional-dependency checks, device choice, threads and host->device copies.

torch is imported inside the functions, never at module import, so ``models`` stays importable
(and cheap) without the ``hf`` extra.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import TYPE_CHECKING

from models.errors import DeviceUnavailableError, MissingDependencyError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HF_EXTRA_HINT = "pip install 'preannotate[hf]' (install the torch build you want first)"


def require(module: str, *, needed_for: str) -> ModuleType:
    """Import an optional dependency, or raise MissingDependencyError with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{needed_for} needs the '{module}' package: {HF_EXTRA_HINT}") from exc


def resolve_torch_device(requested: str) -> str:
    """Map ``auto|cpu|cuda`` to the device torch will really use.

    Raises:
        DeviceUnavailableError: ``cuda`` was asked for but torch sees no CUDA device.
    """
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceUnavailableError(
            f"device 'cuda' requested but torch {torch.__version__} sees no CUDA device "
            "(install a CUDA build of torch, check the driver / CUDA_VISIBLE_DEVICES, or use device=cpu)"
        )
    return "cpu"


def configure_cpu_threads(num_threads: int | None) -> None:
    """Pin torch's intra-op threads (process-wide) when a count is given."""
    import torch

    if num_threads is not None:
        torch.set_num_threads(num_threads)
        log.info("torch CPU threads set to %d", num_threads)


def torch_device_for(spec: str, *, device: str, num_threads: int | None) -> str:
    """What every torch model does first: torch present (MissingDependencyError naming ``spec``), the device
    resolved (``resolve_torch_device``), and on CPU its thread count set. Returns ``cpu`` or ``cuda``."""
    require("torch", needed_for=spec)
    resolved = resolve_torch_device(device)
    if resolved == "cpu":
        configure_cpu_threads(num_threads)
    return resolved


def autocast_dtype(device: str, half: bool) -> torch.dtype | None:
    """The dtype to autocast to: None on CPU or when half precision is off; on CUDA bfloat16 where the GPU
    has it (fp16's range overflows in some large ViTs), else float16."""
    import torch

    if device != "cuda" or not half:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_device(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """Move a host tensor to ``device``.

    On CUDA the host copy is pinned so the transfer is asynchronous (``non_blocking``); the
    forward pass queued after it on the same stream still waits for it.
    """
    if device == "cpu":
        return tensor
    return tensor.pin_memory().to(device=device, non_blocking=True)
