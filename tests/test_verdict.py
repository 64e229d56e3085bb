"""The report's opening verdict (charlab.verdict), written from hand-made tables."""

from __future__ import annotations

import pandas as pd

from charlab.budget import equal_budget
from charlab.compare import MODEL_COLUMNS, PAIR_COLUMNS
from charlab.verdict import budget_wording, verdict_markdown

MODELS = pd.DataFrame([["ngram4", 1.6400, 1.59, 1.69], ["rnn3", 1.5712, 1.53, 1.61],
                       ["rnn", 1.7704, 1.73, 1.81], ["gpt", 1.5800, 1.54, 1.62]],
                      columns=MODEL_COLUMNS)


def _pairs(rnn3_vs_gpt: tuple[float, float, str]) -> pd.DataFrame:
    lo, hi, verdict = rnn3_vs_gpt
    return pd.DataFrame([
        ["ngram4", "rnn3", 0.0688, 0.050, 0.087, "b"],
        ["ngram4", "rnn", -0.1304, -0.146, -0.114, "a"],
        ["ngram4", "gpt", 0.0600, 0.040, 0.080, "b"],
        ["rnn3", "rnn", -0.1992, -0.22, -0.18, "a"],
        ["rnn3", "gpt", -0.0088, lo, hi, verdict],
        ["rnn", "gpt", 0.1904, 0.17, 0.21, "b"]], columns=PAIR_COLUMNS)


def test_clear_winner():
    text = verdict_markdown(MODELS, _pairs((-0.015, -0.002, "a")))
    assert text.startswith("## Verdict\n\n**rnn3** has the lowest test nll: 1.5712 nats/char "
                           "(95% interval 1.5300 to 1.6100).")
    # the runner-up is gpt; the margin is read the right way round (gpt - rnn3 > 0)
    assert ("It beats the runner-up, gpt (1.5800), by 0.0088 nats/char (95% interval "
            "0.0020 to 0.0150 for the difference).") in text
    assert "no interval of a difference from the best contains 0" in text


def test_a_tie_with_the_runner_up_is_said_once():
    text = verdict_markdown(MODELS, _pairs((-0.02, 0.003, "tie")))
    assert "an interval that contains 0: on this test split the two cannot be told apart" in text
    assert "Cannot be told apart from" not in text


def test_several_ties_are_listed():
    pairs = _pairs((-0.02, 0.003, "tie"))
    pairs.loc[0, ["lo", "hi", "verdict"]] = [-0.01, 0.14, "tie"]  # ngram4 vs rnn3
    text = verdict_markdown(MODELS, pairs)
    assert ("Cannot be told apart from rnn3 (the interval of the difference contains 0): "
            "gpt, ngram4.") in text


def test_equal_budget_ranking_change_is_reported():
    table = pd.DataFrame({"model": ["rnn", "rnn", "rnn3", "rnn3"], "step": [1, 2, 1, 2],
                          "chars": [1, 2, 1, 2], "flops": [1e12, 2e13, 2e13, 1e14],
                          "seconds": [1.0, 2.0, 3.0, 4.0], "val_nll": [2.0, 1.67, 1.9, 1.5]})
    at = equal_budget(table, {"ngram4": 1.8})
    text = verdict_markdown(MODELS, _pairs((-0.015, -0.002, "a")),
                            {budget_wording(2e13, "flops"): at})
    assert ("At equal budget (2e+13 training FLOPs, the most every trained model reached) "
            "the val nll is: rnn 1.6700, ngram4 1.8000, rnn3 1.9000.") in text
    assert ("The ranking changes: rnn < ngram4 < rnn3 at equal budget, rnn3 < rnn < ngram4 "
            "after the full runs (validation split).") in text
    same = equal_budget(table.assign(val_nll=[2.0, 1.95, 1.9, 1.5]))
    text = verdict_markdown(MODELS, _pairs((-0.015, -0.002, "a")), {"x": same})
    assert "The ranking is the one the full runs give on the validation split (rnn3 < rnn)" in text
    assert budget_wording(734.2, "seconds") == "734 s of training wall time"
