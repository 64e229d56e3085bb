"""One command that proves the GPU path: ``python bench/gpu_check.py`` (at most ~8 minutes
on one H100/H200-class GPU), or ``--smoke`` (every check at toy size, on the CPU, in under a
minute: CI runs it through tests/test_gpu_check.py).

It runs, and prints as one table:
1. the CUDA-marked tests (``pytest -m cuda tests/test_cuda.py``; they skip without a GPU);
2. the dtype each part actually ran in (the body's matrix products or recurrent kernels,
   head, carried state, parameter gradients) for every cell of every registered family x
   precision, read from the tensors by a dispatch trace;
3. host syncs per training step after a fresh start and after a resume (0 expected);
4. training throughput (chars/s, the real trainer) of rnn (1x512), rnn3 (3x512), lstm3
   (3x512 LSTM), a 3-layer GPT and 3-block minGRU, minLSTM and LRU networks per precision
   at B128 x T100 and at a GPU-sized batch, against a ceiling of 6 x the forward
   multiply-adds per character (each family's count) at the bf16 GEMM rate measured in the
   same run;
5. a short convergence check: best val nll per precision against fp32 at equal steps;
6. sampling speed (chars/s) of ``charlab sample``'s loop on the device, timed in-process
   for at least 0.2 s ("n/a" when too fast to time).
Without ``--smoke`` (or with ``--results PATH``) the table goes into bench/RESULTS.md's GPU
section, with the GPU's name.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import train_once  # noqa: E402
from conftest import SHARED_CORPUS, make_text  # noqa: E402
from results import update_section  # noqa: E402

from charlab import families  # noqa: E402
from charlab.encoding import Corpus, Vocab, encode_corpus  # noqa: E402
from charlab.families.base import state_tensors  # noqa: E402
from charlab.lm import generate  # noqa: E402
from charlab.models import load_model  # noqa: E402
from charlab.params.training import TrainParams, parse_entry  # noqa: E402
from charlab.runtime import (  # noqa: E402
    DeviceError,
    SyncWindow,
    dtype_trace,
    float32_gemms,
    hardware,
    plan_precision,
)

CELLS = families.CELLS  # every registered family's cells
PRECISIONS = ("fp32", "tf32", "bf16")
# the throughput rows: (cell, layers) at the size's width; a GPT gets heads and a context
MODELS = {"rnn": ("rnn", 1), "rnn3": ("rnn", 3), "lstm3": ("lstm", 3), "gpt": ("gpt", 3),
          "mingru": ("mingru", 3), "minlstm": ("minlstm", 3), "lru": ("lru", 3)}


@dataclasses.dataclass(frozen=True)
class Size:
    hidden: int
    batches: tuple[tuple[int, int], ...]  # (streams, seq_length) for throughput
    steps: int  # timed training steps
    converge_steps: int
    sample_chars: int
    corpus_chars: int


FULL = Size(512, ((128, 100), (1024, 128)), 20, 400, 4000, 4_000_000)
SMOKE = Size(32, ((8, 16),), 3, 12, 50, 60_000)


def cfg(cell: str, layers: int, hidden: int, batch: int, seq: int, device: str, **kw
        ) -> TrainParams:
    """An entry of ``cell`` at this size; a GPT reads windows of ``seq`` (its context)."""
    shape = ({"heads": 4, "context": seq} if families.by_cell(cell).window_key == "context"
             else {"seq_length": seq})
    base = dict(cell=cell, layers=layers, hidden_size=hidden, batch_size=batch, lr=2e-3,
                warmup_steps=10, max_steps=10, eval_every=10**6, dropout=0.1, device=device,
                threads=0, **shape)
    return parse_entry({**base, **kw}, "train.check")


def run(c: TrainParams, corpus: Corpus, d: Path, **kw):
    d.mkdir(parents=True, exist_ok=True)
    return train_once(c, corpus, d, name="check", **kw)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. the CUDA tests -------------------------------------------------------------------

def cuda_tests() -> str:
    # deterministic cuBLAS workspaces: the bit-for-bit resume test needs them
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p",
                           "no:cacheprovider", str(REPO / "tests" / "test_cuda.py")],
                          cwd=REPO, capture_output=True, text=True, env=env)
    tail = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = tail[-1].strip("= ") if tail else f"exit {proc.returncode}"
    if proc.returncode not in (0, 5):
        print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
    return summary


# --- 2. dtypes, read from the tensors -----------------------------------------------------

def _names(dtypes) -> str:
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
             torch.float64: "fp64"}
    return "/".join(sorted({names.get(d, str(d)) for d in dtypes})) or "-"


def dtypes_row(cell: str, precision: str, device: torch.device, size: Size) -> list[str]:
    try:
        plan = plan_precision(precision, hardware(device))
    except DeviceError as e:
        return [cell, precision, f"n/a: {str(e).split(',')[0]}", "", "", "", ""]
    vocab, h = 65, size.hidden
    torch.manual_seed(0)
    entry = cfg(cell, 2, h, 8, 16, device.type)
    model = entry.family.build(entry.network_config(vocab))
    model.to(device).train()
    model.set_precision(plan.recurrence, plan.head)
    idx = torch.randint(0, vocab, (8, 16), device=device)
    with float32_gemms(plan), dtype_trace() as ops:
        logits, hidden = model(idx)
        F.cross_entropy(logits.float().reshape(-1, vocab), idx.reshape(-1)).backward()
    # the body: recurrent kernels (cuDNN's, torch's per-cell ones) and every other matrix
    # product but the output layer's (whose last dimension is the vocabulary)
    gemm = ("mm", "addmm", "bmm", "linear")
    rec = [r for r in ops if re.search(r"rnn|lstm|gru", r.op)
           or (r.op in gemm and r.shapes and r.shapes[0][-1] != vocab)]
    head = [r for r in ops if r.op in gemm and r.shapes and r.shapes[0][-1] == vocab]
    hs = state_tensors(hidden)  # none for a GPT, which carries nothing between steps
    fp16 = any(torch.float16 in r.inputs + r.outputs for r in ops)
    return [cell, precision, _names(d for r in rec for d in r.inputs),
            _names(d for r in head for d in r.inputs), _names(t.dtype for t in hs),
            _names(p.grad.dtype for p in model.parameters()), "yes" if fp16 else "no"]


# --- 3. host syncs per step ----------------------------------------------------------------

def syncs_per_step(c: TrainParams, corpus: Corpus, d: Path, first: int, last: int) -> float:
    """Host syncs per optimizer step over steps first+1 .. last (no curve row among them)."""
    with SyncWindow(first, last) as window:
        run(c, corpus, d, on_step=window)
    return window.per_step


def host_syncs(device: torch.device, corpus: Corpus, tmp: Path, size: Size) -> list[str]:
    if device.type != "cuda":
        return ["n/a (no CUDA)", "n/a (no CUDA)"]
    # no curve row, resume-state save or 32-step loss check inside the windows: each of
    # those copies to the host by design
    c = cfg("lstm", 3, size.hidden, 128, 100, "cuda", max_steps=30, precision="auto")
    fresh = syncs_per_step(c, corpus, tmp / "fresh", 2, 25)
    run(dataclasses.replace(c, max_steps=10), corpus, tmp / "resumed")
    more = dataclasses.replace(c, max_steps=40, resume=True)
    resumed = syncs_per_step(more, corpus, tmp / "resumed", 12, 35)
    return [f"{fresh:g}", f"{resumed:g}"]


# --- 4. throughput -------------------------------------------------------------------------

def gemm_rate(device: torch.device, n: int) -> float:
    """bf16 GEMM FLOP/s measured here: the ceiling's rate."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def chars_per_sec(c: TrainParams, corpus: Corpus, d: Path, steps: int) -> tuple[float, int]:
    device = torch.device(c.device)
    marks: dict[int, float] = {}
    warm = 3

    def hook(k: int, model) -> None:
        if k in (warm, warm + steps):
            sync(device)
            marks[k] = time.perf_counter()

    res = run(dataclasses.replace(c, max_steps=warm + steps), corpus, d, on_step=hook)
    seconds = marks[warm + steps] - marks[warm]
    return steps * c.batch_size * c.seq_length / seconds, res.num_params


