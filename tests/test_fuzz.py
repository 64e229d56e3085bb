"""Hypothesis fuzz over arbitrary Unicode (vocabulary round trips, UTF-8 errors, n-gram
scoring) and over params values (a ParamsError, or values every stage can use).

tests/test_ngram.py fuzzes the n-gram tables over a fixed 5-character alphabet against a
reference implementation; here the text is any Unicode (astral planes, controls, combining
marks, more than 256 distinct characters) and goes through the vocabulary first, as in the
pipeline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import re
import socket
import urllib.parse
import warnings

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, make_text
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from charlab.encoding import CorpusError, Vocab, VocabError, decode_utf8, split_bounds
from charlab.families import FAMILIES
from charlab.io import json_text
from charlab.lm import generate, score
from charlab.ngram import NGramLM
from charlab.params.core import ParamsError, load
from charlab.params.data import url_problem
from charlab.params.sections import SECTIONS, validate_all
from charlab.params.training import TRAINED_SECTIONS, TrainParams, init_entry

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


# --- params: any value in any key gives one ParamsError line, or values the stages can use -

DEFAULT_PARAMS = load(REPO / "params.yaml")
CORPUS = make_text(400, seed=7)


def _defaults(cls: type) -> dict:
    """Every key of a params dataclass with its default (a required size: 8)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name == "net":  # TrainParams' parsed family keys, not a params key
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = 8  # every required key today is a size (a GPT's heads, context)
    return out


def _full_params() -> dict:
    """The default params with every key of every section written out, analyze.pairs
    naming a pair, and for every family of the registry a train: entry holding every key
    (its family's and the common ones) and a finetune: entry of it: what the fuzz edits, so
    that it reaches every key (test_the_params_fuzz_reaches_every_key)."""
    raw = json.loads(json.dumps(DEFAULT_PARAMS))
    for section, check_section in SECTIONS.items():
        cls = getattr(check_section, "params_class", None)
        if cls is not None:
            raw[section] = {**_defaults(cls), **raw[section]}
    raw["analyze"]["pairs"] = [["rnn", "ngram4"]]
    common = {k: v for k, v in _defaults(TrainParams).items() if k != "init_from"}
    raw["finetune"] = {}
    for family in FAMILIES:
        name = re.sub(r"\W", "_", family.cells[0])
        entry = {**common, **_defaults(family.Keys), "cell": family.cells[0],
                 "batch_size": 8, "threads": 1}
        raw["train"][f"all_{name}"] = entry
        raw["finetune"][f"ft_{name}"] = {**entry, "init_from": f"all_{name}"}
    return json.loads(json.dumps(raw))  # plain JSON types, as safe_load gives


FULL_PARAMS = _full_params()
FAMILY_CELLS = [re.sub(r"\W", "_", f.cells[0]) for f in FAMILIES]


def _one_family(cell: str) -> dict:
    """The full params with the entries of one family only (and the default ones): what one
    example edits, so that validating it does not grow with the registry."""
    raw = json.loads(json.dumps(FULL_PARAMS))
    raw["train"] = {k: v for k, v in raw["train"].items()
                    if not k.startswith("all_") or k == f"all_{cell}"}
    raw["finetune"] = {f"ft_{cell}": raw["finetune"][f"ft_{cell}"]}
    return raw

# what a params.yaml can hold: YAML's scalars (huge integers, nan, inf, the strings YAML
# makes of `1e-3`), values near the bounds, the literals the keys know, and nesting
LITERALS = ["auto", "cpu", "cuda", "mps", "rnn", "lstm", "gru", "kn", "mkn", "addk", "fp32",
            "bf16", "cosine", "constant", "http://[::1", "file://otherhost/x", "file:///x",
            "ftp://h/x", "http:///x", "https://h:99999/x", "", "1e-3", "nan", ".inf", "0x10"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, 2**31, 2**63 - 1, 2**63, 64, 65, 4096, 4097, 86_400]),
    st.floats(-2, 2), st.floats(), st.sampled_from([1e-320, 1e-10, 1e6, 1e300, 86_400.5]),
    st.from_regex(r"[-+]?(\d{1,3}\.?\d{0,3}|\.\d{1,3})([eE][-+]?\d{1,3})?", fullmatch=True),
    st.sampled_from(LITERALS), st.text(max_size=12))
