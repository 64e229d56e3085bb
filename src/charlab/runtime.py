"""Where and how a run computes: the device, the precision of each part, torch threads.

Plain functions of their inputs (a device name, what the hardware offers), so tests can
ask what would happen on CUDA from a machine without a GPU. The device is chosen once, at
the edge (a stage or the CLI), and handed down.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

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


# --- precision -------------------------------------------------------------------------------
#
# Parameters, Adam's state, gradients of the parameters and the hidden state carried between
# chunks are float32 in every mode; a mode says what the recurrent layers and the output
# layer compute in. Why not torch.autocast: on CUDA its wrapper for cuDNN's RNN casts input,
# weights and hidden state to float16 whatever dtype autocast was asked for (and there is no
# GradScaler), so "bf16" trained the recurrence in unscaled fp16. Each part's dtype is
# explicit instead, and the network casts its operands itself, with autocast off.

PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class Hardware:
    """What a device offers, as plain data: tests describe a GPU on a machine without one."""

    device_type: str  # cpu, cuda, mps
    bf16: bool  # bfloat16 GEMMs run natively (GPUs from Ampere, CPUs with AMX/AVX512-BF16)
    tf32: bool  # TensorFloat-32 GEMMs (NVIDIA compute capability >= 8.0)
    name: str = ""  # e.g. "NVIDIA H100 80GB HBM3" or the CPU's model, for logs and reports


@dataclass(frozen=True)
class Precision:
    """The dtype each part of a network computes in; ``name`` is what the run records."""

    name: str  # fp32, tf32 or bf16
    recurrence: torch.dtype  # recurrent layers: their inputs, weights and outputs
    head: torch.dtype  # output layer: hidden state -> next-character logits
    tf32: bool  # float32 GEMMs (cuBLAS, cuDNN) may round their operands to TF32

    def parts(self) -> dict[str, str]:
        """Each part's dtype by name, for the training log and the checkpoint."""
        return {"recurrence": _dtype_name(self.recurrence), "head": _dtype_name(self.head),
                "fp32 GEMMs": "tf32" if self.tf32 else "fp32",
                "parameters, gradients, hidden state": "fp32"}


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


FP32 = Precision("fp32", torch.float32, torch.float32, tf32=False)
TF32 = Precision("tf32", torch.float32, torch.float32, tf32=True)
BF16 = Precision("bf16", torch.bfloat16, torch.bfloat16, tf32=False)


def hardware(device: torch.device) -> Hardware:
    """What ``device`` offers (the one place that asks the hardware)."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return Hardware("cuda", bf16=torch.cuda.is_bf16_supported(including_emulation=False),
                        tf32=major >= 8, name=torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return Hardware("cpu", bf16=_native_bf16_cpu(), tf32=False, name=_cpu_name())
    return Hardware(device.type, bf16=False, tf32=False, name=device.type)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def plan_precision(precision: str, hw: Hardware) -> Precision:
    """The dtypes a run with params ``precision`` computes in on ``hw``.

    - ``fp32``: float32 throughout, TF32 off (cuDNN's default would allow it).
    - ``tf32``: float32 storage and accumulation, GEMM operands rounded to TF32 on tensor
      cores; NVIDIA GPUs of compute capability 8.0 or newer only.
    - ``bf16``: the recurrent layers and the output layer in bfloat16 (on CUDA through
      cuDNN with explicitly cast weights, never autocast's fp16); on a CPU without native
      bf16 it is emulated and slow, but allowed.
    - ``auto``: on CUDA tf32 where the GPU has it, else fp32; on a CPU bf16 where it is
      native (its recurrence keeps float32 pre-activations and tanh, and it converges like
      fp32: bench/RESULTS.md), else fp32; elsewhere fp32. On CUDA auto does not pick bf16:
      cuDNN's bf16 recurrence also rounds the state it carries from step to step, which
      has not yet been shown to converge like fp32; ``bench/gpu_check.py`` measures both.
    """
    if precision == "auto":
        if hw.device_type == "cuda":
            return TF32 if hw.tf32 else FP32
        if hw.device_type == "cpu" and hw.bf16:
            return BF16
        return FP32
    if precision == "fp32":
        return FP32
    if precision == "tf32":
        if not hw.tf32:
            raise DeviceError(f"precision tf32 needs an NVIDIA GPU of compute capability 8.0 or "
                              f"newer, this run is on {hw.name or hw.device_type}; use fp32 or "
                              "auto")
        return TF32
    if precision == "bf16":
        if hw.device_type == "cuda" and not hw.bf16:
            raise DeviceError(f"precision bf16 is not supported by this GPU ({hw.name}); use "
                              "fp32 or auto")
        if hw.device_type not in ("cpu", "cuda"):
            raise DeviceError(f"precision bf16 runs on CPU or CUDA, not {hw.device_type}; use "
                              "fp32 or auto")
        return BF16
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or auto, "
                     f"got {precision!r}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The name of the mode :func:`plan_precision` picks for ``device``."""
    return plan_precision(precision, hardware(device)).name


@contextlib.contextmanager
def float32_gemms(p: Precision) -> Iterator[None]:
    """Let float32 GEMMs use TF32 exactly when ``p`` says so, for the duration."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = p.tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@dataclass(frozen=True)
class OpRecord:
    """One operator as it ran: its floating-point inputs' and outputs' dtypes and shapes."""

    op: str
    inputs: tuple[torch.dtype, ...]
    outputs: tuple[torch.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]  # of the outputs


@contextlib.contextmanager
def dtype_trace() -> Iterator[list[OpRecord]]:
    """Record every operator that runs (forward and backward) with the dtypes of the
    tensors it actually got and made: what a run computed in, read from the tensors, not
    from its config."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    def floats(obj: object) -> list[torch.Tensor]:
        return [t for t in tree_leaves(obj)
                if isinstance(t, torch.Tensor) and t.is_floating_point()]

    records: list[OpRecord] = []

    class _Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
            out = func(*args, **(kwargs or {}))
            made = floats(out)
            records.append(OpRecord(str(func.overloadpacket.__name__),
                                    tuple(t.dtype for t in floats((args, kwargs))),
                                    tuple(t.dtype for t in made),
                                    tuple(tuple(t.shape) for t in made)))
            return out

    with _Trace():
        yield records


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Collect a message for every operation that makes the host wait for the GPU, for the
    duration (CUDA's sync debug mode); on a machine without CUDA the list stays empty."""
    import warnings

    found: list[str] = []
    if not torch.cuda.is_available():
        yield found
        return
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(before)
    found.extend(str(w.message).splitlines()[0] for w in caught
                 if "synchroniz" in str(w.message))


class SyncWindow:
    """A training ``on_step`` hook that counts host syncs over steps ``first + 1 .. last``
    (:func:`count_host_syncs`); use it as a context manager around the run, so the sync
    debug mode is switched back off whatever happens."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self._ctx: contextlib.AbstractContextManager[list[str]] | None = None
        self.found: list[str] = []

    def __call__(self, step: int, model: object) -> None:
        if step == self.first:
            self._ctx = count_host_syncs()
            self.found = self._ctx.__enter__()
        elif step == self.last:
            self._close()

    def _close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def __enter__(self) -> SyncWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    @property
    def per_step(self) -> float:
        return len(self.found) / (self.last - self.first)
