"""charlab.ngram: counts, the lecture's ML model, smoothing, sampling, files, errors."""

from __future__ import annotations

import math
import os
import zipfile
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlab.encoding import Vocab, split_bounds
from charlab.lm import LanguageModel, generate, score
from charlab.ngram import NGramFileError, NGramLM, format_distribution

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
SMOOTHINGS = ["kn", "mkn", "addk"]


def ids_of(text: str, chars: str = "ab") -> np.ndarray:
    return np.array([chars.index(c) for c in text], dtype=np.int64)


AB = Vocab(("a", "b"))


def vocab_of(size: int) -> Vocab:
    """``size`` characters: ASCII letters first, then private-use code points (no surrogates)."""
    return Vocab(tuple(chr(c) for c in [*range(97, 97 + min(size, 26)),
                                         *range(0xE000, 0xE000 + max(0, size - 26))]))


# --- a plain-Python reference: dicts, straight from the definitions ----------------------

def ref_counts(ids: list[int], vocab_size: int, order: int) -> list[Counter]:
    """counts[L][(history oldest..newest, next)], history padded with id V at the start."""
    padded = [vocab_size] * order + list(ids)
    return [Counter((tuple(padded[t + order - lv:t + order]), padded[t + order])
                    for t in range(len(ids))) for lv in range(order + 1)]


def ref_kn(ids: list[int], vocab_size: int, order: int, modified: bool = False):
    """Interpolated (modified) Kneser-Ney p(w | history of ``order`` ids), from dicts."""
    counts = ref_counts(ids, vocab_size, order)
    a = [dict(counts[order]) if lv == order else
         dict(Counter((h[1:], w) for (h, w) in counts[lv + 1]))
         for lv in range(order + 1)]
    by_hist = [defaultdict(dict) for _ in range(order + 1)]
    for lv in range(order + 1):
        for (h, w), c in a[lv].items():
            by_hist[lv][h][w] = c

    def discounts(lv: int) -> tuple[float, float, float]:
        n = Counter(a[lv].values())
        d = n[1] / (n[1] + 2 * n[2]) if n[1] else 0.5
        if not modified or min(n[1], n[2], n[3], n[4]) == 0:
            return d, d, d
        y = n[1] / (n[1] + 2 * n[2])
        ds = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
        return ds if all(0 < x <= r for r, x in zip((1, 2, 3), ds, strict=True)) else (d, d, d)

    ds = [discounts(lv) for lv in range(order + 1)]

    def prob(history: tuple[int, ...], w: int) -> float:
        p = 1 / vocab_size
        for lv in range(order + 1):
            nxt = by_hist[lv].get(history[order - lv:], {})
            den = sum(nxt.values())
            if not den:
                continue
            d1, d2, d3 = ds[lv]
            c = nxt.get(w, 0)
            d = 0 if c == 0 else d1 if c == 1 else d2 if c == 2 else d3
            back = sum(d1 if x == 1 else d2 if x == 2 else d3 for x in nxt.values())
            p = (max(c - d, 0) + back * p) / den
        return p

    return prob


def padded_history(history: list[int], vocab_size: int, order: int) -> tuple[int, ...]:
    return tuple(([vocab_size] * order + list(history))[-order:]) if order else ()


# --- hand-derived cases ------------------------------------------------------------------

def test_ml_counts_by_hand_abab() -> None:
    # "abab", order 1, pad ~: windows ~a, ab, ba, ab.
    m = NGramLM.fit(ids_of("abab"), 2, 1)
    assert m.num_params() == 2 + 3  # unigrams a, b; windows ~a, ab, ba
    counts, used = m.next_counts(ids_of("a"))
    assert counts.tolist() == [0, 2] and used == 1
    counts, used = m.next_counts(ids_of(""))  # pad history: the text starts with a
    assert counts.tolist() == [1, 0] and used == 1
    assert m.distribution(ids_of("b")).tolist() == [1.0, 0.0]


def test_ml_counts_by_hand_order2() -> None:
    # "abab", order 2: windows ~~|a, ~a|b, ab|a, ba|b; "bb" was never a history.
    m = NGramLM.fit(ids_of("abab"), 2, 2)
    assert m.next_counts(ids_of(""))[0].tolist() == [1, 0]
    assert m.next_counts(ids_of("a"))[0].tolist() == [0, 1]  # padded: ~a
    assert m.next_counts(ids_of("ab"))[0].tolist() == [1, 0]
    assert m.next_counts(ids_of("ba"))[0].tolist() == [0, 1]
    counts, used = m.next_counts(ids_of("bb"))  # unseen: back off to "b" (b|a once)
    assert counts.tolist() == [1, 0] and used == 1
    counts, used = m.next_counts(ids_of("aa"))  # back off to "a": a|b twice
    assert counts.tolist() == [0, 2] and used == 1


