"""bench/vocab_bench.py still runs: small vocabularies, every evaluate row within its bound."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "vocab_bench.py"
RESULTS = REPO / "bench" / "RESULTS.md"


def test_vocab_bench_small_run_passes() -> None:
    results_before = RESULTS.read_bytes() if RESULTS.exists() else None
    proc = subprocess.run([sys.executable, str(SCRIPT), "--chars", "6000", "--vocabs", "65,300",
                           "--speed-vocabs", "65,500"], capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for v in ("65", "300"):
        row = next((line for line in out.splitlines() if line.startswith(f"| {v} |")), None)
        assert row is not None, f"no row for V {v}:\n{out}"
        assert "| PASS |" in row, row
        assert re.search(r"\| \d+ MiB \|$", row), row  # the training peak
    assert re.search(r"V 500 is \d+\.\dx slower", out), out
    assert out.rstrip().endswith("Result: PASS")
    # sizes other than the defaults never touch RESULTS.md
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == results_before
