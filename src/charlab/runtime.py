"""Where and how a run computes: the device, the precision of each part, torch threads.

Plain functions of their inputs (a device name, what the hardware offers), so tests can
ask what would happen on CUDA from a machine without a GPU. The device is chosen once, at
the edge (a stage or the CLI), and handed down.
"""

from __future__ import annotations

import os

import torch

from charlab.errors import CharlabError


class DeviceError(CharlabError):
    """The requested device does not exist on this machine."""



def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA, else MPS, else CPU. A named device that is absent is an error."""
    name = str(name)
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available on this "
                          "machine (no GPU, or a CPU-only torch build); use device: auto or cpu")
    if kind == "mps" and not has_mps:
        raise DeviceError(f"device {name!r} requested but Apple MPS is not available; "
                          "use device: auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {name!r}: {e}") from None


def cpu_threads(threads: int = 0) -> int:
    """Torch threads for ``threads`` params value: 0 = ``OMP_NUM_THREADS`` where set (the
    usual way to share cores among parallel jobs: queued experiments, torchrun ranks), else
    every core this process may run on."""
    if threads:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _native_bf16_cpu() -> bool:
    try:  # private helpers; absent in some torch builds
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where the device computes it natively (fast), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    if device.type == "cpu":
        return "bf16" if _native_bf16_cpu() else "fp32"
    return "fp32"

