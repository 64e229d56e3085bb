"""Training FLOPs, budget tables and equal budgets (charlab.budget) on hand-made curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from charlab.budget import (
    AT_BUDGET_COLUMNS,
    BUDGET_COLUMNS,
    BudgetError,
    TrainedRun,
    budget_table,
    common_budget,
    equal_budget,
    forward_macs,
    interpolate_log,
    pareto_frontier,
    plot_budget,
    train_flops_per_char,
)

RNN = {"vocab_size": 65, "cell": "rnn", "layers": 1, "hidden_size": 512, "dropout": 0.1,
       "embedding_size": 0}
GPT = {"vocab_size": 65, "layers": 4, "heads": 4, "hidden_size": 128, "context": 128,
       "dropout": 0.0, "cell": "gpt"}


def test_recurrent_flops_by_hand():
    # one-hot input is a row lookup: recurrent 512 x 512, output 512 x 65
    assert forward_macs(RNN) == 512 * 512 + 512 * 65 == 295_424
    assert train_flops_per_char(RNN) == 6 * 295_424
    # the lecture's rnn3: two more layers, each input 512 x 512 and recurrent 512 x 512
    assert forward_macs({**RNN, "layers": 3}) == 295_424 + 2 * 2 * 512 * 512 == 1_344_000
    # an LSTM (4 gate blocks) with a 32-wide embedding, 2 layers of 64
    lstm = {**RNN, "cell": "lstm", "layers": 2, "hidden_size": 64, "embedding_size": 32}
    assert forward_macs(lstm) == (32 * 256 + 64 * 256) + 2 * 64 * 256 + 64 * 65 == 61_504
    gru = {**lstm, "cell": "gru"}
    assert forward_macs(gru) == (32 + 64) * 192 + 2 * 64 * 192 + 64 * 65


def test_gpt_flops_by_hand():
    # per block: qkv 3d^2, proj d^2, MLP 8d^2; causal attention (T + 1) d; tied output d V
    d, t = 128, 128
    per_block = 12 * d * d + (t + 1) * d
    assert forward_macs(GPT) == 4 * per_block + d * 65 == 860_800
    assert train_flops_per_char(GPT) == 6 * 860_800
    # attention grows with the window, the matmuls do not
    assert forward_macs({**GPT, "context": 256}) - forward_macs(GPT) == 4 * 128 * d


def test_bad_configs_are_one_line_naming_the_model():
    with pytest.raises(BudgetError, match=r"^rnn9: not a model config: unknown cell 'tcn'"):
        forward_macs({**RNN, "cell": "tcn"}, "rnn9")
    with pytest.raises(BudgetError, match=r"^model_config: not a model config: unknown model "
                                          r"config key\(s\): heads"):
        forward_macs({**RNN, "heads": 2})
    with pytest.raises(BudgetError, match=r"^model_config: not a model config"):
        forward_macs({**GPT, "context": "long"})


def _curve(steps, vals, seconds) -> pd.DataFrame:
    return pd.DataFrame({"step": steps, "train_loss": np.array(vals) + 0.1, "val_loss": vals,
                         "chars_per_sec": 1000.0, "elapsed_sec": seconds})


def test_budget_table_rows():
    runs = {"rnn": TrainedRun(_curve([200, 400], [2.1, 1.9], [30.0, 61.5]), RNN, 12_800),
            "gpt": TrainedRun(_curve([100], [2.5], [40.0]), GPT, 4096)}
    table = budget_table(runs)
    assert list(table.columns) == BUDGET_COLUMNS
    assert table["model"].tolist() == ["rnn", "rnn", "gpt"]
    assert table["chars"].tolist() == [2_560_000, 5_120_000, 409_600]
    assert table["flops"].tolist() == [2_560_000 * 6 * 295_424, 5_120_000 * 6 * 295_424,
                                       409_600 * 6 * 860_800]
    assert table["seconds"].tolist() == [30.0, 61.5, 40.0]
    assert table["val_nll"].tolist() == [2.1, 1.9, 2.5]
    assert list(budget_table({}).columns) == BUDGET_COLUMNS


def test_bad_curves_name_the_model():
    curve = _curve([200, 400], [2.1, 1.9], [30.0, 61.5])
    with pytest.raises(BudgetError, match=r"^rnn: training curve lacks column\(s\) val_loss"):
        budget_table({"rnn": TrainedRun(curve.drop(columns="val_loss"), RNN, 100)})
    with pytest.raises(BudgetError, match=r"^rnn: training curve steps"):
        budget_table({"rnn": TrainedRun(curve.iloc[::-1], RNN, 100)})


# Hand-made budget table: A evaluated at 1e9 and 1e11 FLOPs, B at 1e8, 1e9, 1e10.
HAND = pd.DataFrame({
    "model": ["A", "A", "B", "B", "B"],
    "step": [1, 100, 1, 10, 100],
    "chars": [1, 100, 1, 10, 100],
    "flops": [1e9, 1e11, 1e8, 1e9, 1e10],
    "seconds": [10.0, 1000.0, 1.0, 4.0, 100.0],
    "val_nll": [2.1, 1.6, 2.5, 2.0, 1.7]}, columns=BUDGET_COLUMNS)


def test_interpolation_is_linear_in_log_budget():
    # 1e10 is half-way between 1e9 and 1e11 in log: the mean, not the linear 2.0545
    assert interpolate_log([1e9, 1e11], [2.1, 1.6], 1e10) == pytest.approx(1.85)
    # a quarter of the way in log (10^9.5): a quarter of the way down
    assert interpolate_log([1e9, 1e11], [2.1, 1.6], 10 ** 9.5) == pytest.approx(1.975)
    assert interpolate_log([1e9, 1e11], [2.1, 1.6], 1e11) == 1.6
    assert math.isnan(interpolate_log([1e9, 1e11], [2.1, 1.6], 1e8))  # before any point


def test_equal_budget_by_hand():
    # every trained model reached 1e10 FLOPs (B stops there); A is read half-way in log
    assert common_budget(HAND) == 1e10
    at = equal_budget(HAND, {"ngram4": 1.8})
    assert list(at.columns) == AT_BUDGET_COLUMNS
    assert at["model"].tolist() == ["B", "ngram4", "A"]  # best first
    assert at["val_nll"].tolist() == pytest.approx([1.7, 1.8, 1.85])
    assert (at["budget"] == 1e10).all()
    assert at["full_val_nll"].tolist() == pytest.approx([1.7, 1.8, 1.6])  # best of the run
    # at equal wall time: B stops at 100 s; A between 10 s and 1000 s, half-way in log
    by_time = equal_budget(HAND, by="seconds")
    assert by_time.set_index("model")["val_nll"].to_dict() == pytest.approx(
        {"A": 1.85, "B": 1.7})


def test_a_model_first_evaluated_after_the_budget_is_left_blank():
    late = pd.DataFrame({"model": "C", "step": [1, 2], "chars": [1, 2], "flops": [2e10, 4e10],
                         "seconds": [1.0, 2.0], "val_nll": [1.9, 1.5]})
    at = equal_budget(pd.concat([HAND, late], ignore_index=True)).set_index("model")
    assert at.loc["A", "budget"] == 1e10  # C reached 4e10 > 1e10: the budget stays
    assert math.isnan(at.loc["C", "val_nll"])
    assert at.index[-1] == "C"


def test_pareto_frontier():
    front = pareto_frontier(HAND)
    # B's 2.5 at 1e8, B's 2.0 at 1e9 (A's 2.1 there is beaten), B at 1e10, A at 1e11
    assert list(zip(front["model"], front["flops"], strict=True)) == [
        ("B", 1e8), ("B", 1e9), ("B", 1e10), ("A", 1e11)]
    # an n-gram at 2.2 is free: it beats B's first point at every budget
    assert pareto_frontier(HAND, {"ngram4": 2.2})["flops"].tolist() == [1e9, 1e10, 1e11]


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "budget.png"
    plot_budget(HAND, {"ngram4": 1.8, "ngram10": 1.9}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_budget(HAND.iloc[:0], {}, tmp_path / "empty.png")  # no model: still a figure
    assert (tmp_path / "empty.png").stat().st_size > 0
