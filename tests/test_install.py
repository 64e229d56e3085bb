"""`make setup` installs the torch build the machine can use: CUDA where nvidia-smi lists a
GPU, the CPU build elsewhere (a plain `pip install torch` pulls a multi-GB CUDA build)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def planned(tmp_path: Path, nvidia_smi: str | None, *args: str) -> str:
    """The commands `make setup` would run, with a stand-in nvidia-smi on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        tool = bindir / "nvidia-smi"
        tool.write_text("#!/bin/sh\n" + nvidia_smi + "\n")
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin"}
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}", *args],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return out.stdout


def torch_line(commands: str) -> str:
    return next(line for line in commands.splitlines() if "pip install -q torch" in line)


GPU = 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d2c3b6e)"'


def test_a_gpu_machine_gets_the_cuda_build(tmp_path: Path) -> None:
    commands = planned(tmp_path, GPU)
    assert torch_line(commands).endswith(
        "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
    # and the install fails loudly if that build cannot see the GPU
    assert "torch.cuda.is_available()" in commands


@pytest.mark.parametrize("nvidia_smi", [None, 'echo "No devices were found"; exit 6',
                                        "exit 9"], ids=["no-driver", "no-gpu", "broken"])
def test_other_machines_get_the_cpu_build(tmp_path: Path, nvidia_smi: str | None) -> None:
    commands = planned(tmp_path, nvidia_smi)
    assert torch_line(commands).endswith(
        "pip install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu")
    assert "torch.cuda" not in commands


def test_the_cuda_version_and_the_whole_line_can_be_chosen(tmp_path: Path) -> None:
    assert torch_line(planned(tmp_path, GPU, "CUDA_WHEELS=cu126")).endswith("/whl/cu126")
    assert torch_line(planned(tmp_path, None, "TORCH=torch==2.12.0")).endswith("torch==2.12.0")
