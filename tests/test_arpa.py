"""charlab.arpa and `charlab ngram export`: the KN tables as ARPA backoff models.

Checked three ways: a hand-derived tiny model, a plain-Python ARPA reader written from the
format's definition (runs everywhere), and KenLM itself (the `kenlm` dev dependency), which
must load the file unmodified and give charlab's log10 probabilities.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_text
from helpers import make_node, node_kind
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlab import arpa
from charlab.arpa import ArpaExportError, char_token, token_table, tokenize, write_arpa
from charlab.cli import main as cli_main
from charlab.encoding import Vocab
from charlab.io import OutputError
from charlab.ngram import INT64_MAX, NGramLM

LN10 = math.log(10)
# Whitespace, control and other characters ARPA cannot hold, and ones that look like its syntax.
ODD = " \t\r\x0b\x0c\xa0\u2028\x00<>\\#é"


def kenlm_or_skip():
    return pytest.importorskip("kenlm", reason="kenlm is not installed (pip install kenlm; "
                                               "it is a dev dependency in pyproject.toml)")


def read_arpa(path: Path) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    """{order: {n-gram tokens: (log10 p, log10 backoff)}}, checking the header counts."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "\\data\\" and lines[-2:] == ["\\end\\", ""]
    counts, grams, order = {}, {}, None
    for line in lines[1:-2]:
        if m := re.fullmatch(r"ngram (\d+)=(\d+)", line):
            counts[int(m[1])] = int(m[2])
        elif m := re.fullmatch(r"\\(\d+)-grams:", line):
            order = int(m[1])
            grams[order] = {}
        elif line:
            fields = line.split("\t")
            top = order == max(counts)
            assert len(fields) == (2 if top else 3), line
            words = tuple(fields[1].split(" "))
            assert len(words) == order and words not in grams[order]
            grams[order][words] = (float(fields[0]), 0.0 if top else float(fields[2]))
    assert {o: len(g) for o, g in grams.items()} == counts
    return grams


def arpa_log10(grams, context: list[str], word: str) -> float:
    """The ARPA backoff rule: the longest listed n-gram, plus the backoffs of the longer
    contexts (a context that is not listed backs off with weight 1)."""
    top = max(grams)
    context = context[-(top - 1):] if top > 1 else []
    for start in range(len(context) + 1):
        gram = (*context[start:], word)
        if gram in grams[len(gram)]:
            back = sum(grams[len(c)].get(c, (0.0, 0.0))[1]
                       for c in (tuple(context[s:]) for s in range(start)))
            return grams[len(gram)][gram][0] + back
    raise AssertionError(f"{word!r} is not a unigram")


def fixture_texts(n_chars: int = 6000) -> tuple[Vocab, str, str]:
    """A train text with odd characters; a held-out text that starts like it (so the <s>
    n-grams are used) and holds a character the train split lacks."""
    train = make_text(n_chars, seed=1)
    rng = random.Random(3)
    train = "".join(c if rng.random() > 0.02 else rng.choice(ODD) for c in train)
    held = train[:40] + make_text(1500, seed=9) + ODD + "Z" + "\n"
    return Vocab.from_text(train + held), train, held


def held_texts(train: str, held: str) -> list[str]:
    """Held-out texts that start like the train split (the <s> n-grams give each char),
    leave it after 2 chars (the backoff of "<s> c0 c1" is used), or start elsewhere."""
    other = "Z" if train[2] != "Z" else "Y"
    return [held, train[:2] + other + held[50:], held[50:]]


def export(model: NGramLM, vocab: Vocab, tmp_path: Path, name: str = "m.arpa"):
    path = tmp_path / name
    side = write_arpa(model, vocab.chars, path)
    return path, json.loads(side.read_text(encoding="utf-8"))


# --- tokens --------------------------------------------------------------------------------

def test_char_tokens() -> None:
    expected = {" ": "<sp>", "\n": "<nl>", "\t": "<tab>", "\r": "<cr>", "\x0b": "<U+000B>",
                "\x0c": "<U+000C>", "\x00": "<U+0000>", "\xa0": "<U+00A0>",
                "\u2028": "<U+2028>", "\u200b": "<U+200B>", "\U000e0001": "<U+E0001>",
                "a": "a", "<": "<", "\\": "\\", "#": "#", "é": "é", "語": "語", "😀": "😀"}
    assert {c: char_token(c) for c in expected} == expected
    table = token_table(sorted(expected))
    assert len(set(table.values())) == len(table)  # one token per character
    assert not set(table.values()) & {"<s>", "</s>", "<unk>"}
    assert all(t.split() == [t] for t in table.values())  # no whitespace inside a token
    assert tokenize("a <\n", table) == "a <sp> < <nl>"
    with pytest.raises(ValueError, match="character 'b' has no ARPA token in this table"):
        tokenize("ab", table)