def test_addk_by_hand() -> None:
    m = NGramLM.fit(ids_of("abab"), 2, 1, smoothing="addk", add_k=0.5)
    # p(b|a) = (2 + .5) / (2 + 2 * .5); p(a|b) = (1 + .5) / (1 + 1)
    np.testing.assert_allclose(m.probs(ids_of("a")), [1 / 6, 5 / 6])
    np.testing.assert_allclose(np.exp(m.log_probs(ids_of("abab"))), [5 / 6, 3 / 4, 5 / 6])


def test_unseen_history_addk_is_uniform() -> None:
    m = NGramLM.fit(ids_of("aab", "abc"), 3, 2, smoothing="addk", add_k=1.0)
    np.testing.assert_allclose(m.probs(ids_of("cc", "abc")), [1 / 3] * 3)


KN_HAND = {
    # "abab" over vocab {a, b, c}, order 1, D = 1/2 at both levels.
    # Level 0, continuation counts: N1+(.a) = |{~, b}| = 2, N1+(.b) = |{a}| = 1, total 3:
    #   p0 = (max(N1+ - 1/2, 0) + 1/2 * 2 types * 1/3) / 3 = (11/18, 5/18, 2/18).
    # Level 1, raw counts. After a: ab x2: p = (max(c - 1/2, 0) + 1/2 * 1 * p0) / 2.
    "a": [Fraction(11, 72), Fraction(59, 72), Fraction(2, 72)],
    "b": [Fraction(29, 36), Fraction(5, 36), Fraction(2, 36)],  # ba x1
    "": [Fraction(29, 36), Fraction(5, 36), Fraction(2, 36)],  # ~a x1, same shape
    "c": [Fraction(11, 18), Fraction(5, 18), Fraction(2, 18)],  # unseen: p0
}


@pytest.mark.parametrize("history", list(KN_HAND))
def test_kn_by_hand(history: str) -> None:
    m = NGramLM.fit(ids_of("abab", "abc"), 3, 1, discount=0.5)
    np.testing.assert_allclose(m.probs(ids_of(history, "abc")),
                               [float(x) for x in KN_HAND[history]])


def test_kn_automatic_discounts_by_hand() -> None:
    # Level 1 raw counts {1, 2, 1}: D1 = 2 / (2 + 2) = 1/2. Level 0 continuation {2, 1}:
    # D0 = 1 / (1 + 2) = 1/3, so p0 = ((2 - 1/3) / 3 + 1/3 * 2/3 * 1/3, ...) = (17, 8, 2)/27.
    m = NGramLM.fit(ids_of("abab", "abc"), 3, 1)
    p0 = np.array([17, 8, 2]) / 27
    np.testing.assert_allclose(m.probs(ids_of("c", "abc")), p0)
    np.testing.assert_allclose(m.probs(ids_of("a", "abc")),
                               [0.25 * p0[0], 0.75 + 0.25 * p0[1], 0.25 * p0[2]])


# --- oracle: NLTK where its definitions equal ours ---------------------------------------
# Differences, from nltk/lm/{models,smoothing}.py: NLTK's KneserNeyInterpolated uses one
# discount for every order and its unigram level is the bare continuation ratio (no
# discount, no uniform term, so an unseen char gets 0); ours picks D per level and mixes
# in 1/V. They agree when ours gets D = 0 at level 0 and NLTK's D above it. NLTK maps
# tokens outside `vocabulary_text` to <UNK> (pads too) and its Lidstone divides by
# |vocab| including <UNK> and the pad token, so ours gets V + 2 ids for add-k.
# padded_everygram_pipeline also pads the right end with </s>; we build the n-grams.

NLTK_TEXT = "the cat sat on the mat. the dog sat on the log; a cat and a dog."
PAD = "<s>"


