"""The linear-recurrence kernels of :mod:`charlab.families.scan`, forward + backward, in one
process: the plain loop through autograd (the baseline), Feng et al.'s log-space scan, and
the chunked scan (its sub-chunk length from ``best_chunk``, and ``c = T``: the plain loop
with the chunked kernel's hand-written backward), at the sizes the new families train at
(batch 128 x chunk 100 x width 512 and 1024 by default; ``--complex`` times the LRU's
complex64 recurrence, which has no log-space form).

Each kernel gets its inputs in its own form (log-space: ``log a``, ``log b``; the others
``a``, ``b``), all float32, ``h0`` nonzero, gradients to ``a`` and ``b`` (the trainer detaches
``h0``). Kernels are interleaved over ``--trials`` rounds (the machine may be shared); the
best time of each is reported, the median in brackets, and the ratio of each to the loop.

Usage: ``python bench/scan_bench.py [--widths 512 1024] [--threads 1] [--trials 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from charlab.families import scan


def _inputs(t: int, b: int, d: int, complex_: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if complex_:
        mag = 0.9 + 0.099 * torch.rand(1, 1, d, generator=g)
        a = torch.polar(mag, 0.3 * torch.rand(1, 1, d, generator=g))
        b_ = torch.complex(torch.randn(t, b, d, generator=g), torch.randn(t, b, d, generator=g))
        h0 = torch.complex(torch.randn(b, d, generator=g), torch.randn(b, d, generator=g))
        return {"a": a, "b": b_, "h0": h0}
    a = torch.sigmoid(torch.randn(t, b, d, generator=g))
    b_ = torch.rand(t, b, d, generator=g) + 0.1
    return {"a": a, "b": b_, "h0": torch.rand(b, d, generator=g),
            "log_a": a.log(), "log_b": b_.log()}


def _runner(kind: str, x: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One forward + backward of ``kind`` on fresh leaves of ``x``."""
    log = kind == "log"
    first, second = ("log_a", "log_b") if log else ("a", "b")
    w = torch.randn_like(x["b"])

    def run() -> None:
        p = x[first].detach().requires_grad_()
        q = x[second].detach().requires_grad_()
        if log:
            h = scan.log_scan(p, q, x["h0"])
        elif kind == "loop":
            h = scan.loop_scan(p, q, x["h0"])
        else:
            chunk = x["b"].shape[0] if kind == "chunked c=T" else None
            h = scan.chunked_scan(p, q, x["h0"], chunk)
        (h * w).real.sum().backward()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--complex", action="store_true", help="complex64 (the LRU's recurrence)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kinds = ["loop", "chunked", "chunked c=T"] + ([] if args.complex else ["log"])
    print(f"B {args.batch} x T {args.steps}, {'complex64' if args.complex else 'float32'}, "
          f"{torch.get_num_threads()} threads, chunk {scan.best_chunk(args.steps)}, "
          f"load {os.getloadavg()[0]:.2f}")
    for d in args.widths:
        x = _inputs(args.steps, args.batch, d, args.complex)
        runs = {k: _runner(k, x) for k in kinds}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for k in kinds:  # warm-up
            runs[k]()
        for _ in range(args.trials):
            for k in kinds:
                t0 = time.perf_counter()
                runs[k]()
                times[k].append(time.perf_counter() - t0)
        base = min(times["loop"])
        print(f"D {d}")
        for k in kinds:
            best, med = min(times[k]), statistics.median(times[k])
            print(f"  {k:12s} {best * 1e3:8.1f} ms ({med * 1e3:6.1f})   "
                  f"{base / best:5.2f}x the loop's speed")
        if "log" in times:
            print(f"  chunked / log-space speed ratio: "
                  f"{min(times['log']) / min(times['chunked']):.2f}x")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
