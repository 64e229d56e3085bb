"""Training throughput (characters/s, forward + backward + optimiser step), in one process.

- ``lecture``: the lecture's own loop, the reference: its RNN3 (``nn.RNN(V, 512, 3)``,
  dropout 0.1, ``Linear``, ``LogSoftmax``) called one time step at a time on one-hot input,
  batch 1, sequence 25, ``NLLLoss``, Adam.
- charlab's trainer (:func:`charlab.training.loop.train`, the real loop) on the same 3 x 512
  model in fp32 and bf16, and on the 1-layer 512 model, at the batch/sequence sizes of params.yaml's
  ``rnn3`` / ``rnn`` entries, timed from its per-step hook after two warm-up steps.
- the same trainer on the families beyond the lecture at about rnn3's parameter count
  (~1.4M, as in the CPU comparison of bench/RESULTS.md): a 3 x 256 LSTM, a 3 x 192 GPT
  (6 heads, context 128), and minGRU, minLSTM and the LRU at their default sizes, all at
  12,800 characters per step;
- the FLOP ceiling: 6 x the forward multiply-adds per character (each family's own count,
  :meth:`charlab.families.base.Family.forward_macs`: the matrix products only) at the GEMM
  rate measured here.

The machine may be shared: runs are interleaved over ``--trials`` rounds and the best of
each is reported (the median in brackets), with the load average before and after.

Usage: ``python bench/train_throughput.py [--params params.yaml] [--seconds 6]``; copy the
printed table into the training section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import train_once
from torch import nn

from charlab.encoding import Corpus, encode_corpus
from charlab.io import read_yaml
from charlab.params.training import TrainParams, parse_entry

VOCAB = 65  # tiny shakespeare's


class LectureRNN3(nn.Module):
    """The lecture's RNN3, as written there (sequence-first, one step per call)."""

    def __init__(self, input_size: int = VOCAB, hidden_size: int = 512,
                 output_size: int = VOCAB, n_layers: int = 3) -> None:
        super().__init__()
        self.hidden_size, self.n_layers = hidden_size, n_layers
        self.rnn = nn.RNN(input_size, hidden_size, n_layers, dropout=0.1)
        self.fc = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=2)

    def forward(self, input: torch.Tensor) -> list[torch.Tensor]:
        hidden = torch.zeros(self.n_layers, input.size(1), self.hidden_size)
        outputs = []
        for i in range(input.size(0)):
            output, hidden = self.rnn(input[i:i + 1], hidden)
            outputs.append(self.softmax(self.fc(output)))
        return outputs