def nltk_model(cls, order: int, *args, **kwargs):
    padded = [PAD] * order + list(NLTK_TEXT)
    grams = [tuple(padded[t + order - lv:t + order + 1])
             for t in range(len(NLTK_TEXT)) for lv in range(order + 1)]
    model = cls(*args, order + 1, **kwargs) if args else cls(order + 1, **kwargs)
    model.fit([grams], vocabulary_text=list(NLTK_TEXT) + [PAD])
    return model


def nltk_cases(order: int) -> list[str]:
    seen = [NLTK_TEXT[max(0, t - order):t] for t in range(len(NLTK_TEXT))]
    return seen + ["og;"[:order], "zzzz"[:order] if order else ""]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kn_matches_nltk(order: int) -> None:
    lm_nltk = pytest.importorskip("nltk.lm")
    chars = sorted(set(NLTK_TEXT + "z"))
    ref = nltk_model(lm_nltk.KneserNeyInterpolated, order, discount=0.7)
    ours = NGramLM.fit(ids_of(NLTK_TEXT, chars), len(chars), order,
                       discount=[0.0] + [0.7] * order)
    for history in nltk_cases(order):
        context = tuple([PAD] * (order - len(history)) + list(history))
        p = ours.probs(ids_of(history, chars))
        want = [ref.unmasked_score(c, context) if c in NLTK_TEXT else 0.0 for c in chars]
        np.testing.assert_allclose(p, want, atol=1e-12, err_msg=repr(history))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_addk_matches_nltk_lidstone(order: int) -> None:
    lm_nltk = pytest.importorskip("nltk.lm")
    chars = sorted(set(NLTK_TEXT))
    ref = nltk_model(lm_nltk.Lidstone, order, 0.3)
    assert len(ref.vocab) == len(chars) + 2  # + <s>, <UNK>
    ours = NGramLM.fit(ids_of(NLTK_TEXT, chars), len(chars) + 2, order, smoothing="addk",
                       add_k=0.3)
    for history in nltk_cases(order)[:-1]:
        context = tuple([PAD] * (order - len(history)) + list(history))
        p = ours.probs(ids_of(history, chars))
        want = [ref.unmasked_score(c, context) for c in chars] + \
            [ref.unmasked_score(PAD, context), ref.unmasked_score("<UNK>", context)]
        np.testing.assert_allclose(p, want, atol=1e-12, err_msg=repr(history))


@pytest.mark.parametrize("order", [0, 2, 4])
def test_ml_matches_nltk_mle(order: int) -> None:
    lm_nltk = pytest.importorskip("nltk.lm")
    chars = sorted(set(NLTK_TEXT))
    ref = nltk_model(lm_nltk.MLE, order)
    ours = NGramLM.fit(ids_of(NLTK_TEXT, chars), len(chars), order)
    for history in nltk_cases(order)[:len(NLTK_TEXT)]:  # seen histories only
        context = tuple([PAD] * (order - len(history)) + list(history))
        want = [ref.unmasked_score(c, context or None) for c in chars]
        np.testing.assert_allclose(ours.distribution(ids_of(history, chars)), want)


# --- every key layout against the reference ----------------------------------------------

LAYOUTS = [
    (3, 4),  # every level one base-B key
    (65, 10),  # top window wider than int64: bucketed by target, parent-form top level
    (3000, 5),  # large vocab: same, at a low order
    (70000, 3),  # same, targets too wide for a 16-bit radix sort
    (70000, 4),  # even the history overflows: level-by-level np.unique fallback
]


@pytest.mark.parametrize(("vocab_size", "order"), LAYOUTS)
@pytest.mark.parametrize("chunk_size", [37, 1 << 20])
def test_layouts_match_reference(vocab_size: int, order: int, chunk_size: int) -> None:
    rng = np.random.default_rng(vocab_size + order)
    ids = rng.integers(0, min(vocab_size, 6), size=400)
    ids[50:60] = vocab_size - 1  # a high id, to exercise the widest keys
    m = NGramLM.fit(ids, vocab_size, order, chunk_size=chunk_size)
    counts = ref_counts(ids.tolist(), vocab_size, order)
    assert m.num_params() == sum(len(c) for c in counts)
    kn, mkn = ref_kn(ids.tolist(), vocab_size, order), \
        ref_kn(ids.tolist(), vocab_size, order, modified=True)
    for t in (0, 1, 55, 61, 200, 399):
        history = ids[max(0, t - order - 2):t]
        padded = padded_history(history.tolist(), vocab_size, order)
        got, used = m.next_counts(history)
        for lv in range(order, -1, -1):
            ref = {w: c for (h, w), c in counts[lv].items() if h == padded[order - lv:]}
            if ref:
                break
        assert used == lv and {int(w): int(got[w]) for w in np.flatnonzero(got)} == ref
        p_kn, p_mkn = m.probs(history), m.with_smoothing("mkn").probs(history)
        for w in {int(ids[t]), 0, vocab_size - 1}:
            assert p_kn[w] == pytest.approx(kn(padded, w), rel=1e-9)
            assert p_mkn[w] == pytest.approx(mkn(padded, w), rel=1e-9)
    lp = m.log_probs(ids[:120])
    want = [math.log(kn(padded_history(ids[:t].tolist(), vocab_size, order), int(ids[t])))
            for t in range(1, 120)]
    np.testing.assert_allclose(lp, want, rtol=1e-9)


