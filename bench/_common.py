"""Helpers the benchmarks share: peak-RSS measurement of one call, and fresh worker processes.

Memory is read from /proc/self/status (Linux): the peak resident set size (VmHWM), reset
right before the call through /proc/self/clear_refs, and a thread that samples RssAnon and
the file-backed RSS every 5 ms to split the peak into anonymous memory and mapped file
pages (sampled, so approximate; the VmHWM peak is exact).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

KIB, MIB = 1 << 10, 1 << 20


def status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * KIB
    return out


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


class Sampler(threading.Thread):
    """Peak anonymous and file-backed RSS, sampled every 5 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.anon = self.file = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        s = status()
        self.anon = max(self.anon, s["RssAnon"])
        self.file = max(self.file, s["RssFile"] + s.get("RssShmem", 0))

    def run(self) -> None:
        while not self._stop_event.wait(0.005):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def measure(call: Callable[[], Any], *, trace: bool = False) -> tuple[Any, dict[str, Any]]:
    """Run ``call`` once; return its result and its time and memory.

    ``seconds``; ``rss_before`` and ``peak`` (VmHWM, reset right before the call);
    ``anon_before`` / ``anon_peak`` and ``file_before`` / ``file_peak`` / ``file_after``
    (sampled); with ``trace``, ``traced_peak``: tracemalloc's exact peak (numpy registers
    its buffers with it; torch does not).
    """
    if trace:
        tracemalloc.start()
    sampler = Sampler()
    before = status()
    reset_peak()
    sampler.start()
    t = time.perf_counter()
    out = call()
    res: dict[str, Any] = {"seconds": time.perf_counter() - t}
    sampler.stop()
    if trace:
        res["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    after = status()
    res.update(rss_before=before["VmRSS"], peak=after["VmHWM"],
               anon_before=before["RssAnon"], anon_peak=sampler.anon,
               file_before=before["RssFile"] + before.get("RssShmem", 0),
               file_peak=sampler.file, file_after=after["RssFile"] + after.get("RssShmem", 0))
    return out, res


def run_worker(argv: list[str], what: str) -> dict:
    """Run ``python argv...`` in a fresh interpreter; its last stdout line is a JSON dict."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"worker {what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_once(cfg: Any, corpus: Any, workdir: Any, name: str = "bench", **plan_kw: Any) -> Any:
    """The real trainer on ``corpus``: the plan as a stage builds it, then the loop; files
    in ``workdir``. ``plan_kw``: make_plan's keywords (``on_step``, ``progress``...)."""
    from pathlib import Path

    from charlab.training.loop import train
    from charlab.training.plan import make_plan, run_paths

    workdir = Path(workdir)
    plan = make_plan(cfg, f"train.{name}", run_paths(workdir / f"{name}.pt",
                                                    workdir / f"{name}.csv"),
                     train_chars=len(corpus.split("train")), **{"progress": False, **plan_kw})
    return train(plan, corpus)
