"""The n-gram file: an uncompressed ``.npz`` (zip of ``.npy`` arrays).

Per level one sorted int64 key array and one count array, plus a small header and the
vocabulary the ids stand for (its characters' code points, ``vocab``), which :func:`load`
checks against the corpus's: a table counted on another vocabulary of the same size is
refused, not used. Raw arrays load with a ``read`` each, no decompression and no pickle
(loaded with ``allow_pickle=False``), and the sorted keys are exactly the in-memory search
structure, so a loaded model is usable at once. Derived statistics are not stored: they are
cheap to rebuild and would double the file.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from charlab.encoding import Vocab
from charlab.errors import CharlabError
from charlab.io import atomic_path
from charlab.ngram.tables import key_bound

if TYPE_CHECKING:
    from charlab.ngram.ngramlm import NGramLM

FORMAT = "charlab-ngram"
VERSION = 2  # 2: the file holds its vocabulary (version 1 held only its size)


class NGramFileError(CharlabError, ValueError):
    """A file is not a (complete, uncorrupted) charlab n-gram model."""


def save(model: NGramLM, path: str | os.PathLike, vocab: Vocab) -> None:
    """Write ``model`` atomically (the old file or the new one, never half), with ``vocab``,
    the characters the ids stand for."""
    if vocab.size != model.vocab_size:
        raise ValueError(f"a vocabulary of {vocab.size} for a model of {model.vocab_size}")
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION, dtype=np.int64),
        "vocab": np.array([ord(c) for c in vocab.chars], dtype=np.uint32),
        "meta": np.array([model.vocab_size, model.order, model.n_chars], dtype=np.int64),
        "smoothing": np.array(model.smoothing),
        "add_k": np.array(model.add_k, dtype=np.float64),
        "discount": np.atleast_1d(np.array(
            [] if model.discount is None else model.discount, dtype=np.float64)),
    }
    for level in range(model.order + 1):
        arrays[f"keys_{level}"] = model.tables.keys(level)
        arrays[f"counts_{level}"] = model.tables.counts(level)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # a file object: savez would append .npz to a name


def load(make: Callable[..., NGramLM], path: str | os.PathLike, vocab: Vocab) -> NGramLM:
    """Read a file written by :func:`save` and build the model with ``make`` (the class);
    :class:`NGramFileError` if it is not one, or if it was counted on another vocabulary
    than ``vocab``."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise NGramFileError(f"{path}: not a readable charlab n-gram file ({e})") from None
    return _from_arrays(make, arrays, str(path), vocab)


def _from_arrays(make: Callable[..., NGramLM], arrays: dict[str, np.ndarray], where: str,
                 vocab: Vocab) -> NGramLM:
    def bad(why: str) -> NGramFileError:
        return NGramFileError(f"{where}: not a valid charlab n-gram file: {why}")

    try:
        version = int(arrays["version"]) if str(arrays["format"]) == FORMAT else None
    except (KeyError, ValueError, TypeError):
        version = None
    if version is not None and version < VERSION:
        raise NGramFileError(f"{where}: n-gram file format version {version}, which does "
                             f"not record its vocabulary; this charlab reads version "
                             f"{VERSION}: rerun `dvc repro` to rebuild it")
    try:
        if version != VERSION:
            raise ValueError(f"header is not {FORMAT!r} version {VERSION}")
        stored = _stored_vocab(arrays["vocab"])
        vocab_size, order, n_chars = (int(x) for x in arrays["meta"])
        keys = [arrays[f"keys_{lv}"] for lv in range(order + 1)]
        counts = [arrays[f"counts_{lv}"] for lv in range(order + 1)]
        smoothing = str(arrays["smoothing"])
        add_k = float(arrays["add_k"])
        disc_arr = arrays["discount"]
    except (KeyError, ValueError, TypeError) as e:
        raise bad(f"missing or malformed field ({e})") from None
    if len(stored) != vocab_size:
        raise bad(f"vocabulary of {len(stored)} characters for a model of {vocab_size}")
    if stored != vocab:
        raise NGramFileError(
            f"{where}: counted on a different vocabulary ({stored.size} chars) than this "
            f"corpus ({vocab.size} chars{vocab.difference(stored)}); rebuild it "
            "(`dvc repro`)")
    discount = None if disc_arr.size == 0 else (
        float(disc_arr[0]) if disc_arr.size == 1 else [float(d) for d in disc_arr])
    _validate_tables(keys, counts, vocab_size, order, n_chars, bad)
    try:
        return make(vocab_size, order, keys, counts, smoothing=smoothing, add_k=add_k,
                    discount=discount)
    except ValueError as e:
        raise bad(str(e)) from None


def _stored_vocab(codes: np.ndarray) -> Vocab:
    """The :class:`Vocab` a file's ``vocab`` array of code points stands for."""
    if codes.ndim != 1 or codes.dtype != np.uint32:
        raise ValueError(f"vocab is not a 1-d uint32 array ({codes.dtype}, {codes.shape})")
    if len(codes) and (int(codes.max()) > 0x10FFFF or np.any(np.diff(codes.astype(np.int64)) <= 0)):
        raise ValueError("vocab is not a sorted list of distinct code points")
    return Vocab(tuple(map(chr, codes.tolist())))


def _validate_tables(keys: list[np.ndarray], counts: list[np.ndarray], vocab_size: int,
                     order: int, n_chars: int, bad: Any) -> None:
    if vocab_size < 1 or order < 0:
        raise bad(f"vocab_size {vocab_size}, order {order}")
    for level, (k, c) in enumerate(zip(keys, counts, strict=True)):
        if k.ndim != 1 or c.shape != k.shape or k.dtype != np.int64 or \
                not np.issubdtype(c.dtype, np.integer):
            raise bad(f"level {level}: keys/counts arrays of the wrong shape or type")
        if len(k) == 0 or np.any(k[1:] <= k[:-1]) or np.any(c <= 0) or k[0] < 0:
            raise bad(f"level {level}: keys not strictly increasing or counts not positive")
        rows_below = len(keys[level - 1]) if level else 0
        if k[-1] >= key_bound(vocab_size, order, level, rows_below):
            raise bad(f"level {level}: key out of range")
    # Every position has one window per level, so each level's counts add up to the text.
    if any(int(c.sum(dtype=np.int64)) != n_chars for c in counts):
        raise bad("counts do not add up to the recorded number of characters")