@pytest.mark.parametrize(("vocab_size", "order"), LAYOUTS)
def test_tables_interface_matches_reference(vocab_size: int, order: int) -> None:
    """model.tables answers the same questions whichever key scheme a level uses."""
    rng = np.random.default_rng(vocab_size * order)
    ids = rng.integers(0, min(vocab_size, 5), size=300)
    ids[40:45] = vocab_size - 1
    t = NGramLM.fit(ids, vocab_size, order).tables
    counts, base = ref_counts(ids.tolist(), vocab_size, order), vocab_size + 1
    assert t.n_chars == len(ids) and t.num_entries == sum(len(c) for c in counts)
    assert t.nbytes == sum(t.keys(lv).nbytes + t.counts(lv).nbytes for lv in range(order + 1))

    def row(lv: int, h: tuple[int, ...], w: int) -> int:  # h: oldest..newest
        hist = sum(c * base**j for j, c in enumerate(h))  # newest most significant
        return int(t.rows_for(lv, np.array([w]), hist)[0])

    rows_below: dict = {}  # (history, target) -> row, one level down
    for lv in range(order + 1):
        assert t.num_rows(lv) == len(counts[lv]) == len(t.counts(lv))
        rows = {hw: row(lv, *hw) for hw in counts[lv]}
        assert sorted(rows.values()) == list(range(t.num_rows(lv)))  # each window once
        assert {hw: int(t.counts(lv)[r]) for hw, r in rows.items()} == dict(counts[lv])
        if lv:  # only the first char follows the all-pad history
            assert row(lv, (vocab_size,) * lv, (int(ids[0]) + 1) % vocab_size) == -1
        if lv < order:  # distinct chars seen before each window
            n1 = Counter((h[1:], w) for h, w in counts[lv + 1])
            assert {hw: int(t.continuation(lv)[r]) for hw, r in rows.items()} == n1
        if lv:
            pad_slot = t.num_rows(lv - 1)  # the all-pad history's extra slot
            for (h, w), r in rows.items():
                assert t.parents(lv)[r] == rows_below[(h[1:], w)]
                assert t.oldest_chars(lv)[r] == h[0]
                own = pad_slot if h[-1] == vocab_size else rows_below[(h[:-1], h[-1])]
                assert t.history_rows(lv)[r] == own
            below = list(rows_below)  # each window one level down, with one older char
            for c in {*range(min(vocab_size, 5)), vocab_size - 1, vocab_size}:
                hit, up = t.extend(lv, np.array([rows_below[hw] for hw in below]), c)
                want = [((c, *h), w) in rows for h, w in below]
                assert hit.tolist() == want
                assert up.tolist() == [rows[((c, *h), w)] for h, w in below
                                       if ((c, *h), w) in rows]
        rows_below = rows
    assert t.cut(order - 1).num_entries == t.num_entries - t.num_rows(order)


def test_chunked_counts_equal_one_pass() -> None:
    ids = np.random.default_rng(1).integers(0, 5, size=5000)
    one = NGramLM.fit(ids, 5, 6)
    for chunk in (1, 999, 4999):
        many = NGramLM.fit(ids, 5, 6, chunk_size=chunk)
        for lv in range(7):
            np.testing.assert_array_equal(one.tables.keys(lv), many.tables.keys(lv))
            np.testing.assert_array_equal(one.tables.counts(lv), many.tables.counts(lv))