LIKE = {int: st.one_of(st.integers(-2, 70), st.integers(-2**64, 2**64),
                       st.sampled_from([2**31, 2**63 - 1, 2**63, 4096, 4097])),
        float: st.one_of(st.floats(-1, 2), st.floats(), st.sampled_from(
            [1e-320, 1e-10, 1e-3, 0.999, 1e6, 1e300, 86_400.5, 1.5e-3])),
        str: st.one_of(st.sampled_from(LITERALS), st.text(max_size=12))}
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), kids,
                                        max_size=3), max_leaves=6)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a params tree (sections, train entries, leaves)."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    return out


def _get(node: object, path: tuple) -> object:
    for key in path:
        node = node[key]
    return node


@st.composite
def edited_params(draw: st.DrawFn) -> dict:
    """The full params (every key written out) with 1 to 3 keys set to any value, deleted,
    or added."""
    raw = _one_family(draw(st.sampled_from(FAMILY_CELLS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(raw)
        leaves = [p for p in paths if not isinstance(_get(raw, p), dict)]
        if not paths:
            break
        # mostly one value (the likely mistake), sometimes a whole section or entry
        *parents, key = draw(st.sampled_from(leaves if leaves and draw(st.integers(0, 3))
                                             else paths))
        node = raw
        for p in parents:
            node = node[p]
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["set", "set", "set", "set", "delete", "add"]))
        if action == "set":
            # half the time a value of the key's own type: the boundaries of its range
            like = LIKE.get(type(node[key]))
            node[key] = draw(like if like is not None and draw(st.booleans()) else VALUES)
        elif action == "delete":
            del node[key]
        else:
            node[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    try:  # as read from a params.yaml file (only safe_load: what the stages do)
        return yaml.safe_load(yaml.safe_dump(raw, allow_unicode=True))
    except yaml.YAMLError:  # a value PyYAML writes but cannot read back: not charlab's
        assume(False)
        raise


@functools.lru_cache(maxsize=64)
def _ngram(orders: tuple[int, ...], smoothing: str, add_k: float, discount: float | None
           ) -> tuple[Vocab, np.ndarray, NGramLM]:
    vocab = Vocab.from_text(CORPUS)
    ids = vocab.encode(CORPUS).astype(np.int64)
    return vocab, ids, NGramLM.fit(ids[:300], vocab.size, max(orders), smoothing=smoothing,
                                   add_k=add_k, discount=discount)


def _usable(checked: dict) -> None:
    """What the stages do with accepted values works: no overflow, no NaN, no traceback."""
    d = checked["download"]
    assert url_problem(d.url) is None
    urllib.parse.urlparse(d.url).port  # noqa: B018
    with socket.socket() as s:
        s.settimeout(d.timeout)  # the OverflowError of issue 12 came from here
    e = checked["encode"]
    # a fraction too small for this size is a clear error of its own
    with contextlib.suppress(CorpusError):
        split_bounds(10**6, e.val_fraction, e.test_fraction)
    n = checked["ngram"]
    vocab, ids, model = _ngram(tuple(n.orders), n.smoothing, n.add_k, n.discount)
    for order in n.orders:
        s = score(model.with_order(order), ids[300:])
        assert math.isfinite(s.nll) and s.nll > 0
    models = {**checked["train"], **checked["finetune"]}
    for name, cfg in models.items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name) and len(name) <= 105
        for v in cfg.to_dict().values():
            if isinstance(v, float):
                assert math.isfinite(v)
        torch.Generator().manual_seed(cfg.seed)
        np.random.default_rng([cfg.seed, 0]).integers(0, 10)
        assert cfg.batch_size % cfg.nproc == 0 and cfg.threads <= 4096
        # the family takes what validate accepted: its window and its network's config
        assert cfg.seq_length >= 1
        cfg.network_config(vocab.size)
        if name in checked["finetune"]:  # a model name: dvc.yaml's models/<init_from>.pt
            assert init_entry(cfg) == cfg.init_from
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", cfg.init_from)
    names = [f"ngram{o}" for o in n.orders] + list(models)
    assert all(m in names for pair in checked["analyze"].pairs for m in pair)
    sm = checked["sample"]
    out = list(generate(model.with_order(min(n.orders)), np.array([], dtype=np.int64), 10,
                        temperature=sm.temperature, top_k=sm.top_k, seed=sm.seed))
    assert all(0 <= i < vocab.size for i in out)
    assert checked["evaluate"].threads <= 4096


def test_the_params_fuzz_reaches_every_key() -> None:
    """What the fuzz edits holds every key of every section's dataclass, and in train: and
    in finetune: an entry of every family of the registry with every key it can have."""
    for section, check_section in SECTIONS.items():
        cls = getattr(check_section, "params_class", None)
        if cls is None:
            assert section in TRAINED_SECTIONS, section  # the others are dataclasses
            continue
        assert set(FULL_PARAMS[section]) == {f.name for f in dataclasses.fields(cls)}
    common = {f.name for f in dataclasses.fields(TrainParams)} - {"net"}
    for family in FAMILIES:
        keys = {f.name for f in dataclasses.fields(family.Keys)} | common
        for section in TRAINED_SECTIONS:
            entry = FULL_PARAMS[section][("all_" if section == "train" else "ft_")
                                         + re.sub(r"\W", "_", family.cells[0])]
            assert entry["cell"] == family.cells[0]
            assert set(entry) == keys - ({"init_from"} if section == "train" else set())
    checked = validate_all(FULL_PARAMS)  # valid as written
    assert len(checked["finetune"]) == len(FAMILIES)
    _usable(checked)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=edited_params())
