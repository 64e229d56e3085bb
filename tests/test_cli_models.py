"""The `charlab` command refuses an n-gram table counted on another vocabulary (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_text
from helpers import ENCODED

from charlab.cli import main as cli_main
from charlab.encoding import Corpus, Vocab, encode_corpus
from charlab.models import load_model, ngram_file
from charlab.ngram import NGramFileError, NGramLM

COMMANDS = [["score", "ngram3", "some.txt"], ["sample", "ngram3", "--length", "5"],
            ["ngram", "show", "the", "--order", "3"]]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """An encoded corpus and its order-3 table where the pipeline puts them."""
    (tmp_path / "data/encoded").mkdir(parents=True)
    (tmp_path / "corpus.txt").write_text(make_text(8000, seed=2), encoding="utf-8")
    encode_corpus(tmp_path / "corpus.txt", *(tmp_path / p for p in ENCODED),
                  val_fraction=0.1, test_fraction=0.1)
    corpus = Corpus.load(*(tmp_path / p for p in ENCODED))
    NGramLM.fit(corpus.split("train"), corpus.vocab.size, 3).save(
        ngram_file(tmp_path / "models/ngram", 3), corpus.vocab)
    (tmp_path / "some.txt").write_text("the king shall speak", encoding="utf-8")
    return tmp_path


def error_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def swap_a_character(ws: Path) -> None:
    """The corpus changed to another vocabulary of the same size: 'y' out, 'Ω' in."""
    chars = Vocab.load(ws / ENCODED[0]).chars
    assert "y" in chars and "Ω" not in chars
    Vocab(tuple(sorted((set(chars) - {"y"}) | {"Ω"}))).save(ws / ENCODED[0])


@pytest.mark.parametrize("argv", COMMANDS, ids=["score", "sample", "ngram-show"])
def test_stale_ngram_table_is_refused(ws: Path, capsys, monkeypatch, argv: list[str]) -> None:
    monkeypatch.chdir(ws)
    cli_main(argv)  # the table and its vocabulary agree: it runs
    capsys.readouterr()
    swap_a_character(ws)
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    assert re.fullmatch(r"error: models/ngram/ngram3\.npz: counted on a different vocabulary "
                        r"\((\d+) chars\) than this corpus \(\1 chars; only in the corpus: "
                        r"'Ω'; only in the model: 'y'\); rebuild it \(`dvc repro`\)",
                        error_line(capsys))


def test_stale_ngram_table_is_refused_by_load_model(ws: Path) -> None:
    path = ngram_file(ws / "models/ngram", 3)
    assert load_model(path, Vocab.load(ws / ENCODED[0])).vocab_size > 0
    swap_a_character(ws)
    with pytest.raises(NGramFileError, match="counted on a different vocabulary"):
        load_model(path, Vocab.load(ws / ENCODED[0]))


@pytest.mark.parametrize("argv", COMMANDS, ids=["score", "sample", "ngram-show"])
def test_ngram_file_from_before_the_vocabulary_was_stored(ws: Path, capsys, monkeypatch,
                                                          argv: list[str]) -> None:
    path = ngram_file(ws / "models/ngram", 3)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "vocab"}
    arrays["version"] = np.array(1, dtype=np.int64)  # the format charlab wrote before
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    monkeypatch.chdir(ws)
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    assert error_line(capsys) == (
        "error: models/ngram/ngram3.npz: n-gram file format version 1, which does not record "
        "its vocabulary; this charlab reads version 2: rerun `dvc repro` to rebuild it")