def test_with_order_equals_fitting_that_order() -> None:
    ids = np.random.default_rng(2).integers(0, 4, size=3000)
    big = NGramLM.fit(ids, 4, 6)
    small = NGramLM.fit(ids, 4, 3)
    cut = big.with_order(3)
    assert cut.num_params() == small.num_params()
    np.testing.assert_allclose(cut.log_probs(ids[:500]), small.log_probs(ids[:500]))


def test_fits_a_uint8_memmap(tmp_path: Path) -> None:
    path = tmp_path / "ids.bin"
    ids = np.random.default_rng(3).integers(0, 7, size=2000).astype(np.uint8)
    ids.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    a, b = NGramLM.fit(mm, 7, 3), NGramLM.fit(ids.astype(np.int64), 7, 3)
    np.testing.assert_allclose(a.log_probs(mm), b.log_probs(ids))


# --- normalisation, sampling, protocol ---------------------------------------------------

@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [0, 1, 3, 6])
def test_probabilities_sum_to_one(smoothing: str, order: int) -> None:
    ids = np.random.default_rng(order).integers(0, 5, size=600)
    m = NGramLM.fit(ids, 7, order, smoothing=smoothing)  # ids 5, 6 never seen
    for history in (ids[:0], ids[:3], ids[100:110], np.array([6, 5, 6, 6, 5, 6, 6])):
        p = m.probs(history)
        assert p.sum() == pytest.approx(1.0) and np.all(p > 0)
        assert m.distribution(history).sum() == pytest.approx(1.0)
    assert np.all(np.isfinite(m.log_probs(np.array([6, 5, 0, 6, 6, 1, 5]))))


def test_is_a_language_model() -> None:
    m = NGramLM.fit(ids_of("abba"), 2, 2)
    assert isinstance(m, LanguageModel)
    assert m.log_probs(ids_of("a")).shape == (0,)


def test_sampling_backs_off_from_an_unseen_prime() -> None:
    text = "the cat sat on the mat"
    chars = sorted(set(text))
    m = NGramLM.fit(ids_of(text, chars), len(chars), 4)
    prime = ids_of("mat the c", chars)  # "the c" seen; "t the c" never
    counts, used = m.next_counts(prime)
    assert used == 4 and counts[chars.index("a")] == 1 and counts.sum() == 1
    log_probs, _ = m.start(prime)
    np.testing.assert_allclose(np.exp(log_probs), m.distribution(prime))
    out = list(generate(m, prime, 30, seed=1))
    assert "".join(chars[i] for i in out).startswith("at")  # the only continuation
    # A char never seen even as a unigram: back off to the unigram distribution.
    m2 = NGramLM.fit(ids_of("aab", "abc"), 3, 2)
    assert m2.next_counts(ids_of("c", "abc"))[1] == 0


def test_sampling_from_the_pad_history_replays_the_start() -> None:
    text = "abcab"
    m = NGramLM.fit(ids_of(text, "abc"), 3, 3)
    out = list(generate(m, np.array([], dtype=np.int64), 3, temperature=0))
    assert out == ids_of("abc", "abc").tolist()  # deterministic: each history seen once


@pytest.mark.parametrize(("vocab_size", "order"), [(6, 5), (65, 10), (70000, 4)])
def test_step_matches_start_on_the_longer_prime(vocab_size: int, order: int) -> None:
    ids = np.random.default_rng(4).integers(0, 6, size=3000)
    m = NGramLM.fit(ids, vocab_size, order)
    lp, state = m.start(ids[:7])
    for i in range(7, 40):
        lp, state = m.step(state, int(ids[i]))
        np.testing.assert_array_equal(lp, m.start(ids[:i + 1])[0])


# --- the real corpus ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def shakespeare() -> tuple[Vocab, np.ndarray]:
    if not SHAKESPEARE.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is not available")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    vocab = Vocab.from_text(text)
    return vocab, vocab.encode(text)


