"""Benchmark: memory and speed of the RNN path as the vocabulary grows (issue 12).

Run from the repository root:  .venv/bin/python bench/vocab_bench.py [--chars 100000]
(``--vocabs`` and ``--speed-vocabs`` pick other sizes, e.g. for a quick check)

For each vocabulary size V in 65, 1,000, 10,000 and 60,000 it generates a corpus of the same
number of characters (``--chars``, default 100,000) drawing from exactly V distinct
characters (newline and printable ASCII first, then CJK and the code points after it,
skipping surrogates; every character once, the rest Zipf-distributed), encodes it as the
encode stage does (val and test 5% each), and measures, each in a fresh subprocess:

* ``evaluate``: ``charlab.evaluate.evaluate`` of one untrained RNN (seeded) through the
  LanguageModel protocol (``StreamingLM``) on the train, val and test splits, as the evaluate
  stage scores every model;
* ``train``: ``charlab.training.loop.train`` for ``TRAIN_STEPS`` steps with one evaluation on the
  val split and the checkpoint write, as the train stage runs it;
* ``baseline``: a process that imports the same modules and does nothing else.

Memory: peak resident set size (VmHWM, reset right before the call) minus the baseline's
RSS (bench/_common.py), so it counts everything the call allocates, the model's weights
included. Evaluate must stay within a bound that does not grow with the corpus: the scoring
budget (``charlab.families.streaming.SCORE_LOGITS_BYTES``, 64 MiB of logits per forward
call) + 3x the model's weights (the weights, and the ``W_ih^T + b`` table the fused Elman path
builds per call) + ``EVAL_FIXED``. The run prints PASS/FAIL and exits 1 on a FAIL. Training memory
grows with V through the output layer (the B x T x V logits, their log-softmax and their
gradient, and the V x H weights with their gradients and Adam state): it is measured, not
bounded. The "before issue 12" column is what one scoring call held then: 256 steps of
every stream, as logits and again as their log-softmax.

Speed: training chars/s at V = 65 and V = 5,000 (same hidden size, same corpus length), in
one process, alternating, best of ``SPEED_REPEATS`` runs of ``SPEED_STEPS`` steps each
(bench/train_throughput.py's ``trainer``: the real ``train()`` loop, after 2 warm-up steps),
printed as a ratio next to the ratio of the step's matrix-product FLOPs (recurrence
``2H^2`` + output layer ``2HV`` per character, forward and backward alike: the output layer
is the only part that grows). The machine is shared and noisy: the ratio, not the chars/s,
is what compares across runs, and even it moves by tens of percent.

Model: cell rnn, 1 layer, hidden ``HIDDEN``, one-hot input (the lecture's), dropout 0; batch
``BATCH`` x sequence ``SEQ``; 1 torch thread. Writes its report to the ``vocab`` section of
bench/RESULTS.md when run with the default sizes, unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import MIB, measure, run_worker  # bench/ is the script's own folder
from results import RESULTS, update_section

REPO = Path(__file__).resolve().parents[1]
VOCABS = (65, 1_000, 10_000, 60_000)
SPEED_VOCABS = (65, 5_000)
DEFAULT_CHARS = 100_000
HIDDEN, BATCH, SEQ = 128, 32, 64
TRAIN_STEPS = 4
SPEED_STEPS, SPEED_REPEATS = 20, 2
# torch's kernels and libraries paged in on the first forward call (~40 MiB, not in the
# import-only baseline), the split's index arrays (~40 B/char), activations, allocator slack
EVAL_FIXED = 64 * MIB
ASCII = "\n" + "".join(chr(c) for c in range(32, 127))


def alphabet(v: int) -> list[str]:
    """``v`` distinct characters: newline and printable ASCII, then code points from U+4E00
    (CJK) upwards, surrogates skipped."""
    chars = list(ASCII[:v])
    c = 0x4E00
    while len(chars) < v:
        if not 0xD800 <= c <= 0xDFFF:
            chars.append(chr(c))
        c += 1
    return chars


def make_corpus(path: Path, v: int, n_chars: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    chars = np.array(alphabet(v), dtype=object)
    rank = rng.permutation(v)  # frequency rank != code point order
    p = 1.0 / (np.arange(v) + 1.0)
    ids = np.concatenate([rng.permutation(v),  # every character at least once
                          rank[rng.choice(v, size=n_chars - v, p=p / p.sum())]])
    path.write_text("".join(chars[ids].tolist()), encoding="utf-8")


def config(**kw):
    from charlab.params.training import parse_entry

    base = dict(cell="rnn", layers=1, hidden_size=HIDDEN, dropout=0.0, batch_size=BATCH,
                seq_length=SEQ, lr=0.002, warmup_steps=0, max_steps=TRAIN_STEPS,
                eval_every=TRAIN_STEPS, device="cpu", threads=1, seed=0, precision="fp32")
    return parse_entry({**base, **kw}, "train.bench")


FILES = ("vocab.json", "tokens.bin", "split.json")


def worker(kind: str, workdir: Path, speed_vocabs: tuple[int, ...]) -> dict:
    """One measurement in this (fresh) interpreter."""
    import torch
    from _common import train_once

    from charlab.encoding import Corpus
    from charlab.evaluate import evaluate
    from charlab.families.recurrent import CharRNN, ModelConfig
    from charlab.families.streaming import SCORE_LOGITS_BYTES, StreamingLM

    torch.set_num_threads(1)
    res: dict = {}
    if kind == "speed":  # workdir holds one folder per vocabulary size
        from train_throughput import trainer

        corpora = {v: Corpus.load(*(workdir / f"v{v}" / f for f in FILES)) for v in speed_vocabs}
        best = {v: 0.0 for v in speed_vocabs}
        for _ in range(SPEED_REPEATS):
            for v, corpus in corpora.items():
                cps = trainer(config(), corpus, workdir / f"v{v}", SPEED_STEPS)
                best[v] = max(best[v], cps)
        return {"chars_per_sec": {str(v): c for v, c in best.items()}}
    corpus = Corpus.load(*(workdir / f for f in FILES))
    v = corpus.vocab.size
    if kind == "baseline":
        def call():
            return None
    elif kind == "evaluate":
        torch.manual_seed(0)
        net = CharRNN(ModelConfig(vocab_size=v, hidden_size=HIDDEN, dropout=0.0))
        lm = StreamingLM(net, "cpu")
        res["params"] = net.num_params()
        res["plan"] = lm._plan(len(corpus.split("train")) - 1)
        res["budget"] = SCORE_LOGITS_BYTES

        def call():
            return evaluate({"rnn": lm}, corpus)
    elif kind == "train":
        def call():
            return train_once(config(), corpus, workdir)
    else:
        raise ValueError(kind)
    out, m = measure(call)
    res.update(m)
    if kind == "evaluate":
        res["nll"] = {r.split: r.nll for r in out.itertuples()}
    elif kind == "train":
        res["params"] = out.num_params
        res["val_loss"] = out.final_val_loss
    return res


def in_subprocess(kind: str, workdir: Path, speed_vocabs: tuple[int, ...] = SPEED_VOCABS
                  ) -> dict:
    return run_worker([__file__, "--worker", kind, "--workdir", str(workdir), "--speed-vocabs",
                       ",".join(map(str, speed_vocabs))], f"{kind} {workdir}")


def run(n_chars: int, root: Path, vocabs: tuple[int, ...] = VOCABS,
        speed_vocabs: tuple[int, ...] = SPEED_VOCABS) -> tuple[str, bool]:
    from charlab.encoding import encode_corpus

    rows: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        rows.append(line)

    load = os.getloadavg()[0]
    sizes = {}
    for v in sorted(set(vocabs) | set(speed_vocabs)):
        d = root / f"v{v}"
        d.mkdir()
        make_corpus(d / "corpus.txt", v, n_chars)
        encode_corpus(d / "corpus.txt", *(d / f for f in FILES), val_fraction=0.05,
                      test_fraction=0.05)
        sizes[v] = (d / "corpus.txt").stat().st_size
    base = in_subprocess("baseline", root / f"v{vocabs[0]}")
    results = {v: (in_subprocess("evaluate", root / f"v{v}"),
                   in_subprocess("train", root / f"v{v}")) for v in vocabs}
    speed = in_subprocess("speed", root, speed_vocabs)["chars_per_sec"]

    base_rss = base["rss_before"]
    budget = results[vocabs[0]][0]["budget"]
    say("# Vocabulary size: memory and speed of the RNN path (bench/vocab_bench.py)")
    say()
    say(f"Machine: {os.cpu_count()} CPU(s), {platform.machine()}, Python "
        f"{platform.python_version()}; load average before the run {load:.2f} (the CPU is "
        "shared with other jobs: times are noisy). 1 torch thread.")
    say()
    say(f"Corpus: {n_chars:,} characters per vocabulary size V, drawn from exactly V distinct "
        "characters (newline and printable ASCII, then U+4E00 upwards; each once, the rest "
        "Zipf), encoded as the encode stage does (90/5/5 splits). Model: cell rnn, 1 layer, "
        f"hidden {HIDDEN}, one-hot input, dropout 0; training batch {BATCH} x sequence {SEQ}, "
        f"{TRAIN_STEPS} steps and one val evaluation. Peak = VmHWM of the call in a fresh "
        f"process minus the RSS of one that only imports numpy, torch and charlab "
        f"({base_rss / MIB:.0f} MiB).")
    say()
    say("| V | corpus | params | evaluate: streams x steps per call | logits per call "
        "| before issue 12 | evaluate time | evaluate peak | bound | | train logits "
        "(B x T x V x 4) | train time | train peak |")
    say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    ok = True
    for v in vocabs:
        ev, tr = results[v]
        streams, steps = ev["plan"]
        ev_above = ev["peak"] - base_rss
        tr_above = tr["peak"] - base_rss
        bound = budget + 3 * 4 * ev["params"] + EVAL_FIXED
        passed = ev_above <= bound
        ok &= passed
        before = 2 * streams * 256 * v * 4  # logits and their log_softmax, 256 steps
        say(f"| {v:,} | {sizes[v] / 1000:.0f} KB | {ev['params']:,} | {streams} x {steps} "
            f"| {streams * steps * v * 4 / MIB:.1f} MiB | {before / MIB:,.0f} MiB "
            f"| {ev['seconds']:.1f} s | {ev_above / MIB:.0f} MiB | {bound / MIB:.0f} MiB "
            f"| {'PASS' if passed else 'FAIL'} | {BATCH * SEQ * v * 4 / MIB:.1f} MiB "
            f"| {tr['seconds']:.1f} s | {tr_above / MIB:.0f} MiB |")
    say()
    nll_ok = all(abs(results[v][0]["nll"]["test"] - np.log(v)) < 0.5 for v in vocabs)
    listed = ", ".join(f"V {v:,}: {results[v][0]['nll']['test']:.2f} vs {np.log(v):.2f}"
                       for v in vocabs)
    say(f"Sanity: the untrained networks score about ln V nats/char on the test split "
        f"({listed}){'' if nll_ok else ' -- FAIL'}.")
    ok &= nll_ok
    say()
    lo, hi = speed_vocabs
    c_lo, c_hi = speed[str(lo)], speed[str(hi)]
    flops = (HIDDEN + hi) / (HIDDEN + lo)
    say(f"Training speed, hidden {HIDDEN}, batch {BATCH} x {SEQ}, best of {SPEED_REPEATS} x "
        f"{SPEED_STEPS} steps, one process: V {lo:,}: {c_lo:,.0f} chars/s; V {hi:,}: "
        f"{c_hi:,.0f} chars/s; **V {hi:,} is {c_lo / c_hi:.1f}x slower** (matrix-product "
        f"FLOPs per character, 2H^2 + 2HV: {flops:.1f}x). Noisy: the CPU is shared.")
    say()
    say(f"Result: {'PASS' if ok else 'FAIL'}")
    return "\n".join(rows) + "\n", ok


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def _show(sizes: tuple[int, ...]) -> str:
    return ",".join(map(str, sizes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=DEFAULT_CHARS,
                    help=f"characters per corpus (default {DEFAULT_CHARS:,})")
    ap.add_argument("--vocabs", type=_sizes, default=VOCABS,
                    help=f"vocabulary sizes to measure (default {_show(VOCABS)})")
    ap.add_argument("--speed-vocabs", type=_sizes, default=SPEED_VOCABS,
                    help=f"the two sizes to compare chars/s of (default {_show(SPEED_VOCABS)})")
    ap.add_argument("--no-write", action="store_true", help="never write bench/RESULTS.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import json

        print(json.dumps(worker(args.worker, args.workdir, args.speed_vocabs)))
        return
    if len(args.speed_vocabs) != 2 or min(args.vocabs + args.speed_vocabs) < 2:
        sys.exit("--speed-vocabs takes two sizes, and every size must be >= 2")
    if args.chars < max(args.vocabs + args.speed_vocabs):
        sys.exit(f"--chars {args.chars} cannot hold {max(args.vocabs + args.speed_vocabs)} "
                 "distinct characters")
    with tempfile.TemporaryDirectory(prefix="charlab-vocab-") as tmp:
        report, ok = run(args.chars, Path(tmp), args.vocabs, args.speed_vocabs)
    default = (args.chars, args.vocabs, args.speed_vocabs) == (DEFAULT_CHARS, VOCABS,
                                                               SPEED_VOCABS)
    if default and not args.no_write:
        update_section("vocab", re.sub(r"^(#+) ", r"#\1 ", report, flags=re.M))
        print(f"\nwrote the vocab section of {RESULTS.relative_to(REPO)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