def test_char_token_needs_one_character() -> None:
    with pytest.raises(ValueError, match="not a single character: 'ab'"):
        char_token("ab")


# --- a hand-derived model --------------------------------------------------------------------

def test_hand_derived_order_1(tmp_path: Path) -> None:
    """Vocabulary a, b, c; train text "abab"; interpolated KN of order 1, by hand.

    Top level (raw counts): (a|pad) 1, (b|a) 2, (a|b) 1: n1 = 2, n2 = 1, D1 = 2/4 = 1/2.
    Level 0 (continuation counts): a 2 (after pad, b), b 1 (after a): D0 = 1/(1+2) = 1/3,
    total 3, gamma(empty) = D0 * 2 / 3 = 2/9.
      p(a) = (2 - 1/3 + 2/9 * 1/3 * 3) / 3 = 17/27, p(b) = 8/27, p(c) = gamma / 3 = 2/27.
    Histories: a: {b: 2}, gamma = 1/2 / 2 = 1/4; b: {a: 1}, gamma 1/2; pad: {a: 1}, 1/2;
    c: no continuations, gamma 1 (log 0).
      p(b|a) = (2 - 1/2 + 1/2 * 8/27) / 2 = 89/108, p(a|b) = p(a|pad) = 1/2 + 17/54 = 22/27.
    """
    model = NGramLM.fit(np.array([0, 1, 0, 1]), 3, 1, smoothing="kn")
    vocab = Vocab(("a", "b", "c"))
    path, tokens = export(model, vocab, tmp_path)
    lg = math.log10
    expected = {
        1: {("<unk>",): (-99, 0), ("<s>",): (-99, lg(1 / 2)), ("</s>",): (-99, 0),
            ("a",): (lg(17 / 27), lg(1 / 4)), ("b",): (lg(8 / 27), lg(1 / 2)),
            ("c",): (lg(2 / 27), 0)},
        2: {("a", "b"): (lg(89 / 108), 0), ("b", "a"): (lg(22 / 27), 0),
            ("<s>", "a"): (lg(22 / 27), 0)},
    }
    grams = read_arpa(path)
    assert grams.keys() == expected.keys()
    for order, want in expected.items():
        assert grams[order].keys() == want.keys()
        for gram, (p, b) in want.items():
            assert grams[order][gram] == pytest.approx((p, b), abs=1e-7), gram
    assert tokens == {"a": "a", "b": "b", "c": "c"}
    # The same numbers the model scores with: p(a|a) is unseen, gamma(a) * p(a) = 17/108.
    assert np.exp(model.log_probs(np.array([0, 1, 0, 0]))) == pytest.approx(
        [89 / 108, 22 / 27, 17 / 108])
    # After the pad history: p(a|pad) = 22/27, then gamma(pad) * p(w) = 4/27, 1/27.
    assert model.probs(np.array([], dtype=np.int64)) == pytest.approx([22 / 27, 4 / 27,
                                                                      1 / 27])


# --- against charlab's own scores --------------------------------------------------------------

def check_scores(score, model: NGramLM, vocab: Vocab, text: str) -> None:
    """``score(tokens)`` (log10 of each char after <s>) equals the model's, at every char."""
    ids = vocab.encode(text).astype(np.int64)
    got = np.asarray(score(tokenize(text, token_table(vocab.chars))))
    assert len(got) == len(ids)
    first = math.log10(model.probs(np.array([], dtype=np.int64))[ids[0]])
    assert got[0] == pytest.approx(first, abs=1e-5)
    np.testing.assert_allclose(got[1:], model.log_probs(ids) / LN10, rtol=0, atol=1e-5)


def reference_reader(path: Path):
    grams = read_arpa(path)

    def score(sentence: str) -> list[float]:
        words = sentence.split(" ")
        return [arpa_log10(grams, ["<s>", *words[:t]], w) for t, w in enumerate(words)]
    return score


def kenlm_reader(path: Path):
    kenlm = kenlm_or_skip()
    model = kenlm.Model(str(path))

    def score(sentence: str) -> list[float]:
        out = list(model.full_scores(sentence, bos=True, eos=False))
        assert not any(oov for _, _, oov in out)
        return [p for p, _, _ in out]
    return score, model.order


