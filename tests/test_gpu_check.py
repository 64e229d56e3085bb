"""bench/gpu_check.py --smoke: every check of the GPU proof at toy size on the CPU, so the
script that a GPU session runs once is known to work before the GPU is at hand."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO


def test_gpu_check_smoke_runs_every_check(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nkept\n")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--smoke",
                           "--results", str(results)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for heading in ("1. CUDA tests", "2. dtypes read from the tensors", "3. host syncs",
                    "4. training throughput", "5. convergence", "6. sampling"):
        assert heading in out
    assert "skipped" in out  # the CUDA tests skip cleanly here
    # bf16 is bf16 in the recurrence, and fp16 never appears
    assert "| lstm | bf16 | bf16 | bf16 | fp32 | fp32 | no |" in out
    assert "| rnn | bf16 | bf16 | bf16 | fp32 | fp32 | no |" in out
    written = results.read_text()
    assert written.startswith("# Benchmark results\n\nkept\n")
    assert "<!-- gpu:begin -->\n## GPU check (bench/gpu_check.py) on " in written
    assert "| rnn3 | B8xT16 | bf16 |" in written
    # sampling: a rate measured over at least 0.2 s, or n/a; one character at a time through
    # a network cannot beat 10 million chars/s (it printed 49,000,000,000: issue 20)
    found = re.search(r"6\. sampling .*: (n/a \(too fast to time\)|[\d,]+) chars/s", out)
    assert found, out
    assert found.group(1).startswith("n/a") or 0 < int(found.group(1).replace(",", "")) < 1e7


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_rate_is_timed_above_the_noise_or_not_at_all() -> None:
    """gpu_check.rate repeats a run until 0.2 s have passed: a run that takes no time is
    n/a (None), never a huge number; a run of known least duration is below its bound."""
    rate = _gpu_check().rate
    assert rate(lambda: 50, max_reps=100) is None  # 100 no-ops: far below 0.2 s

    def ten_in_10ms() -> int:
        time.sleep(0.01)  # at least 10 ms: at most 1000 units/s
        return 10

    r = rate(ten_in_10ms, min_seconds=0.05)
    assert r is not None and 0 < r <= 1000
