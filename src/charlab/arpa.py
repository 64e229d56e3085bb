"""Export a character n-gram model in the ARPA backoff format (KenLM, SRILM and others read it).

An order-``n`` model (history of ``n`` chars) is an ARPA model of order ``n + 1`` (order 0:
a 2-gram file with an empty 2-gram section, since KenLM reads no unigram-only file).
Interpolated Kneser-Ney (``kn``, ``mkn``) is exactly a backoff model
(:meth:`NGramLM.backoff_levels`):

* every window the model stores is an n-gram whose log10 probability is its full
  interpolated probability, so a reader that finds it needs nothing else;
* the backoff weight of a history is its interpolation weight gamma(h): an n-gram the model
  did not see gets gamma(h) * p(w | shorter history), as in the interpolation; a history
  with no continuations backs off with weight 1 (log10 0);
* level 0 lists every vocabulary character, an unseen one with gamma(empty) / V.

``<s>`` stands for the pad history before the text starts: ``<s> a b`` is the window whose
history is ``a``, then pads. A reader scores with ``<s>`` as the first context (KenLM's
``bos=True``); after ``n`` characters no pad is left in the history. ``<s>``, ``</s>`` and
``<unk>`` have log10 probability -99 (charlab never predicts them: it has no end-of-text
symbol and refuses characters outside the vocabulary). ``-99`` also stands for log10 0.
Values are written with 7 decimals (KenLM keeps them as 32-bit floats).

Add-k is not a backoff model (no lower order to back off to), so it is refused.

Tokens: a character is its own token unless ARPA cannot hold it: whitespace and other
characters that are not printable get the tokens in :data:`NAMED` or ``<U+XXXX>`` (its code
point, upper-case hex, at least 4 digits). A single character never equals a token of
several, so no token collides with another or with ``<s>``, ``</s>``, ``<unk>``. The
mapping is also written beside the model as ``<out>.tokens.json``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from charlab.errors import CharlabError
from charlab.io import atomic_paths, json_text
from charlab.ngram import BackoffLevel, NGramLM

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NAMED = {" ": "<sp>", "\n": "<nl>", "\t": "<tab>", "\r": "<cr>"}
LOG10_ZERO = -99.0
TOKENS_SUFFIX = ".tokens.json"
_LN10 = math.log(10)


class ArpaExportError(CharlabError, ValueError):
    """The model cannot be written as an ARPA backoff model."""


def char_token(c: str) -> str:
    """The ARPA token of one character (see the module docstring)."""
    if len(c) != 1:
        raise ValueError(f"not a single character: {c!r}")
    if c in NAMED:
        return NAMED[c]
    if c.isspace() or not c.isprintable():
        return f"<U+{ord(c):04X}>"
    return c


def token_table(chars: Sequence[str]) -> dict[str, str]:
    """Every vocabulary character -> its ARPA token."""
    return {c: char_token(c) for c in chars}


def tokens_path(path: str | os.PathLike) -> Path:
    """``<out>.tokens.json`` for the ARPA file ``out``."""
    return Path(f"{os.fspath(path)}{TOKENS_SUFFIX}")


def tokenize(text: str, tokens: dict[str, str]) -> str:
    """``text`` as the space-separated ARPA tokens a reader scores."""
    try:
        return " ".join([tokens[c] for c in text])
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} has no ARPA token in this table") from None


def _fmt(x: float) -> str:
    """log10 value: -99 for log 0, never positive (rounding of p = 1), never "-0"."""
    if x <= LOG10_ZERO:
        return "-99"
    s = f"{min(x, 0.0):.7f}"
    return "0" if float(s) == 0 else s  # KenLM reads -0.0 as "this n-gram never extends"


def _check(model: NGramLM, chars: Sequence[str]) -> None:
    if model.smoothing == "addk":
        raise ArpaExportError(
            "add-k smoothing is not a backoff model, so it has no ARPA form: export with "
            "smoothing kn (interpolated Kneser-Ney) or mkn (modified Kneser-Ney)")
    if len(chars) != model.vocab_size:
        raise ArpaExportError(f"the model has {model.vocab_size} characters, the vocabulary "
                              f"has {len(chars)}")


def write_arpa(model: NGramLM, chars: Sequence[str], path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` in the ARPA format, and its tokens to ``<path>.tokens.json``.

    ``chars`` maps ids to characters (``Vocab.chars``). Both files are written atomically,
    together. Returns the tokens file's path.
    """
    _check(model, chars)
    table = token_table(chars)
    tok = [table[c] for c in chars]
    levels = model.backoff_levels()
    padded = _padded(levels, model.vocab_size)
    # Which rows are plain n-grams: a history reaching the text start is an "<s> ..." one.
    real = [np.ones(len(lv.log_prob), dtype=bool) if level == 0 else
            lv.windows[:, level] != model.vocab_size for level, lv in enumerate(levels)]
    counts = [int(np.count_nonzero(r)) for r in real]
    counts[0] += 3  # <unk>, <s>, </s>
    for gram in padded:
        counts[len(gram)] += 1
    if model.order == 0:  # KenLM reads no unigram-only file; an empty 2-gram section is
        counts.append(0)  # the same model
    # <s> backs off with the product of the gammas of the all-pad histories of 1..n chars.
    bos = sum(lv.pad_log_backoff for lv in levels) / _LN10
    side = tokens_path(path)
    with atomic_paths(path, side) as (tmp, tmp_side):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write("\\data\\\n")
            f.writelines(f"ngram {order}={c}\n" for order, c in enumerate(counts, start=1))
            for order in range(1, len(counts) + 1):
                f.write(f"\n\\{order}-grams:\n")
                if order > len(levels):
                    continue
                grams = _grams(levels[order - 1], real[order - 1], order - 1, tok, padded,
                               bos)
                if order == len(counts):  # the highest order has no backoff weights
                    f.writelines(f"{_fmt(p)}\t{g}\n" for g, p, _ in grams)
                else:
                    f.writelines(f"{_fmt(p)}\t{g}\t{_fmt(b)}\n" for g, p, b in grams)
            f.write("\n\\end\\\n")
        Path(tmp_side).write_text(json_text(table), encoding="utf-8")
    return side


