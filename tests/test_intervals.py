"""The intervals stage (charlab.intervals) and what the report makes of it (report_stats):
seeds of one configuration in the model set, intervals and pairs from the scores, the
verdict first, mean ± sd over seeds, the budget table and figure; on a tiny workspace with
two seeds of one entry, the second written as a YAML merge key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY
from helpers import one_line_error, run_stage, snapshot

from charlab.budget import BUDGET_COLUMNS
from charlab.compare import CONFIG_COLUMNS, PAIR_COLUMNS, Bootstrap, compare, compare_configs
from charlab.evaluate import SplitScores, read_scores
from charlab.intervals import compute, read, write
from charlab.models import ModelSet, seed_groups
from charlab.params.core import ParamsError, load, parse
from charlab.params.readers import IntervalsParams
from charlab.params.sections import validate_all
from charlab.params.training import parse_entry

BLOCK = 20  # of the 299 scored test characters of the built workspace


def seeded_params(p: dict) -> str:
    """params.yaml text: ``p`` without its train: section, then a train: section of
    TINY's ``rnn`` and a second seed of it written as a merge key, as params.yaml says."""
    rest = yaml.safe_dump({k: v for k, v in p.items() if k != "train"}, sort_keys=False)
    entry = yaml.safe_dump(TINY, sort_keys=False).replace("\n", "\n    ").rstrip()
    return (rest + "train:\n  rnn: &rnn\n    " + entry + "\n"
            "  rnn_s2: {<<: *rnn, seed: 2}\n")


