import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_text
from helpers import edit_params, one_line_error, run_stage, snapshot

from charlab.encoding import (
    Corpus,
    CorpusError,
    IdFile,
    Vocab,
    VocabError,
    VocabFileError,
    decode_utf8,
    encode_corpus,
    split_bounds,
    strip_bom,
)
from charlab.errors import CharlabError
from charlab.io import drop_mapped_pages


@pytest.mark.parametrize("text", ["hello world", "naïve café ☃", "a", "\n\t  \r"])
def test_vocab_round_trip(text):
    v = Vocab.from_text(text)
    assert v.decode(v.encode(text)) == text
    assert list(v.chars) == sorted(set(text))


def test_vocab_sorted_by_code_point_and_ids():
    v = Vocab.from_text("cab\n")
    assert v.chars == ("\n", "a", "b", "c")
    np.testing.assert_array_equal(v.encode("abc\n"), [1, 2, 3, 0])


@pytest.mark.parametrize("n,dtype", [(65, "uint8"), (256, "uint8"), (257, "uint16"),
                                      (70_000, "uint32")])
def test_vocab_dtype_widens(n, dtype):
    points = (c for c in range(0x100, 0x30000) if not 0xD800 <= c < 0xE000)  # no surrogates
    chars = "".join(chr(c) for _, c in zip(range(n), points, strict=False))
    v = Vocab.from_text(chars)
    assert v.dtype.name == dtype
    ids = v.encode(chars)
    assert ids.dtype.name == dtype and ids[-1] == n - 1
    assert v.decode(ids) == chars


def test_vocab_unknown_characters_named():
    v = Vocab.from_text("abc")
    with pytest.raises(VocabError, match=r"2 character\(s\) not in the vocabulary.*'x', 'é'"):
        v.encode("abxé")


def test_vocab_json_round_trip(tmp_path):
    v = Vocab.from_text("to be or not")
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == v


def test_vocab_rejects_unsorted():
    with pytest.raises(ValueError, match="sorted"):
        Vocab(("b", "a"))


def test_bad_utf8_names_byte_offset():
    with pytest.raises(CorpusError, match=r"byte offset 6 \(0xff\)"):
        decode_utf8("héllo".encode() + b"\xff tail", source="x.txt")


def test_split_bounds_contiguous():
    b = split_bounds(1000, 0.05, 0.05)
    assert b == {"train": (0, 900), "val": (900, 950), "test": (950, 1000)}


def test_split_bounds_too_small():
    with pytest.raises(CorpusError, match="val split only 1"):
        split_bounds(20, 0.05, 0.05)


def test_encode_corpus_files(tmp_path, small_text):
    src = tmp_path / "c.txt"
    src.write_text(small_text, encoding="utf-8")
    paths = [tmp_path / "out" / n for n in ("vocab.json", "corpus.bin", "split.json")]
    m = encode_corpus(src, *paths, val_fraction=0.1, test_fraction=0.05)
    manifest = json.loads(paths[2].read_text())
    assert manifest["n_chars"] == len(small_text) == m.n_chars
    assert manifest["splits"]["test"]["end"] == len(small_text)
    assert len(manifest["sha256"]) == 64
    c = Corpus.load(*paths)
    assert c.vocab.decode(c.ids) == small_text
    train, val, test = (c.split(s) for s in ("train", "val", "test"))
    assert len(train) + len(val) + len(test) == len(small_text)
    assert c.vocab.decode(test) == small_text[-len(test):]
    assert isinstance(c.ids, np.memmap)
    # nothing but the three outputs (no temp files) is left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


@pytest.mark.parametrize("data,match", [(b"", "is empty"), (b"ok\xc3(", "byte offset 2")])
def test_encode_corpus_bad_input(tmp_path, data, match):
    src = tmp_path / "c.txt"
    src.write_bytes(data)
    paths = [tmp_path / n for n in ("v.json", "c.bin", "s.json")]
    with pytest.raises(CorpusError, match=match):
        encode_corpus(src, *paths, val_fraction=0.05, test_fraction=0.05)
    assert not any(p.exists() for p in paths)


