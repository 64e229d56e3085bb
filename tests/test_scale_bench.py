"""bench/scale_bench.py still runs: a 4 MB corpus, every measurement within its bound."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "scale_bench.py"
RESULTS = REPO / "bench" / "RESULTS.md"


def test_scale_bench_small_corpus_passes(tmp_path: Path) -> None:
    results_before = RESULTS.read_bytes() if RESULTS.exists() else None
    proc = subprocess.run([sys.executable, str(SCRIPT), "--mb", "4", "--no-write",
                           "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for label in ("encode (`encode_corpus`", "n-gram fit order 5", "train data path, 1 epoch"):
        row = next((line for line in out.splitlines() if line.startswith(f"| {label}")), None)
        assert row is not None, f"no row for {label}:\n{out}"
        assert row.rstrip().endswith("| PASS |"), row
        assert re.search(r"\| \d+\.\d+ s \| \d+\.\d ms \|", row), row  # time, time per MB
    assert "distinct order-5 windows" in out
    assert out.rstrip().endswith("Result: PASS")
    # --no-write leaves RESULTS.md alone; the corpus went to the workdir, not the repository
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == results_before
    assert (tmp_path / "work" / "corpus.txt").stat().st_size == 4_000_000