ORDERS = [0, 1, 2, 3, 5]  # KenLM's PyPI build reads ARPA orders up to 6 (charlab order 5)


@pytest.mark.parametrize("smoothing", ["kn", "mkn"])
@pytest.mark.parametrize("order", ORDERS)
def test_reference_reader_matches_log_probs(tmp_path: Path, smoothing: str, order: int
                                            ) -> None:
    vocab, train, held = fixture_texts()
    model = NGramLM.fit(vocab.encode(train), vocab.size, order, smoothing=smoothing)
    path, tokens = export(model, vocab, tmp_path)
    assert tokens == token_table(vocab.chars)
    assert max(read_arpa(path)) == max(order + 1, 2)
    score = reference_reader(path)
    for text in held_texts(train, held):
        check_scores(score, model, vocab, text)


@pytest.mark.parametrize("smoothing", ["kn", "mkn"])
@pytest.mark.parametrize("order", ORDERS)
def test_kenlm_matches_log_probs(tmp_path: Path, capfd, smoothing: str, order: int) -> None:
    vocab, train, held = fixture_texts()
    model = NGramLM.fit(vocab.encode(train), vocab.size, order, smoothing=smoothing)
    path, _ = export(model, vocab, tmp_path)
    score, kenlm_order = kenlm_reader(path)
    err = capfd.readouterr().err
    assert kenlm_order == max(order + 1, 2)
    assert not re.search(r"missing|warn|positive|substitut", err, re.IGNORECASE), err
    for text in held_texts(train, held):
        check_scores(score, model, vocab, text)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=st.text(alphabet="ab \n", min_size=1, max_size=40),
       held=st.text(alphabet="ab \nc", min_size=1, max_size=30),
       order=st.integers(0, 5), smoothing=st.sampled_from(["kn", "mkn"]))
def test_any_small_text(tmp_path: Path, train: str, held: str, order: int, smoothing: str
                        ) -> None:
    """Texts shorter than the order, characters the train split lacks, any start."""
    vocab = Vocab(("\n", " ", "a", "b", "c"))
    model = NGramLM.fit(vocab.encode(train), vocab.size, order, smoothing=smoothing)
    path, _ = export(model, vocab, tmp_path)
    for text in (held, train[:3] + held):
        check_scores(reference_reader(path), model, vocab, text)
    try:
        score, _ = kenlm_reader(path)
    except pytest.skip.Exception:
        return
    for text in (held, train[:3] + held):
        check_scores(score, model, vocab, text)


