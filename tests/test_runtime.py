"""charlab.runtime: the device, precision and thread policy, as plain functions of what the
hardware offers, so the CUDA decisions are tested on a machine without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_params
from helpers import ENCODED, train_entry

from charlab.encoding import Corpus
from charlab.params.core import ParamsError
from charlab.runtime import (
    BF16,
    FP32,
    TF32,
    DeviceError,
    Hardware,
    dtype_trace,
    float32_gemms,
    hardware,
    plan_precision,
    resolve_device,
    resolve_precision,
)

H100 = Hardware("cuda", bf16=True, tf32=True, name="NVIDIA H100 80GB HBM3")
V100 = Hardware("cuda", bf16=False, tf32=False, name="Tesla V100-SXM2-16GB")
AMX_CPU = Hardware("cpu", bf16=True, tf32=False, name="Intel Xeon (AMX)")
OLD_CPU = Hardware("cpu", bf16=False, tf32=False, name="an old CPU")
MPS = Hardware("mps", bf16=False, tf32=False, name="mps")


@pytest.mark.parametrize("precision,hw,expected", [
    # auto on CUDA: TF32 where the GPU has it (fp32 accumulation and carried state), not bf16
    ("auto", H100, TF32), ("auto", V100, FP32),
    ("auto", AMX_CPU, BF16), ("auto", OLD_CPU, FP32), ("auto", MPS, FP32),
    ("fp32", H100, FP32), ("fp32", AMX_CPU, FP32), ("fp32", MPS, FP32),
    ("tf32", H100, TF32),
    ("bf16", H100, BF16), ("bf16", AMX_CPU, BF16),
    ("bf16", OLD_CPU, BF16),  # emulated on such a CPU: slow, but what was asked for
])
def test_plan_precision(precision: str, hw: Hardware, expected) -> None:
    assert plan_precision(precision, hw) == expected


def test_each_mode_names_the_dtype_of_every_part() -> None:
    # bf16 is bf16 in the recurrence too (autocast would have made cuDNN's RNN fp16)
    assert (BF16.recurrence, BF16.head, BF16.tf32) == (torch.bfloat16, torch.bfloat16, False)
    assert (TF32.recurrence, TF32.head, TF32.tf32) == (torch.float32, torch.float32, True)
    assert (FP32.recurrence, FP32.head, FP32.tf32) == (torch.float32, torch.float32, False)
    assert BF16.parts() == {"recurrence": "bf16", "head": "bf16", "fp32 GEMMs": "fp32",
                            "parameters, gradients, hidden state": "fp32"}
    assert TF32.parts()["fp32 GEMMs"] == "tf32"


@pytest.mark.parametrize("precision,hw,message", [
    ("tf32", AMX_CPU, "precision tf32 needs an NVIDIA GPU of compute capability 8.0"),
    ("tf32", V100, "precision tf32 needs an NVIDIA GPU"),
    ("bf16", V100, "precision bf16 is not supported by this GPU (Tesla V100"),
    ("bf16", MPS, "precision bf16 runs on CPU or CUDA, not mps"),
])
def test_precision_the_hardware_lacks_is_an_error(precision: str, hw: Hardware,
                                                  message: str) -> None:
    with pytest.raises(DeviceError, match=message.replace("(", r"\(")):
        plan_precision(precision, hw)


def test_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16 or auto"):
        plan_precision("fp16", H100)


def test_this_cpu() -> None:
    hw = hardware(torch.device("cpu"))
    assert hw.device_type == "cpu" and not hw.tf32 and hw.name
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if hw.bf16 else "fp32")


@pytest.mark.parametrize("mode", [FP32, TF32])
def test_float32_gemms_sets_and_restores_tf32(mode) -> None:
    # cuDNN allows TF32 by default: fp32 must switch it off to mean fp32
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with float32_gemms(mode):
        assert torch.backends.cuda.matmul.allow_tf32 is mode.tf32
        assert torch.backends.cudnn.allow_tf32 is mode.tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_dtype_trace_reads_the_tensors() -> None:
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(3, 2)
    with dtype_trace() as ops:
        (a.to(torch.bfloat16) @ b.to(torch.bfloat16)).float().sum().backward()
    mms = [r for r in ops if r.op == "mm"]
    assert mms and mms[0].inputs == (torch.bfloat16, torch.bfloat16)
    assert mms[0].outputs == (torch.bfloat16,) and mms[0].shapes == ((4, 2),)
    assert a.grad.dtype == torch.float32


# --- no GPU: `cuda` is an error, `auto` falls back

def test_cuda_without_gpu_is_an_error_and_auto_falls_back(pipeline_built: Path, tmp_path: Path,
                                                          no_gpu) -> None:
    with pytest.raises(DeviceError, match=r"^device 'cuda' requested but CUDA is not available "
                                          r"on this machine \(no GPU, or a CPU-only torch "
                                          r"build\); use device: auto or cpu$"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="Apple MPS is not available"):
        resolve_device("mps")
    assert resolve_device("auto") == torch.device("cpu")
    corpus = Corpus.load(*(pipeline_built / p for p in ENCODED))
    res = train_entry(tiny_params(device="auto", max_steps=2), corpus,
                      checkpoint_path=tmp_path / "m.pt", curve_path=tmp_path / "m.csv", name="m",
                      progress=False)
    assert res.device == "cpu"
    with pytest.raises(ParamsError, match=r"^train\.c\.device: device 'cuda' requested but "
                                          "CUDA is not available"):
        train_entry(tiny_params(device="cuda"), corpus, checkpoint_path=tmp_path / "c.pt",
                    curve_path=tmp_path / "c.csv", name="c", progress=False)
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "c.csv").exists()


def test_sync_window_counts_between_its_steps_and_closes() -> None:
    from charlab.runtime import SyncWindow

    with SyncWindow(2, 6) as w:
        for step in range(1, 9):
            w(step, None)
    assert w.found == [] and w.per_step == 0  # no CUDA here: nothing syncs
    with SyncWindow(2, 50) as open_window:  # the run stops before step 50: closed on exit
        open_window(2, None)
    assert open_window._ctx is None
