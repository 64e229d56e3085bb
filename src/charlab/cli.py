"""The `charlab` command: sample from, score with and inspect the pipeline's models.

Model names (`ngram4`, `rnn3`) resolve to the pipeline's default locations (the ones in
dvc.yaml); a path to a `.npz` or `.pt` file works too.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import math
import os
import sys
from pathlib import Path

import numpy as np

from charlab.encoding import Vocab, VocabError, decode_utf8, strip_bom
from charlab.errors import CharlabError, run_main
from charlab.lm import generate, score
from charlab.models import CHECKPOINT_SUFFIX, NGRAM_SUFFIX, load_model

STATE_SUFFIX = ".state"  # training's resume state beside a checkpoint: rnn.pt.state

# The pipeline's default locations, as written in dvc.yaml.
DEFAULT_VOCAB = "data/encoded/vocab.json"
DEFAULT_MODELS = "models"
DEFAULT_NGRAMS = "models/ngram"


def _model_path(model: str, models_dir: str, ngram_dir: str) -> Path:
    """A model name (``rnn3``, ``ngram4``) at its pipeline location, or a path: one with a
    known suffix or a directory part (model names never hold a separator), or one that
    exists where no model of that name does. A resume state is named as what it is."""
    if model.endswith(STATE_SUFFIX):
        raise CharlabError(f"{model}: a training resume state (what an interrupted run "
                           "continues from), not a model; use the checkpoint "
                           f"{model.removesuffix(STATE_SUFFIX)}")
    if model.endswith((NGRAM_SUFFIX, CHECKPOINT_SUFFIX)) or os.sep in model or "/" in model:
        return Path(model)
    if model.startswith("ngram") and model[5:].isdigit():
        named = Path(ngram_dir) / f"{model}{NGRAM_SUFFIX}"
    else:
        named = Path(models_dir) / f"{model}{CHECKPOINT_SUFFIX}"
    return Path(model) if not named.exists() and os.path.lexists(model) else named


def _read_text(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CharlabError(f"{path}: {e.strerror}") from None
    return strip_bom(decode_utf8(data, source=path))  # a leading BOM is no character


def _encode(vocab: Vocab, text: str, where: str) -> np.ndarray:
    """``vocab.encode``, with an error that says where the unknown characters came from."""
    try:
        return vocab.encode(text)
    except VocabError as e:
        raise VocabError(f"{where}: {e}") from None


def _vocab(args: argparse.Namespace) -> Vocab:
    vocab_path = Path(args.vocab)
    if not vocab_path.is_file():
        raise CharlabError(f"{vocab_path}: no vocabulary file (run `dvc repro`, or --vocab)")
    return Vocab.load(vocab_path)


def _load(args: argparse.Namespace):
    vocab = _vocab(args)
    path = _model_path(args.model, args.models_dir, args.ngram_dir)
    return vocab, load_model(path, vocab, device=args.device)


def _text_ids(args: argparse.Namespace, vocab: Vocab) -> tuple[str, np.ndarray]:
    """The file's text and ids; at least 2 characters (one to predict)."""
    text = _read_text(args.file)
    ids = _encode(vocab, text, args.file).astype(np.int64)
    if len(ids) < 2:
        raise CharlabError(f"{args.file}: need at least 2 characters, got {len(ids)}")
    return text, ids


def cmd_compare(args: argparse.Namespace) -> None:
    from charlab.analysis import class_table, compare_page, format_class_table
    from charlab.io import check_output, write_text

    if args.model_a == args.model_b:
        raise CharlabError(f"compare: name two different models, got {args.model_a} twice")
    if args.html:
        check_output(args.html)  # a missing directory or a device fails before any work
    vocab = _vocab(args)
    models = {m: load_model(_model_path(m, args.models_dir, args.ngram_dir), vocab,
                            device=args.device) for m in (args.model_a, args.model_b)}
    text, ids = _text_ids(args, vocab)
    lp = {m: np.asarray(model.log_probs(ids), dtype=np.float64) for m, model in models.items()}
    table = class_table(text, lp)
    print(f"{args.file}: {len(ids) - 1} predicted characters")
    print(format_class_table(table))
    if args.html:
        write_text(args.html, compare_page(text, args.model_a, args.model_b, lp[args.model_a],
                                           lp[args.model_b], table, args.top, source=args.file))
        print(f"page: {args.html}")


