"""The units: the recurrent family's layer-by-layer recomputation against torch's own
modules, the text features by hand (charlab.cells), correlations, gate saturation, and a
planted feature that a tiny LSTM trained on it must track."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import train_entry

from charlab import cells
from charlab.checkpoint import load_checkpoint
from charlab.encoding import Corpus, encode_corpus
from charlab.families.recurrent import GATES, CharRNN, ModelConfig, activations
from charlab.params.training import parse_entry


def _torch_run(model: CharRNN, ids: np.ndarray):
    idx = torch.as_tensor(ids, dtype=torch.long)[None]
    x = model.embed(idx) if model.embed is not None else F.one_hot(
        idx, model.config.vocab_size).float()
    with torch.no_grad():
        return model.rnn(x)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,embedding", [(1, 0), (3, 0), (2, 6)])
def test_recomputation_matches_torch(cell: str, layers: int, embedding: int) -> None:
    torch.manual_seed(layers * 10 + embedding)
    model = CharRNN(ModelConfig(vocab_size=13, cell=cell, layers=layers, hidden_size=9,
                                dropout=0.2, embedding_size=embedding)).eval()
    ids = np.random.default_rng(1).integers(0, 13, 80)
    acts = activations(model, ids)
    out, hidden = _torch_run(model, ids)
    # the last layer's outputs, every step
    assert np.abs(acts.hidden[-1] - out[0].numpy()).max() < 1e-5
    # every layer's final state (h_n, and c_n for an LSTM): the layers below are right too
    h_n, c_n = hidden if cell == "lstm" else (hidden, None)
    for k in range(layers):
        assert np.abs(acts.hidden[k][-1] - h_n[k, 0].numpy()).max() < 1e-5
        if c_n is not None:
            assert np.abs(acts.cell[k][-1] - c_n[k, 0].numpy()).max() < 1e-5
    assert len(acts.gates) == (0 if cell == "rnn" else layers)
    for layer in acts.gates:
        assert set(layer) == set(GATES[cell])
        for g in layer.values():
            assert g.shape == (80, 9) and g.min() >= 0 and g.max() <= 1
    names, units = acts.units()
    per_layer = 9 * (2 if cell == "lstm" else 1)
    assert units.shape == (80, layers * per_layer) and len(names) == units.shape[1]
    assert names[0] == "l1.h0" and (cell != "lstm" or names[9] == "l1.c0")


def test_one_unit_elman_by_hand() -> None:
    """h_t = tanh(w_ih[:, x_t] + b_ih + w_hh h_{t-1} + b_hh), one unit, two characters."""
    model = CharRNN(ModelConfig(vocab_size=2, cell="rnn", layers=1, hidden_size=1,
                                dropout=0.0)).eval()
    with torch.no_grad():
        model.rnn.weight_ih_l0.copy_(torch.tensor([[0.5, -1.0]]))
        model.rnn.weight_hh_l0.copy_(torch.tensor([[2.0]]))
        model.rnn.bias_ih_l0.fill_(0.1)
        model.rnn.bias_hh_l0.fill_(-0.2)
    h1 = math.tanh(0.5 + 0.1 - 0.2)
    h2 = math.tanh(-1.0 + 0.1 + 2.0 * h1 - 0.2)
    acts = activations(model, np.array([0, 1]))
    # the weights are float32 (0.1 is not exact in it): agreement to float32 rounding
    assert acts.hidden[0][:, 0] == pytest.approx([h1, h2], abs=1e-7)


def test_features_by_hand() -> None:
    text = 'KING:\nSay "no" (x) it\'s\n'
    f = cells.features(text)
    #             K I N G : \n S a y _ " n o " _ ( x ) _ i t ' s \n
    quotes = [0] * 10 + [1, 1, 1, 0] + [0] * 10
    brackets = [0] * 15 + [1, 1, 0] + [0] * 6
    start = [1, 0, 0, 0, 0, 0, 1] + [0] * 17
    pos = list(range(6)) + list(range(18))
    speaker = [1] * 6 + [0] * 18
    word = [1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0]
    assert len(text) == 24
    assert f["inside_quotes"].tolist() == quotes
    assert f["inside_brackets"].tolist() == brackets
    assert f["line_start"].tolist() == start
    assert f["line_position"].tolist() == pos
    assert f["speaker_line"].tolist() == speaker
    assert f["inside_word"].tolist() == word
    assert set(f) == set(cells.FEATURES)


def test_correlations_and_best_units() -> None:
    rng = np.random.default_rng(0)
    feat = (rng.random(500) < 0.3).astype(float)
    units = np.stack([rng.normal(size=500), 2 * feat - 1, -3 * feat + 0.1,
                      np.ones(500)], axis=1)
    r = cells.correlations(units, {"f": feat, "constant": np.zeros(500)})
    assert r["f"][1] == pytest.approx(1.0) and r["f"][2] == pytest.approx(-1.0)
    assert abs(r["f"][0]) < 0.2
    assert math.isnan(r["f"][3])  # a constant unit has no correlation
    assert np.isnan(r["constant"]).all()  # nor has an absent feature

    acts = cells.Activations("rnn", [units[:, :2]], [], [])
    best = {b.feature: b for b in cells.best_units(acts, {"f": feat, "absent": np.zeros(500)})}
    assert best["f"].unit == "l1.h1" and best["f"].r == pytest.approx(1.0)
    assert best["f"].share == pytest.approx(feat.mean())
    assert best["absent"].unit is None and math.isnan(best["absent"].r)


def test_saturation_by_hand() -> None:
    gate = np.array([[0.05, 0.5], [0.95, 0.5], [0.05, 0.99], [0.5, 0.91]])
    acts = cells.Activations("gru", [np.zeros((4, 2))], [], [{"update": gate}])
    (layer,) = cells.saturation(acts)
    assert layer["update"]["left"].tolist() == [0.5, 0.0]
    assert layer["update"]["right"].tolist() == [0.25, 0.5]


# --- a planted feature ---------------------------------------------------------------------

def planted_text(n: int, seed: int = 0) -> str:
    """Lowercase letters outside double quotes, uppercase inside: what comes next depends on
    one bit of state that only the last '"' sets."""
    rng = random.Random(seed)
    out, inside = [], False
    while len(out) < n:
        if rng.random() < 0.08:
            out.append('"')
            inside = not inside
        else:
            out.append(rng.choice("ABCDEF" if inside else "abcdef"))
    return "".join(out)


def test_a_tiny_lstm_learns_a_unit_that_tracks_the_planted_feature(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text(planted_text(30_000), encoding="utf-8")
    paths = [tmp_path / n for n in ("vocab.json", "ids.bin", "split.json")]
    encode_corpus(tmp_path / "c.txt", *paths, val_fraction=0.05, test_fraction=0.05)
    corpus = Corpus.load(*paths)
    cfg = parse_entry({"cell": "lstm", "layers": 1, "hidden_size": 12, "dropout": 0.0,
                       "batch_size": 16, "seq_length": 40, "lr": 0.02, "max_steps": 250,
                       "eval_every": 250, "seed": 3, "device": "cpu", "threads": 1},
                      "train.planted")
    train_entry(cfg, corpus, checkpoint_path=tmp_path / "m.pt", curve_path=tmp_path / "m.csv",
                name="planted", progress=False)
    model, vocab, _ = load_checkpoint(tmp_path / "m.pt", "cpu")
    ids = np.asarray(corpus.split("test"), dtype=np.int64)
    text = vocab.decode(ids)
    best = {b.feature: b for b in cells.best_units(activations(model, ids),
                                                   cells.features(text))}
    assert abs(best["inside_quotes"].r) > 0.9, best["inside_quotes"]
    # and no such unit in the same network untrained: the training made it
    fresh = CharRNN(model.config).eval()
    untrained = {b.feature: b for b in cells.best_units(activations(fresh, ids),
                                                        cells.features(text))}
    assert abs(untrained["inside_quotes"].r) < 0.9