def test_lecture_ello_is_mostly_w(shakespeare: tuple[Vocab, np.ndarray]) -> None:
    vocab, ids = shakespeare
    m = NGramLM.fit(ids, vocab.size, 4)
    p = m.distribution(vocab.encode("ello"))
    assert vocab.chars[int(np.argmax(p))] == "w" and p[vocab.chars.index("w")] > 0.8
    lines = format_distribution(m, vocab.chars, "ello").splitlines()
    assert "matched 'ello' (4 chars), 137 occurrences, 8 next chars" in lines[0]
    assert lines[1].startswith("'w'  0.8175  (112)")
    probs = [float(line.rsplit(None, 2)[1]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-3)


# Test nll (nats/char) of interpolated KN, per the reference script.
KN_TARGETS = {
    "default 90/5/5": (0.05, 0.05, {3: 1.789, 4: 1.640, 5: 1.625, 6: 1.634}),
    "nanoGPT 90/10": (0.0, 0.10, {3: 1.729, 4: 1.579, 5: 1.558, 6: 1.565}),
}


@pytest.mark.parametrize("split", list(KN_TARGETS))
def test_kn_reaches_the_reference_nll(shakespeare: tuple[Vocab, np.ndarray],
                                      split: str) -> None:
    vocab, ids = shakespeare
    val, test, targets = KN_TARGETS[split]
    n = len(ids)
    n_test = int(round(n * test))
    train_end = n - n_test - int(round(n * val))
    if val:
        assert (0, train_end) == split_bounds(n, val, test)["train"]
    model = NGramLM.fit(ids[:train_end], vocab.size, max(targets))
    for order, want in targets.items():
        got = score(model.with_order(order), ids[n - n_test:]).nll
        assert got == pytest.approx(want, abs=0.02), f"order {order}"


# --- files -------------------------------------------------------------------------------

@pytest.mark.parametrize(("vocab_size", "order", "smoothing"),
                         [(3, 2, "kn"), (65, 10, "mkn"), (70000, 4, "addk")])
def test_save_load_round_trip(tmp_path: Path, vocab_size: int, order: int,
                              smoothing: str) -> None:
    ids = np.random.default_rng(5).integers(0, 3, size=500)
    m = NGramLM.fit(ids, vocab_size, order, smoothing=smoothing, add_k=0.2)
    path = tmp_path / "m.npz"
    m.save(path, vocab_of(vocab_size))
    assert os.listdir(tmp_path) == ["m.npz"]  # no temp file left behind
    back = NGramLM.load(path, vocab_of(vocab_size))
    assert (back.vocab_size, back.order, back.smoothing, back.add_k) == \
        (vocab_size, order, smoothing, 0.2)
    assert back.num_params() == m.num_params()
    np.testing.assert_array_equal(back.log_probs(ids), m.log_probs(ids))


def test_save_keeps_a_per_level_discount(tmp_path: Path) -> None:
    m = NGramLM.fit(ids_of("abab"), 2, 1, discount=[0.25, 0.5])
    m.save(tmp_path / "m.npz", AB)
    assert NGramLM.load(tmp_path / "m.npz", AB).discount == [0.25, 0.5]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "other_npz", "npy",
                                    "bad_counts"])
def test_load_rejects_damaged_files(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.npz"
    NGramLM.fit(ids_of("abababba"), 2, 2).save(path, AB)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a model at all" * 10)
    elif damage == "flip":  # the last byte of keys_1's data: zip's CRC catches it
        with zipfile.ZipFile(path) as z:
            i = z.getinfo("counts_1.npy").header_offset - 1
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif damage == "other_npz":
        with open(path, "wb") as f:
            np.savez(f, x=np.arange(3))
    elif damage == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    else:
        with np.load(path) as z:
            arrays = dict(z)
        arrays["counts_1"] = arrays["counts_1"] + 1
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    with pytest.raises(NGramFileError, match="m.npz"):
        NGramLM.load(path, AB)


def test_load_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        NGramLM.load(tmp_path / "nope.npz", AB)


def test_file_records_its_vocabulary(tmp_path: Path) -> None:
    """Issue 12: the file stored only the vocabulary's size, so a table counted on another
    vocabulary of the same size loaded and scored confident nonsense."""
    path = tmp_path / "m.npz"
    NGramLM.fit(ids_of("abababba"), 2, 2).save(path, AB)
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["vocab"], [ord("a"), ord("b")])
        assert z["vocab"].dtype == np.uint32 and int(z["version"]) == 2
    assert NGramLM.load(path, Vocab(("a", "b"))).vocab_size == 2
    with pytest.raises(NGramFileError) as e:
        NGramLM.load(path, Vocab(("a", "c")))  # same size, one character swapped
    assert str(e.value) == (
        f"{path}: counted on a different vocabulary (2 chars) than this corpus (2 chars; "
        "only in the corpus: 'c'; only in the model: 'b'); rebuild it (`dvc repro`)")
    with pytest.raises(NGramFileError, match="counted on a different vocabulary"):
        NGramLM.load(path, Vocab(("a", "b", "c")))
    with pytest.raises(ValueError, match="a vocabulary of 3 for a model of 2"):
        NGramLM.fit(ids_of("abab"), 2, 1).save(path, Vocab(("a", "b", "c")))