def cmd_cells(args: argparse.Namespace) -> None:
    from charlab.analysis import cells_page, cells_report, load_network
    from charlab.families.base import NoUnits
    from charlab.io import check_output, write_text

    if args.html:
        check_output(args.html)  # a missing directory or a device fails before any work
    vocab = _vocab(args)
    path = _model_path(args.model, args.models_dir, args.ngram_dir)
    if path.suffix != CHECKPOINT_SUFFIX:
        raise CharlabError(f"{args.model}: an n-gram model has no units; cells needs a "
                           f"trained recurrent model ({CHECKPOINT_SUFFIX})")
    if not path.is_file():
        raise CharlabError(f"{path}: no such model file (has the pipeline run? `dvc repro`)")
    model = load_network(path, vocab)
    text, ids = _text_ids(args, vocab)
    text, ids = text[:args.max_chars], ids[:args.max_chars]
    try:
        res = cells_report(args.model, model, text, ids)
    except NoUnits as e:
        raise CharlabError(f"{args.model}: no units to read ({e})") from None
    print(f"{args.model}: {res.cell}, {len(res.acts.hidden)} layer(s), read {len(text)} "
          f"characters of {args.file}")
    print(f"{'feature':<17}{'share':>7}  {'best unit':<11}{'r':>7}")
    for b in res.best:
        r = "-" if b.unit is None else f"{b.r:+.3f}"
        print(f"{b.feature:<17}{b.share:>7.1%}  {b.unit or '-':<11}{r:>7}")
    for k, layer in enumerate(res.saturation):
        print(f"layer {k + 1} saturation: " + ", ".join(
            f"{g} {s['left'].mean():.1%} < 0.1 / {s['right'].mean():.1%} > 0.9"
            for g, s in layer.items()))
    if args.html:
        write_text(args.html, cells_page(res, text, source=args.file))
        print(f"page: {args.html}")


class OutputEncodingError(CharlabError):
    """stdout's encoding cannot hold the text to print."""


def _stdout_problem(e: UnicodeEncodeError) -> OutputEncodingError:
    char = e.object[e.start]
    return OutputEncodingError(
        f"stdout's encoding ({e.encoding}) cannot print U+{ord(char):04X} {char!r}; set "
        "PYTHONIOENCODING=utf-8 (or a UTF-8 locale), or PYTHONIOENCODING="
        f"{e.encoding}:backslashreplace to print such characters as escapes"
    )


def _check_printable(text: str) -> None:
    """Before sampling: every character the sample can hold fits stdout's encoding."""
    try:
        text.encode(sys.stdout.encoding or "utf-8", sys.stdout.errors or "strict")
    except UnicodeEncodeError as e:
        raise _stdout_problem(e) from None
    except LookupError:  # an error handler or codec Python does not know: let print decide
        pass


def cmd_sample(args: argparse.Namespace) -> None:
    prime = _read_text(args.prime_file) if args.prime_file else args.prime
    vocab, model = _load(args)
    prime_ids = _encode(vocab, prime, args.prime_file or "--prime")
    _check_printable(prime + "".join(vocab.chars))
    out = sys.stdout
    out.write(prime)
    for i in generate(model, prime_ids, args.length, temperature=args.temperature,
                      top_k=args.top_k, seed=args.seed):
        out.write(vocab.chars[i])
        out.flush()
    out.write("\n")