def lecture_loop(seconds: float, seq_length: int = 25) -> float:
    torch.manual_seed(0)
    model = LectureRNN3()
    loss_fun = nn.NLLLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    data = torch.randint(0, VOCAB, (100_000,))
    p, chars, start = 0, 0, None
    while True:
        chunk = data[p:p + seq_length + 1]
        inp = torch.nn.functional.one_hot(chunk[:-1], VOCAB).float().unsqueeze(1)  # [25, 1, V]
        target = chunk[1:].unsqueeze(-1)
        outputs = model(inp)
        loss = sum(loss_fun(out[0], target[i]) for i, out in enumerate(outputs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        p = (p + seq_length) % (len(data) - seq_length - 1)
        if start is None:  # the first iteration is warm-up
            start = time.perf_counter()
            continue
        chars += seq_length
        if time.perf_counter() - start >= seconds:
            return chars / (time.perf_counter() - start)


def gemm_gflops(dtype: torch.dtype, rows: int, seconds: float = 2.0) -> float:
    """Rate of the training step's big GEMMs: (rows x 512) @ (512 x 512)."""
    a = torch.randn(rows, 512).to(dtype)
    w = torch.randn(512, 512).to(dtype)
    for _ in range(3):
        a @ w
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ w
        n += 1
    return 2 * rows * 512 * 512 * n / (time.perf_counter() - start) / 1e9


def trainer(cfg: TrainParams, corpus: Corpus, workdir: Path, steps: int) -> float:
    """chars/s of ``steps`` steps of the real train() loop, after 2 warm-up steps."""
    stamps: list[float] = []
    run = dataclasses.replace(cfg, max_steps=steps + 2, eval_every=steps + 2,
                              lr_schedule="constant", warmup_steps=0)
    train_once(run, corpus, workdir, on_step=lambda k, m: stamps.append(time.perf_counter()))
    return steps * cfg.batch_size * cfg.seq_length / (stamps[-1] - stamps[1])


# the comparison's entries beyond the lecture, at about rnn3's 1.4M parameters
FAMILY_ENTRIES = {
    "lstm3": {"cell": "lstm", "layers": 3, "hidden_size": 256, "batch_size": 128},
    "gpt": {"cell": "gpt", "layers": 3, "heads": 6, "hidden_size": 192, "context": 128,
            "batch_size": 100},
    "mingru": {"cell": "mingru", "batch_size": 128},
    "minlstm": {"cell": "minlstm", "batch_size": 128},
    "lru": {"cell": "lru", "batch_size": 128},
}


def defaults(params_path: Path, families: bool) -> dict[str, TrainParams]:
    entries: dict = {}
    if params_path.is_file():
        entries = dict((read_yaml(params_path) or {}).get("train") or {})
    rnn3 = entries.get("rnn3", {"layers": 3, "hidden_size": 512})
    rnn = entries.get("rnn", {"layers": 1, "hidden_size": 512})
    out = {"rnn3": parse_entry(rnn3, "train.rnn3"), "rnn": parse_entry(rnn, "train.rnn")}
    if families:
        out |= {k: parse_entry(e, f"train.{k}") for k, e in FAMILY_ENTRIES.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seconds", type=float, default=6.0, help="per trial")
    ap.add_argument("--trials", type=int, default=3,
                    help="trials per run, interleaved; the best is reported (shared machines)")
    ap.add_argument("--threads", type=int, default=0, help="0: every core")
    ap.add_argument("--lecture-only", action="store_true",
                    help="only rnn3 and rnn, not the other families")
    args = ap.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]

    runs: dict[str, tuple[TrainParams, int, int]] = {}  # config, params, forward MACs/char
    for name, cfg in defaults(args.params, not args.lecture_only).items():
        for precision in ("fp32", "bf16"):
            c = dataclasses.replace(cfg, precision=precision, device="cpu", threads=threads)
            config = c.network_config(VOCAB)
            runs[f"{name} {precision}"] = (c, c.family.build(config).num_params(),
                                           c.family.forward_macs(config))
    samples: dict[str, list[float]] = {"lecture": []}
    samples.update({k: [] for k in runs})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 " .,;:!?'-&$3\n"))
        assert len(alphabet) == VOCAB
        (work / "c.txt").write_text("".join(rng.choice(alphabet, 400_000)), encoding="utf-8")
        encode_corpus(work / "c.txt", work / "v.json", work / "t.bin", work / "s.json",
                      val_fraction=0.01, test_fraction=0.01)
        corpus = Corpus.load(work / "v.json", work / "t.bin", work / "s.json")
        steps: dict[str, int] = {}
        for _ in range(args.trials):
            samples["lecture"].append(lecture_loop(args.seconds))
            for key, (c, _, _) in runs.items():
                if key not in steps:  # size the trial from a short probe
                    rate = trainer(c, corpus, work, 3)
                    steps[key] = max(3, int(args.seconds * rate / (c.batch_size * c.seq_length)))
                samples[key].append(trainer(c, corpus, work, steps[key]))
        rates = {"fp32": gemm_gflops(torch.float32, 12800),
                 "bf16": gemm_gflops(torch.bfloat16, 12800)}

    best = {k: max(v) for k, v in samples.items()}
    base = best["lecture"]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{threads} threads, device cpu; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; best of {args.trials} interleaved trials "
          f"of ~{args.seconds:.0f} s (median in brackets)")
    print("\n| run | chars/s | x lecture | of FLOP ceiling |\n|---|---:|---:|---:|")
    print(f"| lecture loop: 3x512 nn.RNN, one step per call, B1 T25, fp32 | {base:,.0f} "
          f"({statistics.median(samples['lecture']):,.0f}) | 1.0 | |")
    for key, (c, _, macs) in runs.items():
        precision = c.precision
        peak = rates[precision] * 1e9 / (6 * macs)
        cps = best[key]
        print(f"| charlab {key.split()[0]}: {c.net.layers}x{c.net.hidden_size} {c.cell}, "
              f"B{c.batch_size} T{c.seq_length}, {precision} | {cps:,.0f} "
              f"({statistics.median(samples[key]):,.0f}) | {cps / base:.1f} | "
              f"{cps / peak:.2f} of {peak:,.0f} |")
    print(f"\nGEMM rate here ((12800 x 512) @ (512 x 512)): fp32 {rates['fp32']:.0f} GFLOP/s, "
          f"bf16 {rates['bf16']:.0f} GFLOP/s; FLOP ceiling = rate / (6 x forward "
          "multiply-adds per character) chars/s; params (multiply-adds): " + ", ".join(
              f"{k.split()[0]} {n:,} ({m:,})" for k, (_, n, m) in runs.items()
              if k.endswith("fp32")))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