def test_file_without_vocabulary_asks_for_a_rebuild(tmp_path: Path) -> None:
    """A file written before the vocabulary was stored (format version 1)."""
    path = tmp_path / "ngram2.npz"
    NGramLM.fit(ids_of("abababba"), 2, 2).save(path, AB)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "vocab"}
    arrays["version"] = np.array(1, dtype=np.int64)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(NGramFileError) as e:
        NGramLM.load(path, AB)
    assert str(e.value) == (f"{path}: n-gram file format version 1, which does not record "
                            "its vocabulary; this charlab reads version 2: rerun `dvc repro` "
                            "to rebuild it")


@pytest.mark.parametrize("vocab", [np.array([98, 97], dtype=np.uint32),
                                   np.array([97, 97], dtype=np.uint32),
                                   np.array([97, 0x110000], dtype=np.uint32),
                                   np.array([97, 98], dtype=np.int64),
                                   np.array([97], dtype=np.uint32)],
                         ids=["unsorted", "repeated", "beyond-unicode", "int64", "short"])
def test_damaged_vocabulary_in_the_file(tmp_path: Path, vocab: np.ndarray) -> None:
    path = tmp_path / "m.npz"
    NGramLM.fit(ids_of("abababba"), 2, 2).save(path, AB)
    with np.load(path, allow_pickle=False) as z:
        arrays = {**{k: z[k] for k in z.files}, "vocab": vocab}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(NGramFileError, match=r"m\.npz: not a valid charlab n-gram file: "):
        NGramLM.load(path, AB)


# --- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [-1, 1.5, True, "3"])
def test_bad_order(order) -> None:
    with pytest.raises(ValueError, match="order"):
        NGramLM.fit(ids_of("ab"), 2, order)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"smoothing": "good-turing"}, "smoothing"),
    ({"add_k": 0}, "add_k"),
    ({"discount": 1.5}, "discount"),
    ({"discount": [0.5]}, "one discount per level"),
    ({"chunk_size": 0}, "chunk_size"),
])
def test_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NGramLM.fit(ids_of("abab"), 2, 2, **kwargs)


def test_ids_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        NGramLM.fit(np.array([0, 1, 2]), 2, 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        NGramLM.fit(np.array([0, -1]), 2, 1)
    m = NGramLM.fit(ids_of("abab"), 2, 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.log_probs(np.array([0, 2]))
    _, state = m.start(ids_of("a"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.step(state, 5)
    with pytest.raises(ValueError, match="empty"):
        NGramLM.fit(np.array([], dtype=np.int64), 2, 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        format_distribution(m, "ab", "abc")


# --- fuzz --------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet="ab c\n", min_size=1, max_size=80),
       other=st.text(alphabet="ab c\n", min_size=2, max_size=30),
       order=st.integers(0, 5), smoothing=st.sampled_from(SMOOTHINGS))
def test_fuzz_finite_and_normalised(text: str, other: str, order: int, smoothing: str) -> None:
    chars = "ab c\n"
    m = NGramLM.fit(ids_of(text, chars), len(chars), order, smoothing=smoothing)
    counts = ref_counts(ids_of(text, chars).tolist(), len(chars), order)
    assert m.num_params() == sum(len(c) for c in counts)
    for s in (text, other):
        lp = m.log_probs(ids_of(s, chars))
        assert lp.shape == (len(s) - 1,) and np.all(np.isfinite(lp)) and np.all(lp <= 0)
        p = m.probs(ids_of(s[-order - 1:], chars))
        assert p.sum() == pytest.approx(1.0) and np.all(p > 0)
        assert m.distribution(ids_of(s, chars)).sum() == pytest.approx(1.0)


def test_format_distribution_shows_pads_and_backoff() -> None:
    m = NGramLM.fit(ids_of("abcab", "abc"), 3, 3)
    out = format_distribution(m, "abc", "")
    assert "matched '~~~' (3 chars), 1 occurrences" in out
    assert out.splitlines()[1] == "'a'  1.0000  (1)"
    out = format_distribution(m, "abc", "cc", top=1)  # unseen: backs off to "c"
    assert "matched 'c' (1 chars)" in out and len(out.splitlines()) == 2