def test_corpus_length_mismatch(tmp_path, small_text):
    src = tmp_path / "c.txt"
    src.write_text(small_text)
    paths = [tmp_path / n for n in ("v.json", "c.bin", "s.json")]
    encode_corpus(src, *paths, val_fraction=0.1, test_fraction=0.1)
    paths[1].write_bytes(paths[1].read_bytes()[:-5])
    with pytest.raises(CorpusError, match="holds 19995 ids"):
        Corpus.load(*paths)


def test_real_corpus_vocab(tmp_path, shakespeare):
    paths = [tmp_path / n for n in ("v.json", "c.bin", "s.json")]
    m = encode_corpus(shakespeare, *paths, val_fraction=0.05, test_fraction=0.05)
    assert m.n_chars == 1_115_394
    assert Vocab.load(paths[0]).size == 65
    assert m.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert m.splits["train"] == (0, 1_003_854)


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 1 << 20])
def test_encode_corpus_streams_in_chunks(tmp_path, chunk_bytes):
    # multi-byte characters straddle chunk boundaries when chunks are tiny
    text = "naïve ☃ café — " * 40
    src = tmp_path / "c.txt"
    src.write_text(text, encoding="utf-8")
    paths = [tmp_path / n for n in ("v.json", "c.bin", "s.json")]
    m = encode_corpus(src, *paths, val_fraction=0.1, test_fraction=0.1, chunk_bytes=chunk_bytes)
    c = Corpus.load(*paths)
    assert c.vocab.decode(c.ids) == text and m.n_chars == len(text)
    assert m.sha256 == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("chunk_bytes", [2, 5, 1 << 20])
def test_bad_byte_offset_in_a_later_chunk(tmp_path, chunk_bytes):
    data = "ab☃cd".encode() * 3 + b"\xff" + b"tail"
    src = tmp_path / "c.txt"
    src.write_bytes(data)
    paths = [tmp_path / n for n in ("v.json", "c.bin", "s.json")]
    bad = data.index(b"\xff")
    with pytest.raises(CorpusError, match=rf"byte offset {bad} \(0xff\)"):
        encode_corpus(src, *paths, val_fraction=0.1, test_fraction=0.1, chunk_bytes=chunk_bytes)


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_drop_mapped_pages_shrinks_the_resident_set(tmp_path):
    path = tmp_path / "ids.bin"
    np.ones(32 << 20, dtype=np.uint8).tofile(path)
    ids = np.memmap(path, dtype=np.uint8, mode="r")[1:]  # a slice, as Corpus.split gives
    assert int(ids.sum()) == (32 << 20) - 1  # reads, so maps, every page
    before = _rss_file_kib()
    drop_mapped_pages(ids)
    assert before - _rss_file_kib() > 24 << 10  # most of the 32 MiB left the resident set
    assert int(ids[-1]) == 1  # and the data reads again


def test_drop_mapped_pages_leaves_plain_arrays_alone():
    a = np.arange(10)
    drop_mapped_pages(a)
    assert a.tolist() == list(range(10))


def test_id_file_reads_a_range_by_position(tmp_path):
    path = tmp_path / "ids.bin"
    np.arange(100, dtype=np.uint16).tofile(path)
    f = IdFile(path, np.uint16, 10, 60)
    assert len(f) == 50
    assert f.read(0, 3).tolist() == [10, 11, 12]
    assert f.read(47, 3).tolist() == [57, 58, 59]
    with pytest.raises(IndexError, match="outside 0..50"):
        f.read(48, 3)
    path.write_bytes(path.read_bytes()[:100])  # truncated behind our back: 50 ids left
    with pytest.raises(CorpusError, match="shorter than its manifest"):
        f.read(45, 5)
    f.close()


# --- damaged or foreign vocabulary files: one error naming the file (issue 12) ------------