def cmd_score(args: argparse.Namespace) -> None:
    text = _read_text(args.file)
    vocab, model = _load(args)
    ids = _encode(vocab, text, args.file)
    if len(ids) < 2:
        raise CharlabError(f"{args.file}: need at least 2 characters to score")
    s = score(model, ids.astype(np.int64))
    print(f"model       {args.model}\nfile        {args.file}\nchars       {s.count}\n"
          f"nll         {s.nll:.4f} nats/char\nbpc         {s.bpc:.4f}\n"
          f"perplexity  {s.perplexity:.3f}")


def _ngram_vocab(args: argparse.Namespace) -> Vocab:
    if not Path(args.vocab).is_file():
        raise CharlabError(f"{args.vocab}: no vocabulary file (run `dvc repro`, or --vocab)")
    return Vocab.load(args.vocab)


def _ngram_path(args: argparse.Namespace) -> Path:
    """The pipeline's n-gram table of ``--order`` (``ngram show`` and ``ngram export``)."""
    path = Path(args.ngram_dir) / f"ngram{args.order}{NGRAM_SUFFIX}"
    if not path.is_file():
        raise CharlabError(f"{path}: no n-gram model of order {args.order} "
                           "(add it to ngram.orders and run `dvc repro`)")
    return path


def cmd_ngram_show(args: argparse.Namespace) -> None:
    from charlab.ngram import NGramLM, format_distribution

    vocab = _ngram_vocab(args)
    _encode(vocab, args.history, "history")  # names any character outside the vocabulary
    model = NGramLM.load(_ngram_path(args), vocab)
    print(format_distribution(model, vocab.chars, args.history, top=args.top))


def cmd_ngram_export(args: argparse.Namespace) -> None:
    from charlab.arpa import ArpaExportError, tokens_path, write_arpa
    from charlab.io import check_output
    from charlab.ngram import NGramLM

    if Path(args.out).is_dir():
        raise CharlabError(f"{args.out}: is a directory; give the ARPA file's name")
    for out in (args.out, tokens_path(args.out)):
        check_output(out)  # a missing directory, a device or a FIFO: before any work
    vocab, path = _ngram_vocab(args), _ngram_path(args)
    model = NGramLM.load(path, vocab)  # refuses a table of another vocabulary
    if (args.smoothing or model.smoothing) == "addk":
        whose = "--smoothing addk" if args.smoothing else "the table's add-k smoothing " \
            "(ngram.smoothing)"
        raise ArpaExportError(f"{path}: {whose} is not a backoff model, so it has no ARPA "
                              "form; use --smoothing kn or mkn (Kneser-Ney on the same counts)")
    if args.smoothing is not None:
        model = model.with_smoothing(args.smoothing)
    try:
        side = write_arpa(model, vocab.chars, args.out)
    except ArpaExportError as e:
        raise ArpaExportError(f"{path}: {e}") from None
    print(f"wrote {args.out} (ARPA order {max(model.order + 1, 2)}, "
          f"smoothing {model.smoothing}) and {side}")


def cmd_info(args: argparse.Namespace) -> None:
    from charlab.checkpoint import load_checkpoint

    model, vocab, info = load_checkpoint(args.checkpoint, "cpu")
    cfg = model.config.to_dict()
    print(f"{'checkpoint':<15} {args.checkpoint}")
    for key in ("name", "step", "val_loss", "precision", "device"):
        if info.get(key) is not None:
            print(f"{key:<15} {info[key]}")
    print(f"{'params':<15} {model.num_params():,}\n{'vocab size':<15} {vocab.size}")
    for key, value in cfg.items():
        print(f"{key:<15} {value}")


def cmd_diff(args: argparse.Namespace) -> None:
    from charlab.compare import Bootstrap, IntervalError
    from charlab.intervals import check_block
    from charlab.revdiff import diff_table, format_diff, load_sides

    try:
        boot = Bootstrap(args.block, args.resamples, args.seed)
    except IntervalError as e:
        raise CharlabError(f"--{e}") from None
    a, b = load_sides(args.rev_a, args.rev_b)
    check_block(boot.block, a.scores.logprobs.shape[1], "--block")
    print(format_diff(a, b, diff_table(a, b, boot), boot))


