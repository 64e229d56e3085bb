import math

import pandas as pd
import pytest

from charlab.report import TrainedInfo, read_run_info, render_markdown, write_report


def metrics_table() -> pd.DataFrame:
    rows = []
    for model, nll in [("ngram4", 1.64), ("rnn", 1.9), ("rnn3", 1.55)]:
        for split, shift in [("train", -0.2), ("val", 0.0), ("test", 0.05)]:
            v = nll + shift
            rows.append({"model": model, "split": split, "nll": v, "bpc": v / math.log(2),
                         "perplexity": math.exp(v), "params": 1000, "chars": 5000})
    return pd.DataFrame(rows)


def curve(steps, losses) -> pd.DataFrame:
    return pd.DataFrame({"step": steps, "train_loss": losses, "val_loss": losses,
                         "chars_per_sec": [1000.0] * len(steps),
                         "elapsed_sec": [s * 1.0 for s in steps]})


def test_trained_info_throughput():
    # 100 chars per step at 1000 chars/s: 0.1 s per step, 1000 chars/s overall
    info = TrainedInfo(curve(curve_steps := [10, 20], [2.0, 1.5]), chars_per_step=100)
    assert info.chars_per_sec == pytest.approx(1000.0)
    assert info.train_seconds == curve_steps[-1]


def test_markdown_table_matches_metrics():
    m = metrics_table()
    run = {"device": "cpu", "precision": "bf16"}
    md = render_markdown(m, {"rnn3": TrainedInfo(curve([5, 10], [2.0, 1.6]), 100, run)},
                         {"rnn3": "First Citizen:\nhello"}, {"Curves": "figures/c.png"})
    assert "Best model on the test split: **rnn3**" in md
    test = m[m.split == "test"].sort_values("nll")
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in table_rows[1:]] == list(test.model)
    for row in test.itertuples():
        assert f"| {row.model} | 1,000 | {row.nll:.4f} | {row.bpc:.4f} |" in md
    assert "![Curves](figures/c.png)" in md
    assert "### rnn3" in md and "hello" in md


def test_write_report_files(tmp_path):
    csv = tmp_path / "metrics.csv"
    metrics_table().to_csv(csv, index=False)
    trained = {"rnn": TrainedInfo(curve([5, 10], [2.5, 2.0]), 640, {"device": "cpu"}),
               "rnn3": TrainedInfo(curve([5, 10], [2.2, 1.7]), 640, {"device": "cpu"})}
    write_report(csv, trained, {"ngram4": "abc"}, tmp_path / "report.md", tmp_path / "figures")
    for name in ("loss_curves.png", "test_bpc.png"):
        data = (tmp_path / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    md = (tmp_path / "report.md").read_text()
    assert "(figures/loss_curves.png)" in md and "(figures/test_bpc.png)" in md


@pytest.mark.parametrize("run,shown", [
    ({"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "precision": "tf32"},
     "| cuda (NVIDIA H100 80GB HBM3) | tf32 |"),
    ({"device": "cpu", "device_name": "Intel(R) Xeon(R)", "precision": "bf16"}, "| cpu | bf16 |"),
    ({}, "| ? | ? |"),  # trained before runs wrote their info
])
def test_the_table_names_the_gpu_and_the_precision(run: dict, shown: str) -> None:
    md = render_markdown(metrics_table(), {"rnn3": TrainedInfo(curve([5, 10], [2.0, 1.6]), 100,
                                                               run)}, {}, {})
    row = next(line for line in md.splitlines() if line.startswith("| rnn3 |"))
    assert row.endswith(shown)


def test_run_info_missing_or_foreign_is_empty(tmp_path) -> None:
    assert read_run_info(tmp_path / "absent.json") == {}
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_run_info(tmp_path / "list.json") == {}