@pytest.mark.parametrize("data,message", [
    (b'{"chars": ["a", "b"', r"not JSON \(Expecting ',' delimiter at line 1, column 20\)"),
    (b"", r"not JSON \(Expecting value at line 1, column 1\)"),
    (b'{"chars": ["\xff"]}', r"not UTF-8 \(byte offset 12\)"),
    (b'["a", "b"]', r'expected an object \{"chars": \[one character per id, \.\.\.\]\}, got an '
                    r"array$"),
    (b'{"vocab": ["a", "b"]}', r"expected an object .*, got keys 'vocab'$"),
    (b'{"chars": "ab"}', r"expected an object .*, got keys 'chars'$"),
    (b'{"chars": ["a", "bc"]}', r"chars\[1\]: expected one character, got 'bc'$"),
    (b'{"chars": ["a", 5]}', r"chars\[1\]: expected one character, got 5$"),
    (b'{"chars": ["b", "a"]}', r"chars\[1\]: 'a' after 'b': the characters must be distinct and "
                               r"sorted by code point$"),
    (b'{"chars": ["a", "a"]}', r"chars\[1\]: 'a' after 'a'"),
    (b'{"chars": ["a", "\\ud800"]}', r"chars\[1\]: expected one character, got '\\ud800'$"),
], ids=["cut", "empty", "not-utf8", "array", "foreign-object", "chars-string",
        "two-char-entry", "number-entry", "unsorted", "repeated", "lone-surrogate"])
def test_damaged_or_foreign_vocab_file_is_one_error_naming_it(tmp_path, data, message):
    path = tmp_path / "vocab.json"
    path.write_bytes(data)
    with pytest.raises(VocabFileError) as e:
        Vocab.load(path)
    assert re.search(r"^" + re.escape(str(path)) + r": ", str(e.value)), str(e.value)
    assert re.search(message, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, CharlabError)  # run_main prints it as one `error:` line


def test_missing_vocab_file_names_it(tmp_path):
    with pytest.raises(VocabFileError, match=r"vocab\.json: no vocabulary file"):
        Vocab.load(tmp_path / "vocab.json")


def test_damaged_vocab_in_corpus_load_names_the_file(tmp_path, small_text):
    src = tmp_path / "c.txt"
    src.write_text(small_text, encoding="utf-8")
    paths = [tmp_path / n for n in ("v.json", "t.bin", "s.json")]
    encode_corpus(src, *paths, val_fraction=0.05, test_fraction=0.05)
    paths[0].write_text('{"chars": ', encoding="utf-8")
    with pytest.raises(VocabFileError, match=r"v\.json: not a charlab vocabulary: not JSON"):
        Corpus.load(*paths)


# --- byte-order mark: one leading U+FEFF is dropped, any other is kept (issue 12) ---------

@pytest.mark.parametrize("chunk_bytes", [1, 2, 1 << 20], ids=["bom-split-1", "bom-split-2",
                                                              "one-chunk"])
def test_encode_drops_a_leading_bom(tmp_path, small_text, chunk_bytes):
    text = small_text[:3000]
    raw = b"\xef\xbb\xbf" + text.encode("utf-8")
    src = tmp_path / "c.txt"
    src.write_bytes(raw)
    paths = [tmp_path / n for n in ("v.json", "t.bin", "s.json")]
    m = encode_corpus(src, *paths, val_fraction=0.05, test_fraction=0.05,
                      chunk_bytes=chunk_bytes)
    corpus = Corpus.load(*paths)
    assert "\ufeff" not in corpus.vocab.chars
    assert corpus.vocab == Vocab.from_text(text)
    assert m.n_chars == len(text)
    assert corpus.vocab.decode(corpus.ids) == text
    assert m.sha256 == hashlib.sha256(raw).hexdigest()  # the file's hash, BOM included


def test_encode_keeps_a_bom_that_is_not_at_the_start(tmp_path):
    text = "ab\ufeffba" * 20
    src = tmp_path / "c.txt"
    src.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    paths = [tmp_path / n for n in ("v.json", "t.bin", "s.json")]
    encode_corpus(src, *paths, val_fraction=0.1, test_fraction=0.1)
    corpus = Corpus.load(*paths)
    assert corpus.vocab.chars == ("a", "b", "\ufeff")
    assert corpus.vocab.decode(corpus.ids) == text


def test_a_corpus_that_is_only_a_bom_is_empty(tmp_path):
    src = tmp_path / "c.txt"
    src.write_bytes(b"\xef\xbb\xbf")
    paths = [tmp_path / n for n in ("v.json", "t.bin", "s.json")]
    with pytest.raises(CorpusError, match=r"c\.txt is empty$"):
        encode_corpus(src, *paths, val_fraction=0.05, test_fraction=0.05)


