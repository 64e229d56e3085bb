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


def test_analysis_sections_in_the_report(tmp_path):
    from charlab.report import AnalysisFiles, analysis_markdown

    classes = pd.DataFrame([
        {"model": m, "group": g, "class": c, "label": f"{c} · {m}", "chars": 10,
         "share": share, "bpc": bpc}
        for m, off in (("rnn3", 0.0), ("ngram4", 0.5))
        for g, c, share, bpc in (("kind", "lowercase", 0.75, 1.0), ("kind", "space", 0.25, 3.0),
                                 ("position", "word_inside", 1.0, 1.5))
        for bpc in (bpc + off,)])
    win = {"position": 5, "char": "|", "before": "a`b\nc", "after": "d", "bits_a": 1.0,
           "bits_b": 4.0}
    summary = {"class_figure": "class_bpc.png", "pairs": [
        {"a": "rnn3", "b": "ngram4", "page": "compare_rnn3_vs_ngram4.html",
         "figure": "compare_rnn3_vs_ngram4.png", "bpc_a": 1.5, "bpc_b": 2.0,
         "a_better_share": 0.6, "wins_a": [win], "wins_b": [win]}],
        "cells": [{"model": "rnn3", "cell": "lstm", "chars": 1000, "page": "cells_rnn3.html",
                   "figure": "cells_rnn3.png", "saturation_figure": "saturation_rnn3.png",
                   "best": [{"feature": "inside_word", "unit": "l1.h3", "r": 0.91,
                             "share": 0.7},
                            {"feature": "inside_quotes", "unit": None, "r": None,
                             "share": 0.0}],
                   "saturation": [{"input": {"left": 0.1, "right": 0.25}}]}]}
    md = "\n".join(analysis_markdown(classes, summary, ["rnn3", "ngram4"], "a/figures",
                                     "a/pages"))
    assert "| group | class | share | rnn3 | ngram4 |" in md
    assert "| kind | lowercase | 75.0% | 1.000 | 1.500 |" in md
    assert "| position | word inside | 100.0% | 1.500 | 2.000 |" in md
    assert "![Bits/char by class](a/figures/class_bpc.png)" in md
    assert "[compare_rnn3_vs_ngram4.html](a/pages/compare_rnn3_vs_ngram4.html)" in md
    assert "![rnn3 against ngram4](a/figures/compare_rnn3_vs_ngram4.png)" in md
    # a context's newline, pipe and backtick cannot break the table
    assert "| 1.00 | 4.00 | `a'b↵c`**`\\|`**`d` |" in md
    assert "| inside_word | 70.0% | l1.h3 | +0.910 |" in md
    assert "| inside_quotes | 0.0% | – | – |" in md
    assert "| 1 | input | 10.0% | 25.0% |" in md
    assert "![gate saturation of rnn3](a/figures/saturation_rnn3.png)" in md

    # write_report puts the sections between the figures and the samples
    csv = tmp_path / "metrics.csv"
    metrics_table().to_csv(csv, index=False)
    (tmp_path / "classes.csv").write_text(classes.to_csv(index=False))
    (tmp_path / "summary.json").write_text(__import__("json").dumps(summary))
    write_report(csv, {}, {"rnn3": "x"}, tmp_path / "out" / "report.md", tmp_path / "figs",
                 AnalysisFiles(tmp_path / "classes.csv", tmp_path / "summary.json",
                               tmp_path / "an" / "figures", tmp_path / "an" / "pages"))
    text = (tmp_path / "out" / "report.md").read_text()
    assert text.index("## Figures") < text.index("## Where the bits go") < text.index(
        "## Samples")
    assert "(../an/figures/class_bpc.png)" in text


def test_a_long_prime_leaves_the_excerpt_to_the_generated_text() -> None:
    """A 5000-character sample.prime filled the 300-character excerpt by itself (issue 20):
    the excerpt is now the prime's last 100 characters, then what the model wrote."""
    from charlab.report import EXCERPT_CHARS, PRIME_CONTEXT

    prime = "".join(f"line {i}\n" for i in range(700))[:5000]
    written = "GENERATED " * 40
    md = render_markdown(metrics_table(), {}, {"rnn3": prime + written}, {}, prime=prime)
    excerpt = md.split("```text\n", 1)[1].split("\n```", 1)[0]
    assert excerpt == "…" + prime[-PRIME_CONTEXT:] + written[:EXCERPT_CHARS - PRIME_CONTEXT - 1]
    assert "GENERATED" in excerpt


@pytest.mark.parametrize("prime", ["", "ROMEO:\n"])
def test_a_short_prime_excerpt_is_the_sample_start(prime: str) -> None:
    sample = prime + "x" * 1000
    md = render_markdown(metrics_table(), {}, {"rnn3": sample}, {}, prime=prime)
    assert "```text\n" + sample[:300] + "\n```" in md