@pytest.fixture(scope="module")
def seeded(pipeline_built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built workspace (one TINY rnn, ngram2) with a second seed of rnn, every reader
    stage run."""
    ws = tmp_path_factory.mktemp("seeded") / "ws"
    shutil.copytree(pipeline_built, ws)
    p = yaml.safe_load((ws / "params.yaml").read_text())
    p["intervals"]["block"] = BLOCK
    p["analyze"].update(threads=1, cells_chars=200, excerpt_chars=100)
    (ws / "params.yaml").write_text(seeded_params(p))
    for stage, key in [("validate", ""), ("train", "rnn_s2"), ("sample", ""), ("evaluate", ""),
                       ("analyze", ""), ("intervals", ""), ("report", "")]:
        assert run_stage(ws, stage, key=key)[0] == 0, stage
    return ws


def test_a_merge_key_entry_is_a_seed_of_its_anchor(seeded: Path) -> None:
    checked = validate_all(load(seeded / "params.yaml"))  # charlab's reader takes merge keys
    assert checked["train"]["rnn_s2"].seed == 2
    assert checked["train"]["rnn_s2"].to_dict() == {**checked["train"]["rnn"].to_dict(),
                                                    "seed": 2}
    assert json.loads((seeded / "data/models.json").read_text()) == {
        "ngram_orders": [2], "trained": ["rnn", "rnn_s2"], "seeds": {"rnn": ["rnn", "rnn_s2"]}}
    ms = ModelSet.load(seeded / "data/models.json")
    assert ms.configs() == {"ngram2": ("ngram2",), "rnn": ("rnn", "rnn_s2")}


def test_only_entries_equal_but_for_the_seed_are_one_configuration() -> None:
    entries = {"a": parse_entry(TINY, "train.a"), "b": parse_entry({**TINY, "seed": 9}, "train.b"),
               "c": parse_entry({**TINY, "lr": 0.02}, "train.c"),
               "d": parse_entry({**TINY, "seed": 3, "lr": 0.02}, "train.d"),
               "e": parse_entry({**TINY, "hidden_size": 4}, "train.e")}
    assert seed_groups(entries) == {"a": ("a", "b"), "c": ("c", "d")}
    ms = ModelSet((2,), tuple(entries), seed_groups(entries))
    assert list(ms.configs()) == ["ngram2", "a", "c", "e"]
    assert ModelSet((2,), ("a",)).to_json() == {"ngram_orders": [2], "trained": ["a"]}


def test_the_intervals_are_the_bootstraps_of_the_scores(seeded: Path) -> None:
    scores = read_scores(seeded / "data/scores/test_logprobs.npz")
    names = ["ngram2", "rnn", "rnn_s2"]
    lp = np.stack([scores[m] for m in names])
    boot = Bootstrap(block=BLOCK)
    models, pairs = compare(names, lp, boot)
    configs, config_pairs = compare_configs(names, lp, {"ngram2": ["ngram2"],
                                                        "rnn": ["rnn", "rnn_s2"]}, boot)
    metrics = json.loads((seeded / "metrics/intervals.json").read_text())
    assert list(metrics) == names
    for r in models.itertuples():
        assert metrics[r.model] == pytest.approx(
            {"test_nll": r.nll, "test_nll_lo": r.lo, "test_nll_hi": r.hi}, abs=1e-6)
        assert r.lo < r.nll < r.hi
    written = pd.read_csv(seeded / "metrics/pairs.csv")
    assert list(written.columns) == PAIR_COLUMNS == ["a", "b", "diff", "lo", "hi", "verdict"]
    assert written[["a", "b", "verdict"]].values.tolist() == pairs[["a", "b", "verdict"]
                                                                   ].values.tolist()
    for r in written.itertuples():  # the verdict is what the interval says
        assert r.verdict == ("a" if r.hi < 0 else "b" if r.lo > 0 else "tie")
    assert np.allclose(written[["diff", "lo", "hi"]], pairs[["diff", "lo", "hi"]], atol=1e-6)
    # the configuration of two seeds: their mean and sd, and an interval of both spreads
    table = pd.read_csv(seeded / "metrics/configs.csv")
    assert list(table.columns) == CONFIG_COLUMNS
    rnn = table.set_index("config").loc["rnn"]
    nlls = [-scores[m].mean() for m in ("rnn", "rnn_s2")]
    assert rnn["seeds"] == 2 and rnn["mean"] == pytest.approx(np.mean(nlls), abs=1e-6)
    assert rnn["sd"] == pytest.approx(np.std(nlls, ddof=1), abs=1e-6)
    assert np.allclose(pd.read_csv(seeded / "metrics/config_pairs.csv")[["diff", "lo", "hi"]],
                       config_pairs[["diff", "lo", "hi"]], atol=1e-6)


def test_the_report_opens_with_the_verdict_and_gives_mean_and_sd(seeded: Path) -> None:
    report = (seeded / "metrics/report.md").read_text()
    assert report.startswith("# charlab report\n\n## Verdict\n\n**")
    verdict = report.split("## Every model", 1)[0]
    assert "At equal budget (" in verdict
    assert "\n\nConfigurations of several seeds count as one above, by their mean test nll " \
           "over the seeds: rnn (rnn, rnn_s2); their intervals include the seeds' spread " \
           "(see Seeds).\n\nAt equal budget (" in verdict
    configs = pd.read_csv(seeded / "metrics/configs.csv").set_index("config")
    row = configs.loc["rnn"]
    assert (f"| rnn | rnn, rnn_s2 | {row['mean']:.4f} ± {row['sd']:.4f} | "
            f"{row['lo']:.4f} to {row['hi']:.4f} |") in report
    for heading in ("## How sure: intervals on the test split", "## Seeds",
                    "## At equal budget", "### At equal FLOPs: ",
                    "### At equal wall time: "):
        assert heading in report
    budget = pd.read_csv(seeded / "metrics/budget.csv")
    assert list(budget.columns) == BUDGET_COLUMNS
    assert budget["model"].tolist() == ["rnn", "rnn", "rnn_s2", "rnn_s2"]  # steps 2 and 4
    assert (seeded / "metrics/figures/budget_flops.png").read_bytes()[:4] == b"\x89PNG"
    assert "![Validation nll against training FLOPs](figures/budget_flops.png)" in report


def test_a_block_longer_than_the_split_is_one_line_before_any_work(
        seeded: Path, tmp_path: Path, capsys) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(seeded, ws)
    text = (ws / "params.yaml").read_text().replace(f"block: {BLOCK}", "block: 1000")
    (ws / "params.yaml").write_text(text)
    before = snapshot(ws)
    code, _, err = run_stage(ws, "intervals", capsys)
    assert code == 2
    assert one_line_error(err) == (
        "error: intervals.block: 1000 characters leave fewer than 2 blocks in the 299 scored "
        "test characters (a resample draws whole blocks); use at most 149")
    assert snapshot(ws) == before


def test_the_report_refuses_intervals_of_another_model_set(seeded: Path, tmp_path: Path,
                                                            capsys) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(seeded, ws)
    (ws / "data/models.json").write_text(json.dumps({"ngram_orders": [2], "trained": ["rnn"]}))
    code, _, err = run_stage(ws, "report", capsys)
    assert code == 2
    assert one_line_error(err) == (
        "error: metrics/intervals.json: intervals of ngram2, rnn, rnn_s2, the models are "
        "ngram2, rnn: rerun the intervals stage (`dvc repro`)")


def test_models_without_scores_or_a_run_without_its_config_are_one_line(
        seeded: Path, tmp_path: Path, capsys) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(seeded, ws)
    (ws / "data/models.json").write_text(json.dumps({"ngram_orders": [2, 3],
                                                     "trained": ["rnn", "rnn_s2"]}))
    before = snapshot(ws)
    code, _, err = run_stage(ws, "intervals", capsys)
    assert code == 2
    assert one_line_error(err) == ("error: no scores for ngram3 (the scores file has ngram2, "
                                   "rnn, rnn_s2): rerun evaluate (`dvc repro`)")
    assert snapshot(ws) == before
    shutil.copy(seeded / "data/models.json", ws / "data/models.json")
    run = json.loads((ws / "metrics/runs/rnn_s2.json").read_text())
    del run["model_config"]  # what a charlab before issue 19 wrote
    (ws / "metrics/runs/rnn_s2.json").write_text(json.dumps(run))
    code, _, err = run_stage(ws, "report", capsys)
    assert code == 2
    assert one_line_error(err) == ("error: metrics/runs/rnn_s2.json: no model_config (written "
                                   "by an older charlab); retrain rnn_s2 (`dvc repro`)")


@pytest.mark.parametrize("raw,message", [
    ({"block": 0}, r"^intervals\.block: must be > 0, got 0$"),
    ({"resamples": 5}, r"^intervals\.resamples: must be at least 10 \(a percentile of fewer "
                       r"is noise\), got 5$"),
    ({"resamples": 10**7}, r"^intervals\.resamples: must be at most 1e\+06"),
    ({"seed": -1}, r"^intervals\.seed: must be >= 0, got -1$"),
    ({"level": 0.9}, r"^intervals\.level: unknown key; allowed keys: block, resamples, seed$"),
], ids=["block-0", "resamples-5", "resamples-1e7", "seed-negative", "unknown-key"])
def test_intervals_params_errors(raw: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        parse(IntervalsParams, raw, "intervals")


def test_tables_read_back_as_written_whatever_the_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ("null", "nan", "NA")  # names pandas would read as missing values
    scores = SplitScores("test", 0, names, -rng.uniform(0.5, 3, size=(3, 400)))
    iv = compute(scores, {"null": ("null", "nan"), "NA": ("NA",)}, Bootstrap(block=20))
    paths = [tmp_path / n for n in ("i.json", "p.csv", "c.csv", "cp.csv")]
    write(iv, *paths)
    back = read(*paths)
    assert back.models["model"].tolist() == ["null", "nan", "NA"]
    assert back.configs["config"].tolist() == ["null", "NA"]
    assert np.isnan(back.configs.set_index("config").loc["NA", "sd"])
    assert back.pairs[["a", "b"]].values.tolist() == [["null", "nan"], ["null", "NA"],
                                                      ["nan", "NA"]]
    assert back.several_seeds