def throughput(device: torch.device, corpus: Corpus, tmp: Path, size: Size, rate: float
               ) -> list[list[str]]:
    rows = []
    for name, (cell, layers) in MODELS.items():
        for batch, seq in size.batches:
            for precision in PRECISIONS:
                try:
                    plan_precision(precision, hardware(device))
                except DeviceError:
                    rows.append([name, f"B{batch}xT{seq}", precision, "n/a", ""])
                    continue
                c = cfg(cell, layers, size.hidden, batch, seq, device.type,
                        precision=precision)
                cps, _ = chars_per_sec(c, corpus, tmp / f"{name}-{batch}-{precision}",
                                       size.steps)
                macs = c.family.forward_macs(c.network_config(corpus.vocab.size))
                ceiling = rate / (6 * macs)
                rows.append([name, f"B{batch}xT{seq}", precision, f"{cps:,.0f}",
                             f"{cps / ceiling:.2f}"])
    return rows


# --- 5. convergence ------------------------------------------------------------------------

def convergence(device: torch.device, corpus: Corpus, tmp: Path, size: Size
                ) -> list[list[str]]:
    best: dict[str, float] = {}
    for precision in PRECISIONS:
        try:
            plan_precision(precision, hardware(device))
        except DeviceError:
            continue
        c = cfg("rnn", 3, size.hidden, 128 if device.type == "cuda" else 8,
                100 if device.type == "cuda" else 16, device.type, precision=precision,
                max_steps=size.converge_steps, eval_every=size.converge_steps // 2,
                warmup_steps=size.converge_steps // 10)
        best[precision] = run(c, corpus, tmp / f"conv-{precision}").best_val_loss
    auto = plan_precision("auto", hardware(device)).name
    return [[p, f"{v:.4f}", f"{v - best['fp32']:+.4f}",
             "yes" if abs(v - best["fp32"]) <= 0.02 else "NO",
             "auto" if p == auto else ""] for p, v in best.items()]


# --- 6. sampling ---------------------------------------------------------------------------

MIN_SECONDS = 0.2  # a timing shorter than this is mostly timer and scheduler noise


def rate(run: Callable[[], int], min_seconds: float = MIN_SECONDS, max_reps: int = 10_000
         ) -> float | None:
    """Units per second of ``run`` (it returns how many units it did), repeated until
    ``min_seconds`` have passed; None if ``max_reps`` runs took less: too fast to time here.

    (It was the difference of two whole ``charlab sample`` processes, with no floor: on
    the CPU the two start-up times differ by noise, and --smoke printed 49,000,000,000.)
    """
    done, reps = 0, 0
    t0 = time.perf_counter()
    while reps < max_reps:
        done += run()
        reps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return done / elapsed
    return None


def sampling(device: torch.device, corpus_dir: Path, checkpoint: Path, size: Size) -> str:
    """chars/s of what `charlab sample` runs (load_model, then lm.generate one character at
    a time), timed in this process after one warm-up sample; the command itself runs once,
    to prove it works on the device."""
    vocab_path = corpus_dir / "vocab.json"
    subprocess.run([sys.executable, "-m", "charlab.cli", "sample", str(checkpoint),
                    "--vocab", str(vocab_path), "--device", device.type, "--length", "5",
                    "--seed", "1"], check=True, capture_output=True, cwd=REPO)
    model = load_model(checkpoint, Vocab.load(vocab_path), device=device.type)

    def one_sample() -> int:
        n = sum(1 for _ in generate(model, np.zeros(0, dtype=np.int64), size.sample_chars,
                                    temperature=0.8, seed=1))
        sync(device)
        return n

    one_sample()  # warm-up: kernels, allocator
    r = rate(one_sample)
    return "n/a (too fast to time)" if r is None else f"{r:,.0f}"


# --- the table -----------------------------------------------------------------------------

def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU, < 1 minute")
    ap.add_argument("--results", type=Path, default=None,
                    help="write the table into this RESULTS.md (default: bench/RESULTS.md "
                         "unless --smoke)")
    args = ap.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    size = SMOKE if args.smoke else FULL
    hw = hardware(device)
    start = time.perf_counter()
    out = [f"Device: {device.type} ({hw.name}); torch {torch.__version__}"
           + (f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
              if device.type == "cuda" else "") + ("; --smoke (toy sizes)" if args.smoke
                                                   else "")]
    out += ["", f"1. CUDA tests (`pytest -m cuda`): {cuda_tests()}"]
    out += ["", "2. dtypes read from the tensors (2 layers, forward + backward):", "",
            table(["cell", "precision", "body", "head", "carried state", "param grads",
                   "fp16 anywhere"],
                  [dtypes_row(c, p, device, size) for c in CELLS for p in PRECISIONS])]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        text = (SHARED_CORPUS.read_text(encoding="utf-8") if SHARED_CORPUS.is_file()
                and not args.smoke else make_text(size.corpus_chars))
        (tmp / "corpus.txt").write_text(text, encoding="utf-8")
        encode_corpus(tmp / "corpus.txt", tmp / "vocab.json", tmp / "tokens.bin",
                      tmp / "split.json", val_fraction=0.05, test_fraction=0.05)
        corpus = Corpus.load(tmp / "vocab.json", tmp / "tokens.bin", tmp / "split.json")
        fresh, resumed = host_syncs(device, corpus, tmp / "syncs", size)
        out += ["", f"3. host syncs per training step: fresh start {fresh}, after a resume "
                f"{resumed} (0 expected)"]
        rate = gemm_rate(device, 8192 if device.type == "cuda" else 512)
        out += ["", f"4. training throughput (chars/s; ceiling = bf16 GEMM rate "
                f"{rate / 1e9:,.0f} GFLOP/s / (6 x forward multiply-adds per char)):", "",
                table(["model", "batch", "precision", "chars/s", "of ceiling"],
                      throughput(device, corpus, tmp / "speed", size, rate))]
        out += ["", f"5. convergence, rnn3 shape, {size.converge_steps} steps (best val nll):",
                "", table(["precision", "val nll", "vs fp32", "within 0.02", ""],
                          convergence(device, corpus, tmp / "conv", size))]
        out += ["", "6. sampling (`charlab sample`'s loop, timed in-process) on the device: "
                f"{sampling(device, tmp, tmp / 'conv' / 'conv-fp32' / 'check.pt', size)} chars/s"]
    out += ["", f"Total: {time.perf_counter() - start:.0f} s."]
    text = "\n".join(out)
    print(text)
    results = args.results or (None if args.smoke else REPO / "bench" / "RESULTS.md")
    if results is not None:
        update_section("gpu", f"## GPU check (bench/gpu_check.py) on {hw.name}\n\n{text}",
                       results)


if __name__ == "__main__":
    main()