def test_strip_bom_only_strips_one_leading_mark():
    assert strip_bom("\ufeff\ufeffab\ufeff") == "\ufeffab\ufeff"
    assert strip_bom("ab") == "ab" and strip_bom("") == ""


# --- a bad corpus in the encode stage: one clear line, the previous outputs kept

@pytest.mark.parametrize("data,message", [
    ("héllo wörld, ".encode() + b"\xff\xfe tail",
     r"data/raw/corpus\.txt is not valid UTF-8: byte offset 15 \(0xff\): invalid start byte$"),
    ("abc€".encode()[:-1],
     r"byte offset 3 \(0xe282\): unexpected end of data$"),
    ("hello".encode("utf-16"), r"byte offset 0 \(0xff\): invalid start byte$"),
    ("café au lait".encode("latin-1"), r"byte offset 3 \(0xe9\): invalid continuation byte$"),
    (b"", r"data/raw/corpus\.txt is empty$"),
    (b"a" * 5000, r"holds a single distinct character \('a', 5000 times\): there is nothing "
                  r"for a language model to predict"),
    (b"\n" * 300, r"holds a single distinct character \('\\n', 300 times\)"),
    (b"abcdefghij" * 2, r"corpus of 20 characters leaves the val split only 1 character\(s\)"),
], ids=["bad-utf8", "cut-utf8", "utf16", "latin1", "empty", "one-char", "only-newlines",
        "too-short-for-splits"])
def test_bad_corpus_is_one_clear_line_and_keeps_previous_outputs(pipeline_ws: Path, capsys,
                                                                 data: bytes,
                                                                 message: str) -> None:
    (pipeline_ws / "data/raw/corpus.txt").write_bytes(data)
    before = snapshot(pipeline_ws)
    code, _, err = run_stage(pipeline_ws, "encode", capsys)
    assert code == 2
    assert re.search(message, one_line_error(err))
    assert snapshot(pipeline_ws) == before


def test_corpus_shorter_than_one_batch(pipeline_ws: Path, capsys) -> None:
    # 400 characters encode and fit the n-grams, but hold no batch of the lecture's size
    (pipeline_ws / "data/raw/corpus.txt").write_text(make_text(400, seed=9), encoding="utf-8")
    assert run_stage(pipeline_ws, "encode", capsys)[0] == 0
    assert run_stage(pipeline_ws, "ngram", capsys)[0] == 0
    edit_params(pipeline_ws, {"train": {"rnn": {"batch_size": 64, "seq_length": 100}}})
    (pipeline_ws / "models/rnn.pt").unlink()
    code, _, err = run_stage(pipeline_ws, "train", capsys)
    assert code == 2
    assert re.fullmatch(r"error: train\.rnn\.batch_size: 64 streams of seq_length \+ 1 = 101 "
                        r"characters need 6464, the train split has 360; use batch_size <= 3 "
                        r"or a shorter train\.rnn\.seq_length", one_line_error(err))
    assert not (pipeline_ws / "models/rnn.pt").exists()


def test_the_encode_stage_removes_what_a_killed_encode_left(pipeline_ws: Path, capsys) -> None:
    """`kill -9` during encode leaves `.corpus.bin.*.tmp` (up to 32 MiB) and empty temp files
    for the vocabulary and the manifest; the next encode removes them (issue 20: a
    successful rerun used to keep them forever). Another stage's temp file stays."""
    enc = pipeline_ws / "data/encoded"
    stale = [enc / ".corpus.bin.k9x2ab3d.tmp", enc / ".vocab.json.q1w2e3r4.tmp",
             enc / ".split.json.zz_9aa0b.tmp"]
    stale[0].write_bytes(b"\x01" * (1 << 20))
    for path in stale[1:]:
        path.write_bytes(b"")
    other = pipeline_ws / "models/.rnn.pt.k9x2ab3d.tmp"
    other.write_bytes(b"")
    before = snapshot(pipeline_ws)
    assert run_stage(pipeline_ws, "encode", capsys)[0] == 0
    assert not any(p.exists() for p in stale)
    assert other.exists()
    after = snapshot(pipeline_ws)
    assert {k: v for k, v in before.items() if not k.startswith("data/encoded/.")} == after
