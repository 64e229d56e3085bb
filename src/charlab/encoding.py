"""Vocabulary, corpus encoding and the train/val/test split.

The corpus is encoded once into a flat integer file (like nanoGPT's ``train.bin``) that
training and scoring memory-map; ``split.json`` records where each split lies in it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from charlab.errors import CharlabError
from charlab.io import atomic_paths, json_text, read_json, write_json

SPLITS = ("train", "val", "test")
# A UTF-8 byte-order mark (U+FEFF) at the very start of a text is a marker written by some
# editors, not a character of the text: encode and the CLI drop one there. Anywhere else it
# is kept (it is then a zero-width no-break space).
BOM = "\ufeff"


def strip_bom(text: str) -> str:
    """``text`` without a leading byte-order mark (only one, only at the start)."""
    return text[1:] if text.startswith(BOM) else text


class VocabError(CharlabError, ValueError):
    """Text holds characters the vocabulary does not know."""


class CorpusError(CharlabError, ValueError):
    """The corpus cannot be encoded (bad UTF-8, empty, too short)."""


class VocabFileError(CharlabError, ValueError):
    """A vocabulary file is missing, damaged, or not one charlab wrote."""


_JSON_KIND = {list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true/false", type(None): "null"}


def _vocab_chars(obj: object) -> tuple[str, ...]:
    """The characters of a vocabulary file's JSON; ValueError saying what is wrong."""
    if not isinstance(obj, dict) or not isinstance(obj.get("chars"), list):
        raise ValueError('expected an object {"chars": [one character per id, ...]}, got '
                         + (f"keys {', '.join(map(repr, list(obj)[:5]))}"
                            if isinstance(obj, dict) else _JSON_KIND.get(type(obj), "?")))
    chars = obj["chars"]
    for i, c in enumerate(chars):
        if not isinstance(c, str) or len(c) != 1 or 0xD800 <= ord(c) < 0xE000:
            raise ValueError(f"chars[{i}]: expected one character, got {c!r}")
        if i and c <= chars[i - 1]:
            raise ValueError(f"chars[{i}]: {c!r} after {chars[i - 1]!r}: the characters must be "
                             "distinct and sorted by code point")
    return tuple(chars)


def _show(chars: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in chars)


