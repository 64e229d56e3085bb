"""Benchmark: what the intervals stage and the report's verdict, seeds and budgets add to a
default `dvc repro`, on the outputs of a real default run.

Run from the repository root, on a workspace that holds a complete default run (every
output through the report, e.g. a copy of one):

    .venv/bin/python bench/verdict_cost_bench.py --workspace /path/to/run --baseline /work/main

Times, as whole processes the way `dvc repro` starts them (imports included), best of 3
interleaved rounds: this tree's `intervals` stage; this tree's `report` stage against the
baseline tree's (a checkout before issue 19: its report has no verdict, intervals or
budgets), both on the same workspace. The baseline's report writes into a scratch copy of
its outputs, so the workspace keeps this tree's. With ``--dvc``, also `dvc repro -s -f
intervals` in the workspace (DVC's own overhead for one more stage: hashing its deps,
updating dvc.lock), which needs this tree's dvc.yaml there.

Writes its report to the verdict-cost section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from results import update_section  # bench/ is the script's own folder

ROOT = Path(__file__).resolve().parents[1]


def stage_argv(tree: Path, stage: str, rename: dict[str, str] | None = None) -> list[str]:
    """The stage's command line as ``tree``'s dvc.yaml writes it, run with this Python;
    ``rename`` maps output paths to scratch ones."""
    cmd = yaml.safe_load((tree / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    argv = shlex.split(cmd)
    argv = [rename.get(a, a) for a in argv] if rename else argv
    return [sys.executable, str(tree / argv[1]), *argv[2:]]


def timed(argv: list[str], cwd: Path, src: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1")
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--baseline", type=Path, required=True,
                    help="a source tree before issue 19 (its stages/ and src/)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dvc", action="store_true", help="also time dvc repro -s -f intervals")
    ap.add_argument("--about", default="a complete default run",
                    help="what the workspace is, for the report")
    args = ap.parse_args()
    ws, base = args.workspace.resolve(), args.baseline.resolve()
    load = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="verdict-cost-"))
    # the baseline report's outputs go to scratch: the workspace keeps this tree's report
    rename = {"metrics/report.md": str(scratch / "report.md"),
              "metrics/figures": str(scratch / "figures")}
    runs: dict[str, list[float]] = {"intervals": [], "report": [], "report (baseline)": [],
                                    "dvc repro -s -f intervals": []}
    for _ in range(args.rounds):
        runs["intervals"].append(timed(stage_argv(ROOT, "intervals"), ws, ROOT / "src"))
        runs["report"].append(timed(stage_argv(ROOT, "report"), ws, ROOT / "src"))
        runs["report (baseline)"].append(timed(stage_argv(base, "report", rename), ws,
                                               base / "src"))
        if args.dvc:
            runs["dvc repro -s -f intervals"].append(timed(
                [str(Path(sys.executable).parent / "dvc"), "repro", "-s", "-f", "intervals"],
                ws, ROOT / "src"))
    shutil.rmtree(scratch)
    best = {k: min(v) for k, v in runs.items() if v}
    extra_report = best["report"] - best["report (baseline)"]
    added = best["intervals"] + extra_report
    dvc_line = ""
    if "dvc repro -s -f intervals" in best:
        overhead = best["dvc repro -s -f intervals"] - best["intervals"]
        added += overhead
        dvc_line = (f"| `dvc repro -s -f intervals` (the stage under DVC) | "
                    f"{best['dvc repro -s -f intervals']:.2f} s | DVC's own overhead "
                    f"{overhead:.2f} s at most (DVC's start included) |\n")
    text = f"""### What they add to a default `dvc repro` (bench/verdict_cost_bench.py)

Machine: {os.cpu_count()} CPU(s), {platform.machine()}, Python {platform.python_version()}; \
load average before the run {load:.2f}. Workspace: {args.about} (4 models, 55,769 test \
characters), one thread. Whole processes, imports included, best of \
{args.rounds} interleaved rounds.

| step | time | note |
|---|---:|---|
| `intervals` stage (read scores, 2 bootstraps, 4 files) | {best['intervals']:.2f} s | new |
| `report` stage of the baseline tree (no verdict, intervals or budgets) | \
{best['report (baseline)']:.2f} s | baseline |
| `report` stage, with verdict, intervals, budgets, figure | {best['report']:.2f} s | \
{best['report'] / best['report (baseline)']:.2f}x the baseline, +{extra_report:.2f} s |
{dvc_line}| **added to `dvc repro`** | **{added:.2f} s** | required: at most 10 s |
"""
    print(text)
    update_section("verdict-cost", text)


if __name__ == "__main__":
    main()