def big_vocab_text(vocab_size: int, n_chars: int) -> str:
    """Words over ``vocab_size`` CJK characters (every one of them used), with repeats."""
    chars = [chr(0x4E00 + i) for i in range(vocab_size)]
    rng = random.Random(5)
    words = ["".join(rng.choice(chars) for _ in range(rng.randint(2, 5))) for _ in range(400)]
    text = " ".join(rng.choice(words) for _ in range(n_chars // 4))
    return "".join(chars) + "\n" + text


@pytest.mark.parametrize("vocab_size", [1600, 6400], ids=["parent-top", "parent-two"])
@pytest.mark.parametrize("smoothing", ["kn", "mkn"])
def test_parent_form_keys(tmp_path: Path, vocab_size: int, smoothing: str) -> None:
    """Vocabularies large enough that order 5's top windows (1600) or top two levels and
    the 5-char histories themselves (6400, the np.unique fitting path) overflow int64 as
    base-B digits and are stored in the parent form."""
    order = 5
    text = big_vocab_text(vocab_size, 40_000)
    vocab = Vocab.from_text(text)
    v, base = vocab.size, vocab.size + 1
    assert v == vocab_size + 2  # and space, newline
    assert v * base**order > INT64_MAX
    assert (base**order > INT64_MAX) == (vocab_size == 6400)
    assert (v * base ** (order - 1) > INT64_MAX) == (vocab_size == 6400)
    cut = int(len(text) * 0.9)
    model = NGramLM.fit(vocab.encode(text[:cut]), vocab.size, order, smoothing=smoothing)
    path, _ = export(model, vocab, tmp_path)
    held = text[cut:cut + 1500]
    check_scores(reference_reader(path), model, vocab, held)
    try:
        score, _ = kenlm_reader(path)
    except pytest.skip.Exception:
        return
    check_scores(score, model, vocab, held)
    check_scores(score, model, vocab, text[:800])  # the <s> n-grams of the train start


def test_a_one_character_vocabulary(tmp_path: Path) -> None:
    """p = 1 everywhere: log10 0, written as 0 (never a positive log probability)."""
    model = NGramLM.fit(np.zeros(50, dtype=np.int64), 1, 2)
    path, tokens = export(model, Vocab(("x",)), tmp_path)
    grams = read_arpa(path)
    assert tokens == {"x": "x"}
    assert grams[3][("x", "x", "x")][0] == 0 and grams[1][("x",)][0] == 0
    assert all(p <= 0 for g in grams.values() for p, _ in g.values())
    assert not re.search(r"-0(\.0*)?\s", path.read_text())


def test_zero_discount_writes_log_zero_as_minus_99(tmp_path: Path) -> None:
    """A caller's discount 0 gives unseen characters p = 0: ARPA's -99 (SRILM's log 0)."""
    model = NGramLM.fit(np.array([0, 1, 0, 1]), 3, 1, smoothing="kn", discount=0.0)
    grams = read_arpa(export(model, Vocab(("a", "b", "c")), tmp_path)[0])
    assert grams[1][("c",)] == (-99, 0)
    assert grams[1][("a",)][1] == -99  # gamma(a) = 0


# --- errors --------------------------------------------------------------------------------

def test_addk_is_refused(tmp_path: Path) -> None:
    model = NGramLM.fit(np.array([0, 1, 0, 1]), 2, 2, smoothing="addk")
    with pytest.raises(ArpaExportError, match=r"^add-k smoothing is not a backoff model, so "
                       r"it has no ARPA form: export with smoothing kn"):
        write_arpa(model, ("a", "b"), tmp_path / "m.arpa")
    with pytest.raises(ValueError, match="add-k smoothing is not a backoff model"):
        model.backoff_levels()
    assert list(tmp_path.iterdir()) == []


def test_vocabulary_of_another_size_is_refused(tmp_path: Path) -> None:
    model = NGramLM.fit(np.array([0, 1, 0, 1]), 2, 1)
    with pytest.raises(ArpaExportError, match=r"^the model has 2 characters, the vocabulary "
                       r"has 3$"):
        write_arpa(model, ("a", "b", "c"), tmp_path / "m.arpa")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_both_previous_files(tmp_path: Path, monkeypatch) -> None:
    model = NGramLM.fit(np.array([0, 1, 0, 1]), 2, 1)
    path = tmp_path / "m.arpa"
    path.write_text("old model")
    arpa.tokens_path(path).write_text("old tokens")
    calls = {"n": 0}
    real_fmt = arpa._fmt

    def fmt_then_disk_full(x: float) -> str:
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fmt(x)

    monkeypatch.setattr(arpa, "_fmt", fmt_then_disk_full)
    with pytest.raises(OutputError, match=r"m\.arpa, .*m\.arpa\.tokens\.json: cannot write: "
                       r"No space left on device \(none replaced"):
        write_arpa(model, ("a", "b"), path)
    assert path.read_text() == "old model"
    assert arpa.tokens_path(path).read_text() == "old tokens"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.arpa", "m.arpa.tokens.json"]


# --- the command ---------------------------------------------------------------------------

@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """A vocabulary and n-gram tables of orders 2 (kn) and 3 (addk) where the CLI looks."""
    vocab, train, _ = fixture_texts(3000)
    vocab.save(tmp_path / "data/encoded/vocab.json")
    ids = vocab.encode(train)
    (tmp_path / "models/ngram").mkdir(parents=True)
    NGramLM.fit(ids, vocab.size, 2, smoothing="kn").save(tmp_path / "models/ngram/ngram2.npz",
                                                         vocab)
    NGramLM.fit(ids, vocab.size, 3, smoothing="addk").save(
        tmp_path / "models/ngram/ngram3.npz", vocab)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv,smoothing", [
    (["ngram", "export", "--order", "2", "out/m.arpa"], "kn"),
    (["ngram", "export", "--order", "3", "--smoothing", "mkn", "out/m.arpa"], "mkn"),
], ids=["own-smoothing", "override"])
def test_export_command(workspace: Path, capsys, argv: list[str], smoothing: str) -> None:
    (workspace / "out").mkdir()  # a user-named output's directory must exist (issue 20)
    cli_main(argv)
    out, err = capsys.readouterr()
    order = int(argv[3])
    assert out == (f"wrote out/m.arpa (ARPA order {order + 1}, smoothing {smoothing}) "
                   "and out/m.arpa.tokens.json\n")
    vocab = Vocab.load(workspace / "data/encoded/vocab.json")
    tokens = json.loads((workspace / "out/m.arpa.tokens.json").read_text("utf-8"))
    assert tokens == token_table(vocab.chars) and list(tokens) == list(vocab.chars)
    model = NGramLM.load(workspace / f"models/ngram/ngram{order}.npz", vocab)
    model = model.with_smoothing(smoothing)
    check_scores(reference_reader(workspace / "out/m.arpa"), model, vocab, fixture_texts(3000)[2])