@dataclass(frozen=True)
class Vocab:
    """Every distinct character of a corpus, sorted by code point; id = position."""

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        if list(self.chars) != sorted(set(self.chars)):
            raise ValueError("vocab characters must be distinct and sorted by code point")
        object.__setattr__(self, "_stoi", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned integer type that holds every id."""
        for dt in (np.uint8, np.uint16, np.uint32):
            if self.size <= np.iinfo(dt).max + 1:
                return np.dtype(dt)
        raise ValueError(f"vocabulary of {self.size} characters is too large")

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` outside the vocabulary, in order of first appearance."""
        if set(text) <= self._stoi.keys():  # the common case, without a loop per character
            return []
        return list(dict.fromkeys(c for c in text if c not in self._stoi))

    def encode(self, text: str) -> np.ndarray:
        missing = self.unknown(text)
        if missing:
            shown = _show(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise VocabError(
                f"{len(missing)} character(s) not in the vocabulary of {self.size}: {shown}"
            )
        if self.size <= 256 and all(ord(c) < 256 for c in self.chars):
            # Fast path: a byte lookup table instead of a Python loop per character.
            table = np.zeros(256, dtype=self.dtype)
            table[[ord(c) for c in self.chars]] = np.arange(self.size, dtype=self.dtype)
            return table[np.frombuffer(text.encode("latin-1"), dtype=np.uint8)]
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        points = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        return np.searchsorted(points, codes).astype(self.dtype)

    def difference(self, other: Vocab, show: int = 5) -> str:
        """``; only in the corpus (self): ...; only in the model (other): ...``, or ""."""
        out = ""
        for label, chars in (("only in the corpus", set(self.chars) - set(other.chars)),
                             ("only in the model", set(other.chars) - set(self.chars))):
            if chars:
                listed = ", ".join(repr(c) for c in sorted(chars)[:show])
                out += f"; {label}: {listed}" + (" ..." if len(chars) > show else "")
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"chars": list(self.chars)}

    @classmethod
    def from_json(cls, obj: dict) -> Vocab:
        try:
            return cls(_vocab_chars(obj))
        except ValueError as e:
            raise VocabFileError(f"not a charlab vocabulary: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a vocab.json; a missing, damaged or foreign file is one :class:`VocabFileError`
        naming it (every command and stage reads the vocabulary through here)."""
        try:
            obj = read_json(path)
        except FileNotFoundError:
            raise VocabFileError(f"{path}: no vocabulary file (run `dvc repro`)") from None
        except UnicodeDecodeError as e:
            raise VocabFileError(f"{path}: not a charlab vocabulary: not UTF-8 (byte offset "
                                 f"{e.start})") from None
        except json.JSONDecodeError as e:
            raise VocabFileError(f"{path}: not a charlab vocabulary: not JSON ({e.msg} at line "
                                 f"{e.lineno}, column {e.colno})") from None
        except OSError as e:
            raise VocabFileError(f"{path}: cannot read: {e.strerror}") from None
        try:
            return cls(_vocab_chars(obj))
        except ValueError as e:
            raise VocabFileError(f"{path}: not a charlab vocabulary: {e}") from None


@dataclass(frozen=True)
class Manifest:
    """Where each split lies in the encoded corpus, and what the corpus was."""

    n_chars: int
    dtype: str
    sha256: str
    splits: dict[str, tuple[int, int]]

    def to_json(self) -> dict:
        return {"n_chars": self.n_chars, "dtype": self.dtype, "sha256": self.sha256,
                "splits": {k: {"start": a, "end": b} for k, (a, b) in self.splits.items()}}

    @classmethod
    def from_json(cls, obj: dict) -> Manifest:
        splits = {k: (int(v["start"]), int(v["end"])) for k, v in obj["splits"].items()}
        return cls(int(obj["n_chars"]), str(obj["dtype"]), str(obj["sha256"]), splits)


def decode_utf8(data: bytes, source: str = "corpus") -> str:
    """Decode ``data`` as UTF-8, naming the 0-based byte offset of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _utf8_error(source, e, offset=e.start) from None


def _utf8_error(source: object, e: UnicodeDecodeError, offset: int) -> CorpusError:
    bad = e.object[e.start:e.end].hex()
    return CorpusError(f"{source} is not valid UTF-8: byte offset {offset} (0x{bad}): {e.reason}")


def split_bounds(n: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Contiguous train | val | test ranges; val and test are the last fractions."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
              "test": (n_train + n_val, n)}
    for name, (a, b) in bounds.items():
        if b - a < 2:
            raise CorpusError(
                f"corpus of {n} characters leaves the {name} split only {b - a} character(s); "
                "need at least 2 per split (use a longer corpus or larger fractions)"
            )
    return bounds


CHUNK_BYTES = 1 << 24  # 16 MiB: encode holds one chunk of text, never the whole corpus


def _text_chunks(path: Path, chunk_bytes: int, digest=None) -> Iterator[str]:
    """Decode a UTF-8 file chunk by chunk, naming the file's byte offset of a bad byte;
    ``digest`` (a hashlib object), when given, sees every raw byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the file fed to the decoder so far
    at_start = True  # no character yielded yet: a BOM here is dropped
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk_bytes)
            if digest is not None:
                digest.update(data)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                raise _utf8_error(path, e, offset=offset - pending + e.start) from None
            offset += len(data)
            if text and at_start:
                at_start = False
                text = strip_bom(text)
            if text:
                yield text
            if not data:
                return


def encode_corpus(text_path: str | os.PathLike, vocab_path: str | os.PathLike,
                  tokens_path: str | os.PathLike, split_path: str | os.PathLike, *,
                  val_fraction: float, test_fraction: float,
                  chunk_bytes: int = CHUNK_BYTES) -> Manifest:
    """Encode a UTF-8 text file into vocab.json, a flat id file and split.json.

    Two streaming passes (vocabulary and hash, then ids), so memory stays at one chunk
    whatever the corpus size.
    """
    text_path = Path(text_path)
    chars: set[str] = set()
    n_chars = 0
    digest = hashlib.sha256()
    first = ""
    for text in tqdm(_text_chunks(text_path, chunk_bytes, digest), desc="encode: scan",
                     unit="chunk", leave=False, disable=None):
        chars.update(text)
        n_chars += len(text)
        first = first or text[0]
    if not n_chars:
        raise CorpusError(f"{text_path} is empty")
    if len(chars) < 2:
        raise CorpusError(
            f"{text_path} holds a single distinct character ({first!r}, {n_chars} times): "
            "there is nothing for a language model to predict; use a real text corpus"
        )
    bounds = split_bounds(n_chars, val_fraction, test_fraction)
    vocab = Vocab(tuple(sorted(chars)))
    manifest = Manifest(n_chars=n_chars, dtype=vocab.dtype.name, sha256=digest.hexdigest(),
                        splits=bounds)
    # All three or none: a failed write (disk full) leaves the previous set as it was.
    with atomic_paths(tokens_path, vocab_path, split_path) as (tokens, vocab_tmp, split):
        with open(tokens, "wb") as f:
            for text in tqdm(_text_chunks(text_path, chunk_bytes), desc="encode: write",
                             unit="chunk", leave=False, disable=None):
                f.write(np.ascontiguousarray(vocab.encode(text)).data)
        vocab_tmp.write_text(json_text(vocab.to_json()), encoding="utf-8")
        split.write_text(json_text(manifest.to_json()), encoding="utf-8")
    return manifest


class IdFile:
    """A range of a flat id file, read with ``os.pread``: nothing of it is mapped into or
    cached by this process, so a pass over a corpus larger than memory stays small. (Reading
    a memory map in many places at once, as training's parallel streams do, made resident a
    2 MiB page-cache folio per stream on this project's kernel.)"""

    def __init__(self, path: str | os.PathLike, dtype: np.dtype, start: int, stop: int) -> None:
        self.path, self.dtype = Path(path), np.dtype(dtype)
        self.start, self.stop = start, stop
        self._fd = -1  # so that __del__ works if open fails
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.stop - self.start

    def read(self, start: int, count: int) -> np.ndarray:
        """Ids ``start .. start + count`` of the range."""
        if start < 0 or start + count > len(self):
            raise IndexError(f"ids {start}..{start + count} outside 0..{len(self)}")
        size = self.dtype.itemsize
        data = os.pread(self._fd, count * size, (self.start + start) * size)
        if len(data) != count * size:
            raise CorpusError(f"{self.path}: shorter than its manifest says (truncated?)")
        return np.frombuffer(data, dtype=self.dtype)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus: vocabulary, memory-mapped ids, and its split manifest."""

    vocab: Vocab
    ids: np.ndarray
    manifest: Manifest
    tokens_path: Path | None = None  # the id file, where there is one

    @classmethod
    def load(cls, vocab_path: str | os.PathLike, tokens_path: str | os.PathLike,
             split_path: str | os.PathLike) -> Corpus:
        vocab = Vocab.load(vocab_path)
        manifest = Manifest.from_json(read_json(split_path))
        ids = np.memmap(tokens_path, dtype=np.dtype(manifest.dtype), mode="r")
        if len(ids) != manifest.n_chars:
            raise CorpusError(
                f"{tokens_path} holds {len(ids)} ids but {split_path} says {manifest.n_chars}"
            )
        return cls(vocab, ids, manifest, Path(tokens_path))

    def split(self, name: str) -> np.ndarray:
        if name not in self.manifest.splits:
            raise KeyError(f"unknown split {name!r}; known: {', '.join(self.manifest.splits)}")
        a, b = self.manifest.splits[name]
        return self.ids[a:b]

    def split_file(self, name: str) -> IdFile | np.ndarray:
        """A split to read piece by piece: an :class:`IdFile` when the ids are on disk."""
        if self.tokens_path is None:
            return self.split(name)
        a, b = self.manifest.splits[name]
        return IdFile(self.tokens_path, self.ids.dtype, a, b)