def _padded(levels: list[BackoffLevel], pad: int) -> dict[tuple[int, ...], list[float]]:
    """The "<s> c0 .. ck" n-grams: chars c0..ck -> [log10 p, log10 backoff].

    A window whose history reaches the text start (j >= 1 pads, then c0..ck) is the ARPA
    n-gram "<s> c0 .. ck": its probability is that of the top-level window (n - k pads: what
    a reader's <s> context stands for), its backoff the product of the gammas of its forms
    with fewer pads, read as histories. They are the train split's first n windows per
    level, so this loop is short.
    """
    n = len(levels) - 1
    out: dict[tuple[int, ...], list[float]] = {}
    for level, lv in enumerate(levels[1:], start=1):
        for row in np.flatnonzero(lv.windows[:, level] == pad).tolist():
            gram = tuple(int(i) for i in lv.windows[row, ::-1] if i != pad)  # c0 .. ck
            entry = out.setdefault(gram, [math.nan, 0.0])
            if level == n:
                entry[0] = float(lv.log_prob[row]) / _LN10
            else:
                entry[1] += float(lv.log_backoff[row]) / _LN10
    for gram, (p, _) in out.items():
        if math.isnan(p):  # every padded window has its top-level form
            raise AssertionError(f"padded window {gram} has no top-level form")
    return out


def _grams(lv: BackoffLevel, real: np.ndarray, level: int, tok: list[str],
           padded: dict[tuple[int, ...], list[float]], bos: float
           ) -> Iterator[tuple[str, float, float]]:
    """(n-gram text, log10 p, log10 backoff) of ARPA order ``level + 1``; ``bos``: the
    log10 backoff of <s>."""
    if level == 0:
        yield from ((UNK, LOG10_ZERO, 0.0), (BOS, LOG10_ZERO, bos), (EOS, LOG10_ZERO, 0.0))
    cols = list(range(level, 0, -1)) + [0]  # oldest history char first, target last
    rows = lv.windows[real][:, cols]
    lp, lb = lv.log_prob[real] / _LN10, lv.log_backoff[real] / _LN10
    for start in range(0, len(rows), 1 << 16):  # bounded temporaries: lists of one block
        stop = start + (1 << 16)
        for g, p, b in zip(rows[start:stop].tolist(), lp[start:stop].tolist(),
                           lb[start:stop].tolist(), strict=True):
            yield " ".join([tok[i] for i in g]), p, b
    for gram, (p, b) in padded.items():
        if len(gram) == level:
            yield " ".join([BOS] + [tok[i] for i in gram]), p, b