def test_any_params_value_is_a_params_error_or_usable(raw: dict) -> None:
    try:
        checked = validate_all(raw)
    except ParamsError as e:  # one line, naming a key path (or the section)
        assert str(e) and str(e).isprintable()  # one line, whatever the keys hold
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow or invalid value in numpy fails too
        _usable(checked)


# every value a fuzz example may miss, at every key: the sweep below tries each one
SWEEP = [None, True, -1, 0, 2**64, 1e300, math.nan, "", "x;touch PWNED", "1e-3", [[]]]


def test_every_key_with_every_sweep_value_is_a_params_error_or_usable() -> None:
    """Each leaf of the full params (every key of every section, every family's entry in
    train: and finetune:) set to each SWEEP value: a one-line ParamsError or usable values,
    never a traceback. Deterministic, so no key depends on what the fuzz happened to draw."""
    # the default entries (rnn, rnn3) have no key all_rnn lacks
    leaves = [p for p in _paths(FULL_PARAMS) if not isinstance(_get(FULL_PARAMS, p), dict)
              and not (p[0] == "train" and p[1] in DEFAULT_PARAMS["train"])]
    assert len(leaves) > 60
    for path in leaves:
        entry = path[1] if path[0] in TRAINED_SECTIONS else "all_rnn"
        base = _one_family(entry.split("_", 1)[1])
        for value in SWEEP:
            raw = json.loads(json.dumps(base))
            *parents, key = path
            _get(raw, tuple(parents))[key] = value
            try:
                checked = validate_all(raw)
            except ParamsError as e:
                assert str(e) and str(e).isprintable(), (path, value, str(e))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                _usable(checked)
