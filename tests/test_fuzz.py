"""Hypothesis fuzz over arbitrary Unicode: vocabulary round trips, UTF-8 errors, n-gram scoring.

tests/test_ngram.py fuzzes the n-gram tables over a fixed 5-character alphabet against a
reference implementation; here the text is any Unicode (astral planes, controls, combining
marks, more than 256 distinct characters) and goes through the vocabulary first, as in the
pipeline.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from charlab.encoding import CorpusError, Vocab, VocabError, decode_utf8
from charlab.io import json_text
from charlab.lm import generate, score
from charlab.ngram import NGramLM

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
# every code point but surrogates (which no UTF-8 text can hold)
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
# many distinct characters: pushes the vocabulary past 256 ids (uint16) often
WIDE_TEXT = st.lists(st.integers(0x20, 0x2FFF).filter(lambda c: not 0xD800 <= c < 0xE000),
                     min_size=1, max_size=600).map(lambda cs: "".join(map(chr, cs)))


@FUZZ
@given(text=st.one_of(ANY_TEXT, WIDE_TEXT))
def test_vocab_round_trip_on_any_unicode(text: str) -> None:
    v = Vocab.from_text(text)
    ids = v.encode(text)
    assert ids.dtype == v.dtype and len(ids) == len(text)
    assert v.decode(ids) == text
    if len(ids):
        assert int(ids.max()) < v.size
    # ids follow code point order, so sorting the text sorts its ids
    np.testing.assert_array_equal(np.sort(ids), v.encode("".join(sorted(text))))
    # the vocabulary survives its JSON file (ensure_ascii=False, any character)
    assert Vocab.from_json(json.loads(json_text(v.to_json()))) == v


@FUZZ
@given(known=ANY_TEXT, text=ANY_TEXT)
def test_unknown_characters_are_named_exactly(known: str, text: str) -> None:
    v = Vocab.from_text(known)
    missing = [c for c in dict.fromkeys(text) if c not in set(known)]
    assert v.unknown(text) == missing
    if missing:
        with pytest.raises(VocabError) as e:
            v.encode(text)
        assert str(e.value).startswith(f"{len(missing)} character(s) not in the vocabulary")
        for c in missing[:10]:
            assert repr(c) in str(e.value)
    else:
        assert v.decode(v.encode(text)) == text


@FUZZ
@given(data=st.binary(max_size=64) | ANY_TEXT.map(str.encode))
def test_bad_utf8_names_the_first_bad_byte(data: bytes) -> None:
    try:
        expected = data.decode("utf-8")
    except UnicodeDecodeError as e:
        with pytest.raises(CorpusError, match=rf"^f is not valid UTF-8: byte offset {e.start} "):
            decode_utf8(data, source="f")
        data[:e.start].decode("utf-8")  # everything before the offset is good UTF-8
    else:
        assert decode_utf8(data, source="f") == expected


def _texts(draw: st.DrawFn) -> tuple[str, str]:
    train = draw(st.one_of(ANY_TEXT, WIDE_TEXT).filter(bool))
    chars = sorted(set(train))
    other = "".join(draw(st.lists(st.sampled_from(chars), min_size=2, max_size=60)))
    return train, other


@FUZZ
@given(data=st.data(), order=st.integers(0, 5), smoothing=st.sampled_from(["kn", "mkn", "addk"]))
def test_ngram_scoring_on_any_unicode_is_finite_and_normalised(data: st.DataObject, order: int,
                                                               smoothing: str) -> None:
    train, other = _texts(data.draw)
    vocab = Vocab.from_text(train)
    model = NGramLM.fit(vocab.encode(train), vocab.size, order, smoothing=smoothing)
    for text in (train, other):
        assume(len(text) >= 2)
        ids = vocab.encode(text).astype(np.int64)
        lp = model.log_probs(ids)
        assert lp.shape == (len(ids) - 1,)
        assert np.all(np.isfinite(lp)) and np.all(lp <= 1e-12)
        s = score(model, ids)
        assert math.isfinite(s.nll) and s.nll >= -1e-12
        assert math.isfinite(s.bpc) and s.perplexity >= 1 - 1e-9
        for cut in (0, 1, len(ids) // 2, len(ids)):
            p = model.probs(ids[:cut])
            assert p.shape == (vocab.size,)
            assert p.sum() == pytest.approx(1.0) and np.all(p > 0)
    # sampling: the unsmoothed distributions are normalised too, and ids stay in range
    prime = vocab.encode(other[: len(other) // 2])
    lp, _ = model.start(prime)
    assert np.exp(lp).sum() == pytest.approx(1.0) and not np.isnan(lp).any()
    out = list(generate(model, prime, 20, temperature=1.0, seed=0))
    assert all(0 <= i < vocab.size for i in out)