@pytest.mark.parametrize("argv,message", [
    (["ngram", "export", "--order", "3", "m.arpa"],
     r"error: models/ngram/ngram3\.npz: the table's add-k smoothing \(ngram\.smoothing\) is "
     r"not a backoff model, so it has no ARPA form; use --smoothing kn or mkn \(Kneser-Ney on "
     r"the same counts\)"),
    (["ngram", "export", "--order", "2", "--smoothing", "addk", "m.arpa"],
     r"error: models/ngram/ngram2\.npz: --smoothing addk is not a backoff model, so it has no "
     r"ARPA form; use --smoothing kn or mkn \(Kneser-Ney on the same counts\)"),
    (["ngram", "export", "--order", "4", "m.arpa"],
     r"error: models/ngram/ngram4\.npz: no n-gram model of order 4 \(add it to ngram\.orders "
     r"and run `dvc repro`\)"),
    (["ngram", "export", "--order", "2", "--vocab", "nope.json", "m.arpa"],
     r"error: nope\.json: no vocabulary file \(run `dvc repro`, or --vocab\)"),
    (["ngram", "export", "--order", "2", "models"],
     r"error: models: is a directory; give the ARPA file's name"),
    (["ngram", "export", "--order", "2", "--vocab", "small.json", "m.arpa"],
     r"error: models/ngram/ngram2\.npz: counted on a different vocabulary \(\d+ chars\) than "
     r"this corpus \(2 chars; only in the model: .*\); rebuild it \(`dvc repro`\)"),
], ids=["addk-table", "addk-flag", "no-table", "no-vocab", "out-is-dir", "other-vocab"])
def test_export_errors(workspace: Path, capsys, argv: list[str], message: str) -> None:
    Vocab(("a", "b")).save(workspace / "small.json")
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert re.fullmatch(message, err.strip()), err
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


@pytest.mark.parametrize("kind,where,message", [
    ("fifo", "m.arpa", r"m\.arpa: is a FIFO \(named pipe\), not a regular file; .*"),
    ("char-device", "m.arpa", r"m\.arpa: is a character device, not a regular file; .*"),
    ("link-to-char-device", "m.arpa",
     r"m\.arpa \(a link to .*/target\): is a character device, not a regular file; .*"),
    ("fifo", "m.arpa.tokens.json",
     r"m\.arpa\.tokens\.json: is a FIFO \(named pipe\), not a regular file; .*"),
    (None, "no/such/dir/m.arpa",
     r"no/such/dir/m\.arpa: no/such/dir: no such directory; create it first, or give another "
     r"path"),
], ids=["fifo", "char-device", "link-to-device", "fifo-tokens", "missing-dir"])
def test_export_writes_a_file_and_never_replaces_another_kind(
        workspace: Path, capsys, kind: str | None, where: str, message: str) -> None:
    """`charlab ngram export /dev/null` as root made /dev/null a regular file, and a missing
    directory was created silently: now one line before any work, nothing touched."""
    if kind is not None:
        make_node(workspace / where, kind)
    before = {p: node_kind(p) for p in workspace.rglob("*")}
    with pytest.raises(SystemExit) as e:
        cli_main(["ngram", "export", "--order", "2", where.removesuffix(".tokens.json")])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert re.fullmatch("error: " + message, err.strip()), err
    assert {p: node_kind(p) for p in workspace.rglob("*")} == before


def test_export_through_a_symlink_writes_its_target(workspace: Path, capsys) -> None:
    (workspace / "store").mkdir()
    os.symlink("store/real.arpa", workspace / "m.arpa")
    cli_main(["ngram", "export", "--order", "2", "m.arpa"])
    assert (workspace / "m.arpa").is_symlink()
    assert (workspace / "store/real.arpa").read_text().startswith("\\data\\")
    assert (workspace / "m.arpa.tokens.json").is_file()