def cmd_profile(args: argparse.Namespace) -> None:
    import shlex
    import subprocess

    from charlab.profiles import command

    argv = command(args.profile, args.params, tuple(args.dvc_args))
    print(shlex.join(argv), flush=True)
    if not args.dry_run:
        raise SystemExit(subprocess.run(argv, check=False).returncode)


def _add_model_args(p: argparse.ArgumentParser, *models: str) -> None:
    for name in models or ("model",):
        p.add_argument(name, help="ngram<order>, a train: key, or a .npz/.pt path")
    p.add_argument("--vocab", default=DEFAULT_VOCAB, help=f"(default {DEFAULT_VOCAB})")
    p.add_argument("--models-dir", default=DEFAULT_MODELS, help=f"(default {DEFAULT_MODELS})")
    p.add_argument("--ngram-dir", default=DEFAULT_NGRAMS, help=f"(default {DEFAULT_NGRAMS})")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="charlab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="stream a sample from a model to stdout")
    _add_model_args(p)
    prime = p.add_mutually_exclusive_group()
    prime.add_argument("--prime", default="", help="text to start from")
    prime.add_argument("--prime-file", help="read the prime text from this file")
    p.add_argument("--length", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("score", help="nll / bpc / perplexity of a text file under a model")
    _add_model_args(p)
    p.add_argument("file")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("compare", help="two models on a text file: bits/char per class of "
                       "character, and a page coloured by which model was better where")
    _add_model_args(p, "model_a", "model_b")
    p.add_argument("file", help="a UTF-8 text file")
    p.add_argument("--html", help="write the coloured page to this file")
    p.add_argument("--top", type=int, default=20, help="contexts listed per model (default 20)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("cells", help="what the units of a trained network track over a text "
                       "file (and an HTML page of them); networks whose family has units")
    _add_model_args(p)
    p.add_argument("file", help="a UTF-8 text file")
    p.add_argument("--html", help="write the page to this file")
    p.add_argument("--max-chars", type=int, default=20_000,
                   help="read at most this many characters (default 20000)")
    p.set_defaults(func=cmd_cells)

    p = sub.add_parser("ngram", help="inspect n-gram tables")
    ngram_sub = p.add_subparsers(dest="ngram_command", required=True)
    p = ngram_sub.add_parser("show", help="the next-character distribution after a history "
                             "(unsmoothed maximum likelihood, as in the lecture)")
    p.add_argument("history", help="the preceding characters, e.g. 'ello'")
    p.add_argument("--order", type=int, required=True)
    p.add_argument("--top", type=int, default=None, help="show only the N likeliest")
    p.add_argument("--vocab", default=DEFAULT_VOCAB, help=f"(default {DEFAULT_VOCAB})")
    p.add_argument("--ngram-dir", default=DEFAULT_NGRAMS, help=f"(default {DEFAULT_NGRAMS})")
    p.set_defaults(func=cmd_ngram_show)
    p = ngram_sub.add_parser("export", help="write the smoothed n-gram model in the ARPA "
                             "format (KenLM, SRILM), with <out>.tokens.json beside it")
    p.add_argument("out", help="the ARPA file to write, e.g. ngram4.arpa")
    p.add_argument("--order", type=int, required=True)
    p.add_argument("--smoothing", choices=["kn", "mkn", "addk"], default=None,
                   help="kn or mkn (default: the model's own; add-k has no ARPA form)")
    p.add_argument("--vocab", default=DEFAULT_VOCAB, help=f"(default {DEFAULT_VOCAB})")
    p.add_argument("--ngram-dir", default=DEFAULT_NGRAMS, help=f"(default {DEFAULT_NGRAMS})")
    p.set_defaults(func=cmd_ngram_export)

    p = sub.add_parser("profile", help="run a params profile (e.g. profiles/gpu.yaml) as one "
                       "`dvc exp run -S ...` experiment",
                       epilog="Arguments after -- go to dvc exp run, e.g. -- --queue -n gpu")
    p.add_argument("profile", help="a YAML file of the params keys to set or add")
    p.add_argument("--params", default="params.yaml", help="(default params.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the dvc command, run nothing")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("diff", help="each model's test nll at two revisions (commits, "
                       "branches, dvc experiments): the change B - A with its interval, and "
                       "whether it is real", epilog="Run in the project's directory; the "
                       "scores are read through DVC (its cache, or a remote).")
    p.add_argument("rev_a", help="revision A: a commit, branch, tag or experiment name")
    p.add_argument("rev_b", help="revision B (the change shown is B - A)")
    p.add_argument("--block", type=int, default=1000,
                   help="characters per resampled block (default 1000, docs/intervals.md)")
    p.add_argument("--resamples", type=int, default=2000, help="(default 2000)")
    p.add_argument("--seed", type=int, default=0, help="the resampling's seed (default 0)")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("info", help="what a trained checkpoint holds")
    p.add_argument("checkpoint", help="a .pt file written by the train stage")
    p.set_defaults(func=cmd_info)
    return ap


def _check_args(args: argparse.Namespace) -> None:
    """The numbers argparse accepts but sampling cannot use, as one `error:` line each."""
    if getattr(args, "length", 0) < 0:
        raise CharlabError(f"--length: must be >= 0, got {args.length}")
    if getattr(args, "top_k", None) is not None and args.top_k < 1:
        raise CharlabError(f"--top-k: must be >= 1, got {args.top_k}")
    temperature = getattr(args, "temperature", 0.0)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise CharlabError(f"--temperature: must be a finite number >= 0 (0 = greedy), got "
                           f"{temperature}")
    if not 0 <= getattr(args, "seed", 0) < 2**63:
        raise CharlabError(f"--seed: must be >= 0 and < 2**63, got {args.seed}")


def _same_codec(a: str | None, b: str | None) -> bool:
    try:
        return codecs.lookup(a or "").name == codecs.lookup(b or "").name
    except LookupError:
        return False


def _run(args: argparse.Namespace) -> None:
    _check_args(args)
    try:
        args.func(args)
    except UnicodeEncodeError as e:
        if not _same_codec(e.encoding, sys.stdout.encoding):
            raise  # not a print: a real bug, keep its traceback
        raise _stdout_problem(e) from None


def _fp32_gemms(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """On a GPU, score in true fp32 (cuDNN's RNN would otherwise take TF32): the numbers
    the evaluate stage reports. On the CPU nothing to do, and no torch import."""
    if getattr(args, "device", "cpu") == "cpu":
        return contextlib.nullcontext()
    from charlab.runtime import FP32, float32_gemms

    return float32_gemms(FP32)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    # `charlab profile FILE -- --queue`: what follows -- is dvc's
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(extra) - (1 if "--" in argv else 0)])
    if extra and args.command != "profile":
        parser.error("arguments after -- are for charlab profile only")
    args.dvc_args = extra
    for flag in ("top", "max_chars"):  # `ngram show --top` may be None: all of them
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    try:
        with _fp32_gemms(args):
            run_main(lambda: _run(args))
        sys.stdout.flush()  # inside the try: a reader gone at the last write is caught too
    except BrokenPipeError:
        # The reader closed the pipe (`charlab sample ... | head`): stop quietly. Python
        # ignores SIGPIPE, so the write raised instead; point stdout at devnull so that
        # flushing it again at exit raises nothing (the recipe of Python's signal docs),
        # and exit as a program killed by SIGPIPE does (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(141) from None


if __name__ == "__main__":
    main()
