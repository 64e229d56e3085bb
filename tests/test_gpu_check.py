"""bench/gpu_check.py --smoke: every check of the GPU proof at toy size on the CPU, so the
script that a GPU session runs once is known to work before the GPU is at hand."""

from __future__ import annotations

import subprocess
import sys
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
