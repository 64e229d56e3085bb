"""Benchmark: encode, n-gram fit and training data path on a corpus larger than they hold.

Run from the repository root:  .venv/bin/python bench/scale_bench.py [--mb 200]

Generates a deterministic corpus of ``--mb`` MB (10**6 bytes; default 200) in a temporary
folder (or ``--workdir``, never inside the repository), then measures, each in a fresh
subprocess of this script:

* ``encode``: the full ``charlab.encoding.encode_corpus`` call, as the encode stage makes it
  (val and test fractions 0.05, the default chunk size);
* ``ngram``: ``NGramLM.fit`` of order 5 on the memory-mapped train split, as the ngram
  stage calls it;
* ``train data``: one epoch of ``charlab.training.batches.StreamBatches`` (batch 128 x sequence 100,
  the defaults) on the train split as the trainer reads it (``Corpus.split_file``: ``pread``
  of a block of steps per stream), on CPU, with no model;
* ``baseline``: a process that imports the same modules (numpy, torch, charlab) and does
  nothing else. Memory figures are against it.

Memory: the peak resident set size (VmHWM, reset via /proc/self/clear_refs right before the
call) minus the baseline's RSS, so it counts the call's setup too (loading the corpus
manifest, building the batch index). RSS includes the memory-mapped corpus pages a process
has read and not dropped (file-backed, clean, reclaimable page cache); a thread samples
/proc/self/status every 5 ms to split the peak into anonymous memory and file pages
(sampled, so approximate; the VmHWM peak is exact). The n-gram fit also runs under
tracemalloc (numpy registers its buffers with it), which gives the exact peak of the memory
the fit itself allocates; its own overhead is small (few, large allocations).

Time: wall time of the call, time per MB of corpus, and the ratio to a plain read of the
same input file (``readinto`` of 1 MiB blocks, from page cache) in the same process: these
machines are noisy, so that ratio, not the wall time, is what compares across runs. Nothing
here asserts a time.

Bounds (constants below; the run prints PASS/FAIL and exits 1 when one fails):

* encode holds one chunk of text at a time (``CHUNK_BYTES``, 16 MiB): the raw bytes, the
  decoded str, its latin-1 bytes and the id array, each about a chunk for ASCII text, plus
  the decoder's buffer. Bound: ``ENCODE_CHUNKS`` chunks, whatever the corpus size.
* the training data path holds one block of 64 steps per stream (128 x 6,401 ids, under
  1 MiB) and one step's tensors; it reads with ``pread``, so no corpus page is mapped into
  the process. Bound: ``TRAIN_BOUND`` (16 MiB, room for allocator arenas). The run also
  measures how much page cache this kernel maps per page fault of a memory map: 2 MiB
  folios on Linux 6.18 with ext4, which is why training does not read through the map (128
  streams would keep 128 x 2 MiB resident).
* the n-gram fit holds its count tables and one chunk of windows; the tables grow with the
  number of distinct windows, not with the corpus size. Bound on its own (anonymous)
  memory: ``NGRAM_BYTES_PER_ENTRY`` per table entry over levels 0..5 (keys int64 + counts
  uint32 = 12 B, held up to about three times over while the last chunk is merged and the
  lower levels are derived) + ``NGRAM_FIXED`` (one chunk of 2**21 positions: its int64
  windows, their sorted copy, run starts and merge positions). It reads the memory-mapped
  split sequentially and drops each chunk's pages after counting it, so mapped pages add
  ``NGRAM_MAPPED`` (a chunk and a folio), not the split's size.

The encode and training bounds are constants, not fractions of the corpus: as a fraction
they fall as the corpus grows (the table gives it at the measured size). The n-gram bound
grows with the distinct windows only.

``--workdir`` keeps the corpus and its encoding there afterwards (refused inside the
repository); the default temporary folder is removed.

Writes its report to the ``scale`` section of bench/RESULTS.md when run at the default size,
unless ``--no-write``; ``--write`` writes it at any size.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import KIB, MIB, measure, run_worker, status  # bench/: the script's own folder
from results import RESULTS, update_section

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
MB = 1_000_000
DEFAULT_MB = 200

# What the stages use (params.yaml defaults).
VAL_FRACTION = TEST_FRACTION = 0.05
ORDER = 5
BATCH_SIZE, SEQ_LENGTH = 128, 100

# Bounds on peak RSS above the baseline (see the docstring for the reasoning).
CHUNK_BYTES = 1 << 24  # charlab.encoding.CHUNK_BYTES; checked at run time
ENCODE_CHUNKS = 6
ENCODE_BOUND = ENCODE_CHUNKS * CHUNK_BYTES  # 96 MiB
TRAIN_BLOCK = 64  # StreamBatches' default block (steps read per stream); checked at run time
TRAIN_BOUND = 16 * MIB
NGRAM_BYTES_PER_ENTRY = 48  # keys int64 + counts uint32, copies while merging and deriving
NGRAM_FIXED = 96 * MIB  # one counting chunk (2**21 positions) and its sort/merge temporaries
NGRAM_MAPPED = 8 * MIB  # mapped pages of the chunk being counted, rounded up to folios

FILES = ("corpus.txt", "vocab.json", "tokens.bin", "split.json")


# --- the corpus ----------------------------------------------------------------------------

def make_corpus(path: Path, n_bytes: int, seed: int = 0) -> str:
    """Write ``n_bytes`` of deterministic text to ``path``; returns how it was made."""
    rng = np.random.default_rng(seed)
    if SHARED_CORPUS.is_file():
        blocks = _recombined_lines(SHARED_CORPUS.read_text(encoding="utf-8"), rng)
        how = (f"lines of {SHARED_CORPUS.name} shuffled, each line's words after its first "
               "space swapped with another line's")
    else:
        blocks = _word_salad(rng)
        how = (f"generated word salad ({SHARED_CORPUS} is absent): 5,000 pseudo-words drawn "
               "with Zipf frequencies, a line ends after a word with probability 1/9")
    written = 0
    with open(path, "wb") as f:
        while written < n_bytes:
            data = next(blocks).encode("utf-8")[: n_bytes - written]
            data = data.decode("utf-8", "ignore").encode("utf-8")  # whole characters only
            f.write(data)
            written += len(data)
    return how


def _recombined_lines(text: str, rng: np.random.Generator):
    """Blocks of the text's lines, shuffled, their tails (from the first space) swapped
    among lines: text-like, with new character windows at each junction."""
    lines = text.splitlines(keepends=True)
    cut = [line.find(" ") for line in lines]
    heads = np.array([ln if i < 0 else ln[:i] for ln, i in zip(lines, cut, strict=True)],
                     dtype=object)
    tails = np.array(["" if i < 0 else ln[i:] for ln, i in zip(lines, cut, strict=True)],
                     dtype=object)
    while True:
        perm = rng.permutation(len(lines))
        tail_of = perm.copy()
        spaced = np.flatnonzero(tails[perm] != "")
        tail_of[spaced] = perm[spaced][rng.permutation(len(spaced))]
        yield "".join(map(operator.add, heads[perm].tolist(), tails[tail_of].tolist()))


def _word_salad(rng: np.random.Generator):
    """Blocks of pseudo-words drawn with Zipf frequencies; a sentence (and line) ends after
    a word with probability 1/9."""
    syllables = ["th", "e", "an", "ou", "re", "in", "st", "er", "o", "al", "ing", "sh",
                 "ea", "l", "m", "ow", "k", "d", "y", "ch"]
    words = sorted({"".join(rng.choice(syllables, size=rng.integers(1, 5)))
                    for _ in range(6000)})[:5000]
    words = [words[i] for i in rng.permutation(len(words))]  # frequency rank != spelling
    table = np.array([w + " " for w in words] + [w + ".\n" for w in words], dtype=object)
    freq = 1.0 / np.arange(1, len(words) + 1)
    freq /= freq.sum()
    n = 250_000
    while True:
        idx = rng.choice(len(words), size=n, p=freq) + len(words) * (rng.random(n) < 1 / 9)
        yield "".join(table[idx].tolist())


# --- measuring (runs in a fresh subprocess) -----------------------------------------------

def _plain_read(path: Path) -> float:
    """Seconds to read ``path`` once into a reused 1 MiB buffer (the time reference)."""
    buf = bytearray(MIB)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t


def _bytes_per_fault(path: Path) -> float:
    """Bytes of ``path``'s (cached) pages a fresh mapping makes resident per 1-byte read."""
    ids = np.memmap(path, dtype=np.uint8, mode="r")
    n = max(1, min(16, len(ids) // (4 * MIB)))  # reads 4 MiB or more apart
    before = status()["RssFile"]
    for i in range(n):
        int(ids[i * (len(ids) // n)])
    return (status()["RssFile"] - before) / n


def worker(kind: str, workdir: Path) -> dict:
    """One measurement in this (fresh) interpreter."""
    import torch

    from charlab import encoding
    from charlab.encoding import Corpus, encode_corpus
    from charlab.ngram import NGramLM
    from charlab.training.batches import StreamBatches

    text, vocab, tokens, split = (workdir / name for name in FILES)
    res: dict = {}
    if kind == "baseline":
        def call():
            return None
        source = None
    elif kind == "encode":
        res["chunk_bytes"] = encoding.CHUNK_BYTES

        def call():
            return encode_corpus(text, vocab, tokens, split, val_fraction=VAL_FRACTION,
                                 test_fraction=TEST_FRACTION)
        source = text
    elif kind == "ngram":
        def call():
            corpus = Corpus.load(vocab, tokens, split)
            return NGramLM.fit(corpus.split("train"), corpus.vocab.size, ORDER)
        source = tokens
    elif kind == "train":
        def call():
            corpus = Corpus.load(vocab, tokens, split)
            data = StreamBatches(corpus.split_file("train"), BATCH_SIZE, SEQ_LENGTH, seed=0,
                                 device=torch.device("cpu"))
            res["block"] = data.block
            res["steps"] = data.steps_per_epoch
            for step in range(data.steps_per_epoch):
                x, _, _ = data.batch(step)
            res["chars"] = data.steps_per_epoch * x.numel()
            return None
        source = tokens
    else:
        raise ValueError(kind)

    res["read_seconds"] = _plain_read(source) if source is not None else 0.0
    # numpy registers its buffers with tracemalloc: the n-gram fit's exact peak
    out, measured = measure(call, trace=kind == "ngram")
    res.update(measured)
    if kind == "train":
        res["fault_bytes"] = _bytes_per_fault(tokens)
    if isinstance(out, NGramLM):
        res["entries"] = out.num_params()
        res["level_entries"] = [out.tables.num_rows(lv) for lv in range(out.order + 1)]
        res["table_bytes"] = out.tables.nbytes
    return res


def in_subprocess(kind: str, workdir: Path) -> dict:
    return run_worker([__file__, "--worker", kind, "--workdir", str(workdir)], kind)


# --- the report ----------------------------------------------------------------------------

def run(mb: float, workdir: Path) -> tuple[str, bool]:
    rows: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        rows.append(line)

    text = workdir / FILES[0]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    how = make_corpus(text, int(mb * MB))
    t_gen = time.perf_counter() - t0
    size = text.stat().st_size
    corpus_mb = size / MB

    base = in_subprocess("baseline", workdir)
    enc = in_subprocess("encode", workdir)
    ngram = in_subprocess("ngram", workdir)
    train = in_subprocess("train", workdir)
    if enc["chunk_bytes"] != CHUNK_BYTES or train["block"] != TRAIN_BLOCK:
        sys.exit(f"charlab's chunk size {enc['chunk_bytes']} or StreamBatches block "
                 f"{train['block']} changed: update this script's bounds")
    split = json.loads((workdir / "split.json").read_text(encoding="utf-8"))
    a, b = split["splits"]["train"]["start"], split["splits"]["train"]["end"]
    train_bytes = (b - a) * np.dtype(split["dtype"]).itemsize
    vocab_size = len(json.loads((workdir / "vocab.json").read_text(encoding="utf-8"))["chars"])

    base_rss = base["rss_before"]
    ngram_anon_bound = NGRAM_BYTES_PER_ENTRY * ngram["entries"] + NGRAM_FIXED
    bounds = {"encode": ENCODE_BOUND, "train": TRAIN_BOUND,
              "ngram": ngram_anon_bound + NGRAM_MAPPED}

    say(f"# Corpora larger than memory (bench/scale_bench.py, --mb {mb:g})")
    say()
    say(f"Machine: {os.cpu_count()} CPU(s), {platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}; load average before the run "
        f"{load:.2f}.")
    say()
    say(f"Corpus: {size:,} bytes ({corpus_mb:.0f} MB, {size / MIB:.0f} MiB) of UTF-8, "
        f"{how}; generated in {t_gen:.1f} s. {split['n_chars']:,} chars, vocab "
        f"{vocab_size} ({split['dtype']} ids); train split {b - a:,} chars.")
    lv = ngram["level_entries"]
    say()
    say(f"Train split: {lv[ORDER - 1]:,} distinct 5-grams (5-char strings) and "
        f"{lv[ORDER]:,} distinct order-5 windows (5-char history + next char); order-5 "
        f"tables: {ngram['entries']:,} entries over levels 0..5, "
        f"{ngram['table_bytes'] / MIB:.1f} MiB.")
    say()
    say(f"Baseline: a fresh process that imports numpy, torch and charlab: RSS "
        f"{base_rss / MIB:.0f} MiB. Each measurement runs in a fresh process with the same "
        f"imports; peak = VmHWM reset right before the call, minus the baseline's RSS. "
        f"Anon / file pages: sampled peaks of RssAnon and of file-backed RSS (mapped corpus "
        f"pages) above the same process's RSS before the call. Time: wall, per MB of corpus, "
        f"and x a plain read of the input file in the same process.")
    say()
    say("| measurement | time | per MB | x plain read | peak RSS | above baseline "
        "| x corpus | anon / file pages | bound (above baseline) | |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    names = (("encode", "encode (`encode_corpus`, 2 passes)", enc),
             ("ngram", "n-gram fit order 5 (mmap train split)", ngram),
             ("train", "train data path, 1 epoch (B128 x T100, pread)", train))
    for key, label, m in names:
        above = m["peak"] - base_rss
        passed = above <= bounds[key]
        ok &= passed
        anon = max(0, m["anon_peak"] - m["anon_before"])
        filep = max(0, m["file_peak"] - m["file_before"])
        say(f"| {label} | {m['seconds']:.2f} s | {m['seconds'] / corpus_mb * 1000:.1f} ms "
            f"| {m['seconds'] / m['read_seconds']:.0f}x | {m['peak'] / MIB:.0f} MiB "
            f"| {above / MIB:.0f} MiB | {above / size:.2f} | {anon / MIB:.0f} / "
            f"{filep / MIB:.0f} MiB | {bounds[key] / MIB:.0f} MiB "
            f"({bounds[key] / size:.2f}x) | {'PASS' if passed else 'FAIL'} |")
    say()
    # the fit's own memory: the larger of the sampled anon peak and tracemalloc's exact one
    n_anon = max(ngram["anon_peak"] - ngram["anon_before"], ngram["traced_peak"])
    say("Bounds:")
    say()
    say(f"- encode: {ENCODE_CHUNKS} x the {CHUNK_BYTES // MIB} MiB chunk = "
        f"{ENCODE_BOUND // MIB} MiB, whatever the corpus size (one chunk as bytes, as str, "
        f"as latin-1 bytes and as ids, plus decoder state).")
    fault = train["fault_bytes"]
    say(f"- train data path: one block of {TRAIN_BLOCK} steps per stream "
        f"({BATCH_SIZE} x {TRAIN_BLOCK * SEQ_LENGTH + 1:,} ids) and one step's tensors, read "
        f"with pread (no corpus page mapped): {TRAIN_BOUND // MIB} MiB, whatever the corpus "
        f"size; {train['steps']:,} steps, {train['chars']:,} input chars.")
    say(f"- why not through the memory map: one page fault on the id file maps "
        f"{fault / KIB:.0f} KiB of page cache on this kernel ({platform.release()}), so "
        f"{BATCH_SIZE} streams reading a map would keep {BATCH_SIZE * fault / MIB:.0f} MiB "
        "resident.")
    say(f"- n-gram fit: {NGRAM_BYTES_PER_ENTRY} B x {ngram['entries']:,} table entries + "
        f"{NGRAM_FIXED // MIB} MiB (one chunk) = {ngram_anon_bound / MIB:.0f} MiB of its own "
        f"memory (measured: {n_anon / MIB:.0f} MiB, tracemalloc peak "
        f"{ngram['traced_peak'] / MIB:.0f} MiB; "
        f"{'PASS' if n_anon <= ngram_anon_bound else 'FAIL'}), plus {NGRAM_MAPPED // MIB} "
        f"MiB of mapped pages: the fit drops each chunk's pages of the {train_bytes / MIB:.0f}"
        f" MiB train split after counting it (peak file pages "
        f"{(ngram['file_peak'] - ngram['file_before']) / MIB:.0f} MiB).")
    ok &= n_anon <= ngram_anon_bound
    say()
    say(f"Result: {'PASS' if ok else 'FAIL'}")
    return "\n".join(rows) + "\n", ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=DEFAULT_MB,
                    help=f"corpus size in MB of 10**6 bytes (default {DEFAULT_MB})")
    ap.add_argument("--workdir", type=Path,
                    help="folder for the corpus and its encoding (default: a temporary one)")
    write = ap.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true",
                       help="write the scale section of bench/RESULTS.md at any size")
    write.add_argument("--no-write", action="store_true",
                       help="never write bench/RESULTS.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir)))
        return
    if args.mb <= 0:
        sys.exit("--mb must be > 0")
    if args.workdir is not None:
        workdir = args.workdir.resolve()
        if workdir == REPO or REPO in workdir.parents:
            sys.exit(f"--workdir {workdir} is inside the repository; pick a folder outside it")
        workdir.mkdir(parents=True, exist_ok=True)
        report, ok = run(args.mb, workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="charlab-scale-") as tmp:
            report, ok = run(args.mb, Path(tmp))
    if args.write or (args.mb == DEFAULT_MB and not args.no_write):
        # one section of RESULTS.md: demote this report's headings one level
        update_section("scale", re.sub(r"^(#+) ", r"#\1 ", report, flags=re.M))
        print(f"\nwrote the scale section of {RESULTS.relative_to(REPO)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
