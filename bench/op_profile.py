"""Where a training step's time goes, per family: torch's profiler over a few real training
steps of each comparison entry (bench/train_throughput.py's FAMILY_ENTRIES and rnn3), the
CPU time grouped into matrix products, the recurrence's own kernels, element-wise work and
the rest.

Why: at equal FLOPs (which count only the matrix products) and at equal wall time the
families can rank differently; this says which operations make the difference on this CPU.
Every family runs in the same process, one after the other, the same number of steps.

Usage: ``python bench/op_profile.py [--steps 6] [--precision auto]``; copy the table into
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import train_once
from torch.profiler import ProfilerActivity, profile
from train_throughput import FAMILY_ENTRIES, VOCAB

from charlab.encoding import Corpus, encode_corpus
from charlab.params.training import parse_entry

# matrix products (what the FLOP count counts); aten's fused LSTM/GRU layer is mostly its GEMMs
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
          "aten::linear", "aten::_scaled_dot_product", "aten::mkldnn_rnn_layer")
# the recurrence over time: charlab's scan and Elman BPTT, torch's RNN layers
RECURRENCE = ("ChunkedScan", "ElmanRecurrence", "aten::lstm", "aten::gru", "aten::rnn_tanh",
              "MkldnnRnnLayer", "aten::mkldnn_rnn_layer")
COPY = ("aten::copy_", "aten::to", "aten::_to_copy", "aten::cat", "aten::stack",
        "aten::contiguous", "aten::clone", "aten::index", "aten::embedding")


def kinds(ev) -> tuple[str, bool]:
    """(what the op is, whether it runs inside the recurrence over time)."""
    name, q, inside = ev.name, ev, False
    while q is not None:
        inside = inside or any(r in q.name for r in RECURRENCE)
        q = q.cpu_parent
    if name.startswith(MATMUL):
        return "matrix products", inside
    if name.startswith(COPY):
        return "copies and casts", inside
    return "element-wise and other", inside


def profile_entry(cfg, corpus: Corpus, workdir: Path, steps: int) -> dict[str, float]:
    """Self CPU time (s) per kind over ``steps`` training steps, after 2 warm-up steps."""
    holder: dict[str, profile] = {}

    def hook(k: int, model: torch.nn.Module) -> None:
        if k == 2:
            holder["p"] = profile(activities=[ProfilerActivity.CPU])
            holder["p"].__enter__()
        elif k == steps + 2:
            holder["p"].__exit__(None, None, None)

    run = dataclasses.replace(cfg, max_steps=steps + 2, eval_every=10**6, warmup_steps=0)
    train_once(run, corpus, workdir, on_step=hook)
    out: dict[str, float] = collections.defaultdict(float)
    for ev in holder["p"].events():
        what, inside = kinds(ev)
        out[what] += ev.self_cpu_time_total / 1e6
        if inside:
            out["inside the recurrence"] += ev.self_cpu_time_total / 1e6
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    threads = len(os.sched_getaffinity(0))
    entries = {"rnn3": {"cell": "rnn", "layers": 3, "hidden_size": 512, "batch_size": 128},
               **FAMILY_ENTRIES}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz .,\n" + "ABCDEFGHIJKLMN"
                                       "OPQRSTUVWXYZ;:!?'-&$3"), 300_000))
        (work / "c.txt").write_text(text, encoding="utf-8")
        encode_corpus(work / "c.txt", work / "v.json", work / "t.bin", work / "s.json",
                      val_fraction=0.01, test_fraction=0.01)
        corpus = Corpus.load(work / "v.json", work / "t.bin", work / "s.json")
        assert corpus.vocab.size <= VOCAB
        rows = {}
        for name, entry in entries.items():
            cfg = parse_entry({**entry, "device": "cpu", "threads": threads,
                               "precision": args.precision}, f"train.{name}")
            rows[name] = profile_entry(cfg, corpus, work, args.steps)
    columns = ["matrix products", "element-wise and other", "copies and casts"]
    print(f"# {platform.machine()}, {threads} threads, torch {torch.__version__}, precision "
          f"{args.precision}; self CPU time of {args.steps} training steps (profiler), "
          f"load average {os.getloadavg()[0]:.2f}")
    print("\n| family | " + " | ".join(columns) + " | of which inside the recurrence | "
          "total s |\n|---|" + "---:|" * 5)
    for name, got in rows.items():
        total = sum(got.get(k, 0.0) for k in columns)
        print(f"| {name} | " + " | ".join(f"{got.get(k, 0.0) / total:.0%}" for k in columns)
              + f" | {got.get('inside the recurrence', 0.0) / total:.0%} | {total:.2f} |")


if __name__ == "__main__":
    main()
