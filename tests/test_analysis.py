"""charlab.analysis and the analyze stage: classes of characters, numbers that agree with
the metrics, a pair of models whose colour map is known, the stage's outputs and errors, the
`charlab compare` / `charlab cells` commands, and the pages in a real browser."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY, make_text, pixels_like, screenshot
from helpers import make_node, node_kind, run_stage, train_entry

from charlab import analysis, render
from charlab.analysis import (
    AnalysisError,
    AnalyzeSettings,
    bits_gain,
    class_masks,
    class_table,
    compare_page,
    gain_levels,
    top_contexts,
)
from charlab.cli import main as cli_main
from charlab.encoding import Corpus, Vocab, encode_corpus
from charlab.evaluate import ScoresError, SplitScores, read_scores, score_splits, write_metrics
from charlab.models import load_models
from charlab.ngram import NGramLM
from charlab.params.core import ParamsError, parse
from charlab.params.readers import AnalyzeParams
from charlab.params.training import parse_entry

LN2 = math.log(2)
# conftest's TINY as a two-layer LSTM: the analysis reads its cells' states
LSTM2 = dict(TINY, cell="lstm", layers=2, batch_size=4, seq_length=16, max_steps=6,
             eval_every=3)


# --- classes -------------------------------------------------------------------------------

def test_class_masks_by_hand() -> None:
    text = "Ab c\nD1!é'x"
    m = class_masks(text)
    # predicted characters: b ' ' c \n D 1 ! é ' x
    assert m[("kind", "lowercase")].tolist() == [1, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    assert m[("kind", "uppercase")].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert m[("kind", "space")].tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert m[("kind", "newline")].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert m[("kind", "digit")].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert m[("kind", "punctuation")].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 1, 0]
    assert not m[("kind", "other")].any()
    assert m[("position", "line_start")].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert m[("position", "word_start")].tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
    # 'b' after 'A'; '1' after 'D'; the apostrophe between 'é' and 'x'; then 'x'
    assert m[("position", "word_inside")].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 1, 1]
    for group in ("kind", "position"):  # each group is a partition of the predicted chars
        total = sum(v.astype(int) for (g, _), v in m.items() if g == group)
        assert total.tolist() == [1] * 10
    assert analysis.char_kind("$") == "other" and analysis.char_kind("\t") == "space"


def test_class_table_by_hand() -> None:
    text = "aB a"
    lp = np.log([0.5, 0.25, 0.125])  # B: 1 bit, ' ': 2 bits, a: 3 bits
    t = class_table(text, {"m": lp}).set_index(["group", "class"])
    assert t.loc[("kind", "uppercase"), "bpc"] == pytest.approx(1.0)
    assert t.loc[("kind", "space"), "bpc"] == pytest.approx(2.0)
    assert t.loc[("kind", "lowercase"), "bpc"] == pytest.approx(3.0)
    assert t.loc[("position", "word_inside"), "bpc"] == pytest.approx(1.0)  # B after a
    assert t.loc[("position", "word_start"), "bpc"] == pytest.approx(3.0)   # a after ' '
    assert t.loc[("kind", "lowercase"), "share"] == pytest.approx(1 / 3)
    assert ("kind", "digit") not in t.index  # no character of the class: no row
    assert t.loc[("position", "word_inside"), "label"] == "word_inside · m"
    with pytest.raises(AnalysisError, match="m: 2 scores for 3 predicted characters"):
        class_table(text, {"m": lp[:2]})


# --- a built workspace: corpus, n-grams, a trained LSTM, scores -------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("analysis")
    (d / "corpus.txt").write_text(make_text(12_000, seed=4), encoding="utf-8")
    paths = [d / n for n in ("vocab.json", "corpus.bin", "split.json")]
    encode_corpus(d / "corpus.txt", *paths, val_fraction=0.1, test_fraction=0.1)
    corpus = Corpus.load(*paths)
    for order in (1, 3):
        NGramLM.fit(corpus.split("train"), corpus.vocab.size, order).save(
            d / f"ngram{order}.npz", corpus.vocab)
    train_entry(parse_entry(LSTM2, "train.lstm2"), corpus, checkpoint_path=d / "lstm2.pt",
                curve_path=d / "lstm2.csv", name="lstm2", progress=False)
    files = {"ngram1": d / "ngram1.npz", "ngram3": d / "ngram3.npz", "lstm2": d / "lstm2.pt"}
    table, scores = score_splits(load_models(files, corpus.vocab), corpus)
    write_metrics(table, d / "metrics.csv", d / "metrics.json", d / "bar.csv",
                  scores=scores, scores_path=d / "scores.npz")
    return {"dir": d, "corpus": corpus, "files": files}


def test_scores_sum_to_the_metrics(built: dict) -> None:
    d = built["dir"]
    scores = read_scores(d / "scores.npz")
    metrics = pd.read_csv(d / "metrics.csv")
    test = metrics[metrics.split == "test"].set_index("model")
    assert scores.models == ("ngram1", "ngram3", "lstm2") and scores.split == "test"
    a, b = built["corpus"].manifest.splits["test"]
    assert scores.start == a and scores.logprobs.shape == (3, b - a - 1)
    assert scores.logprobs.dtype == np.float64
    for name in scores.models:
        assert -scores[name].sum() / scores.logprobs.shape[1] == pytest.approx(
            test.loc[name, "nll"], abs=1e-6)  # metrics.csv rounds to 6 decimals
        assert int(test.loc[name, "chars"]) == scores.logprobs.shape[1]


def test_class_bits_weighted_by_share_add_up_to_the_test_bpc(built: dict) -> None:
    d, corpus = built["dir"], built["corpus"]
    scores = read_scores(d / "scores.npz")
    text = corpus.vocab.decode(corpus.split("test"))
    table = class_table(text, {m: scores[m] for m in scores.models})
    bpc = pd.read_csv(d / "metrics.csv").query("split == 'test'").set_index("model")["bpc"]
    groups = table.groupby(["model", "group"])
    assert len(groups) == 6  # kind and position, for each of 3 models
    for (model, _), rows in groups:
        weighted = (rows["share"] * rows["bpc"]).sum()
        assert rows["share"].sum() == pytest.approx(1.0, abs=1e-12)
        assert weighted == pytest.approx(bpc[model], abs=1e-6)  # metrics.csv: 6 decimals
        assert weighted == pytest.approx(-scores[model].mean() / LN2, abs=1e-12)
        assert rows["chars"].sum() == scores.logprobs.shape[1]


@pytest.mark.parametrize("damage,message", [
    ("missing", r"no scores file \(run the evaluate stage"),
    ("garbage", r"not a readable charlab scores file \(BadZipFile: "),
    ("not-zip", r"^\S+s\.npz: not a charlab scores file \(not an \.npz archive\)$"),
    ("missing-key", r"not a readable charlab scores file \(KeyError: 'logprobs is not a file"),
    ("pickled", r"not a readable charlab scores file \(ValueError: Object arrays cannot be "
                r"loaded when allow_pickle=False\)"),
    ("format", r"scores format 'other', this charlab reads 'charlab-logprobs-1'"),
    ("shape", r"logprobs has shape \(3,\) for 2 models"),
], ids=["missing", "garbage", "not-zip", "missing-key", "pickled", "format", "shape"])
def test_read_scores_errors(tmp_path: Path, damage: str, message: str) -> None:
    path = tmp_path / "s.npz"
    base = {"format": np.array("charlab-logprobs-1"), "split": np.array("test"),
            "start": np.array(0), "models": np.array(["a", "b"]),
            "logprobs": np.zeros((2, 3))}
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "not-zip":  # a pickle: np.load would unpickle it, read_scores never does
        path.write_bytes(b"\x80\x04\x95" + b"x" * 20)
    elif damage == "missing-key":
        np.savez(path, **{k: v for k, v in base.items() if k != "logprobs"})
    elif damage == "pickled":
        np.savez(path, **{**base, "models": np.array([{"x": 1}, 2], dtype=object)})
    elif damage == "format":
        np.savez(path, **{**base, "format": np.array("other")})
    elif damage == "shape":
        np.savez(path, **{**base, "logprobs": np.zeros(3)})
    with pytest.raises(ScoresError, match=message):
        read_scores(path)


# --- two models whose colour map is known ---------------------------------------------------

def known_pair() -> tuple[str, np.ndarray, np.ndarray]:
    """A bigram model of a cycle 'abcdefgh' and a unigram model of it. On the cycle forwards
    the bigram is sure of each next character, 3 bits better than the unigram's 1/8;
    backwards it has never seen a successor: about 9 bits worse."""
    vocab = Vocab(tuple("abcdefgh"))
    cyc = np.tile(np.arange(8), 500)
    a, b = NGramLM.fit(cyc, 8, 1), NGramLM.fit(cyc, 8, 0)
    ids = np.r_[np.tile(np.arange(8), 50), np.tile(np.arange(8)[::-1], 50)]
    return vocab.decode(ids), a.log_probs(ids), b.log_probs(ids)


def test_known_pair_colour_map() -> None:
    text, lp_a, lp_b = known_pair()
    gain = bits_gain(lp_a, lp_b)
    assert gain[:399] == pytest.approx(3.0, abs=0.01)  # log2(8): the unigram pays 3 bits
    assert (gain[399:] < -8).all()
    lev = gain_levels(text, gain)
    assert lev[0] == 0 and (lev[1:400] == 4).all() and (lev[400:] == -5).all()
    html = compare_page(text, "bigram", "unigram", lp_a, lp_b, class_table(
        text, {"bigram": lp_a, "unigram": lp_b}), n_contexts=3)
    body = html.split("<h2>The text</h2>")[1]
    assert body.count('<span class="p4">') == 1 and body.count('<span class="m5">') == 1
    assert "bigram is better on 49.9% of the characters" in html


def test_top_contexts_by_hand() -> None:
    text = "abcdefghij"
    lp_b = np.zeros(9)
    lp_a = np.zeros(9)
    lp_a[[1, 2, 6]] = [LN2 * 3, LN2 * 2, LN2 * 1]   # A better by 3, 2, 1 bits at c, d, h
    lp_a[4] = -LN2 * 5                               # B better by 5 bits at f
    wins_a, wins_b = top_contexts(text, lp_a, lp_b, n=2, width=3)
    # 'd' is within 3 characters of 'c', so the second win is 'h'
    assert [(c.position, c.char) for c in wins_a] == [(2, "c"), (7, "h")]
    assert wins_a[0].before == "ab" and wins_a[0].gain == pytest.approx(3.0)
    assert (wins_b[0].position, wins_b[0].char, wins_b[0].gain) == (5, "f", pytest.approx(-5))
    assert wins_b[0].before == "cde" and wins_b[0].bits_a == pytest.approx(5.0)


def test_known_pair_page_in_a_real_browser(browser: str, tmp_path: Path) -> None:
    text, lp_a, lp_b = known_pair()
    page = tmp_path / "pair.html"
    page.write_text(compare_page(text, "bigram", "unigram", lp_a, lp_b, class_table(
        text, {"bigram": lp_a, "unigram": lp_b}), n_contexts=2), encoding="utf-8")
    img = screenshot(browser, page, tmp_path / "pair.png", (1000, 1600))
    blue, red = pixels_like(img, render.POSITIVE[3]), pixels_like(img, render.NEGATIVE[4])
    others = max(pixels_like(img, c) for c in render.POSITIVE[:3] + render.NEGATIVE[:4])
    # the text is coloured in exactly the two known colours (others only in the legend)
    assert blue > 10_000 and red > 10_000 and others < blue / 10, (blue, red, others)


# --- the stage's library function ---------------------------------------------------------------

def run_analyze(built: dict, out: Path, **kw) -> dict:
    d = built["dir"]
    return analysis.analyze(read_scores(d / "scores.npz"), built["corpus"],
                            {"lstm2": built["files"]["lstm2"]}, ["ngram1", "ngram3"],
                            AnalyzeSettings(excerpt_chars=300, cells_chars=800, **kw),
                            class_csv=out / "classes.csv", figures_dir=out / "figures",
                            pages_dir=out / "pages", summary=out / "summary.json")


def test_analyze_writes_every_output(built: dict, tmp_path: Path) -> None:
    summary = run_analyze(built, tmp_path, pairs=(("ngram1", "ngram3"),))
    scores = read_scores(built["dir"] / "scores.npz")
    best_ngram = min(("ngram1", "ngram3"), key=lambda n: -scores[n].sum())
    assert [(p["a"], p["b"]) for p in summary["pairs"]] == [("lstm2", best_ngram),
                                                            ("ngram1", "ngram3")]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    pair = summary["pairs"][0]
    assert len(pair["wins_a"]) == 20 and len(pair["wins_b"]) == 20
    assert pair["wins_a"][0]["bits_b"] - pair["wins_a"][0]["bits_a"] > 0
    (cells_entry,) = summary["cells"]
    assert cells_entry["chars"] == 800 and len(cells_entry["saturation"]) == 2
    assert {b["feature"] for b in cells_entry["best"]} == set(analysis.cells.FEATURES)
    files = {p.name for p in (tmp_path / "figures").iterdir()}
    assert files == {"class_bpc.png", f"compare_lstm2_vs_{best_ngram}.png",
                     "compare_ngram1_vs_ngram3.png", "cells_lstm2.png", "saturation_lstm2.png"}
    for f in files:
        img = matplotlib.image.imread(tmp_path / "figures" / f)
        assert img.shape[0] > 100 and img.shape[1] > 300
    assert {p.name for p in (tmp_path / "pages").iterdir()} == {
        f"compare_lstm2_vs_{best_ngram}.html", "compare_ngram1_vs_ngram3.html",
        "cells_lstm2.html"}
    table = pd.read_csv(tmp_path / "classes.csv")
    assert list(table.columns) == analysis.CLASS_COLUMNS
    assert set(table.model) == {"ngram1", "ngram3", "lstm2"}


def test_analyze_refuses_scores_of_another_corpus(built: dict, tmp_path: Path) -> None:
    s = read_scores(built["dir"] / "scores.npz")
    shifted = SplitScores(s.split, s.start + 1, s.models, s.logprobs)
    with pytest.raises(AnalysisError, match=r"the scores are for \d+ characters from offset "
                       r"\d+, the corpus's test split has \d+ from \d+: rerun evaluate"):
        analysis.analyze(shifted, built["corpus"], {}, ["ngram1"], AnalyzeSettings(),
                         class_csv=tmp_path / "c.csv", figures_dir=tmp_path,
                         pages_dir=tmp_path, summary=tmp_path / "s.json")
    fewer = SplitScores(s.split, s.start, s.models[:1], s.logprobs[:1])
    with pytest.raises(AnalysisError, match=r"no scores for ngram3, lstm2 \(the scores file "
                       r"has ngram1\)"):
        analysis.analyze(fewer, built["corpus"], {"lstm2": "x.pt"}, ["ngram1", "ngram3"],
                         AnalyzeSettings(), class_csv=tmp_path / "c.csv",
                         figures_dir=tmp_path, pages_dir=tmp_path, summary=tmp_path / "s.json")
    with pytest.raises(AnalysisError, match=r"^no scores for rnn9 "):
        analysis.analyze(s, built["corpus"], {}, ["ngram1"],
                         AnalyzeSettings(pairs=(("ngram1", "rnn9"),)), class_csv=tmp_path / "c.csv",
                         figures_dir=tmp_path, pages_dir=tmp_path, summary=tmp_path / "s.json")
    assert not list(tmp_path.iterdir())  # checked before any output


def test_analysis_pages_in_a_real_browser(built: dict, browser: str, tmp_path: Path) -> None:
    summary = run_analyze(built, tmp_path / "out")
    for page in (summary["pairs"][0]["page"], summary["cells"][0]["page"]):
        img = screenshot(browser, tmp_path / "out" / "pages" / page,
                         tmp_path / f"{page}.png", (1000, 1400))
        coloured = sum(pixels_like(img, c) for c in render.POSITIVE + render.NEGATIVE)
        assert coloured > 5000, page
        assert (img.max(axis=-1) < 0.3).sum() > 2000, page  # and text


# --- params ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,message", [
    ({"pairs": [["rnn"]]}, r"^analyze\.pairs\[0\]: must name two different models, got \['rnn'\]$"),
    ({"pairs": [["rnn", "rnn"]]}, r"^analyze\.pairs\[0\]: must name two different models"),
    ({"pairs": "rnn"}, r"^analyze\.pairs: must be a list of a list of a string, got 'rnn'$"),
    ({"excerpt_chars": 0}, r"^analyze\.excerpt_chars: must be > 0, got 0$"),
    ({"top": 3}, r"^analyze\.top: unknown key"),
], ids=["one-name", "same-twice", "not-a-list", "excerpt-zero", "unknown-key"])
def test_analyze_params_errors(raw: dict, message: str) -> None:

    with pytest.raises(ParamsError, match=message):
        parse(AnalyzeParams, raw, "analyze")


def test_analyze_params_unknown_model() -> None:

    p = parse(AnalyzeParams, {"pairs": [["rnn", "ngram5"]]}, "analyze")
    with pytest.raises(ParamsError, match=r"^analyze\.pairs\[0\]\[1\]: unknown model 'ngram5'; "
                       r"the models are ngram4, rnn$"):
        p.check_models("analyze", ["ngram4", "rnn"])


# --- the stages, as dvc.yaml runs them ---------------------------------------------------------

@pytest.fixture(scope="module")
def stages_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("stages")
    (ws / "source.txt").write_text(make_text(9000, seed=6), encoding="utf-8")
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["download"].update(url="source.txt", sha256=None)
    p["ngram"]["orders"] = [2]
    p["train"] = {"lstm2": dict(LSTM2)}
    p["sample"]["length"] = 20
    p["evaluate"].update(device="cpu", threads=1)
    p["analyze"].update(threads=1, cells_chars=500, excerpt_chars=300)
    p["intervals"]["block"] = 50  # of 449 test characters
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for stage in ("validate", "download", "encode", "ngram", "train", "sample", "evaluate",
                  "analyze", "intervals", "report"):
        assert run_stage(ws, stage, key="lstm2")[0] == 0, stage
    return ws


def test_the_stages_write_what_dvc_yaml_declares(stages_ws: Path) -> None:
    ws = stages_ws
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in ("evaluate", "analyze"):
        for out in dvc[stage].get("outs", []) + dvc[stage].get("plots", []):
            name = next(iter(out)) if isinstance(out, dict) else out
            assert (ws / name).exists(), name
    scores = read_scores(ws / "data/scores/test_logprobs.npz")
    metrics = pd.read_csv(ws / "metrics/metrics.csv").query("split == 'test'").set_index(
        "model")
    classes = pd.read_csv(ws / "metrics/class_bpc.csv")
    for name in ("ngram2", "lstm2"):
        assert -scores[name].mean() == pytest.approx(metrics.loc[name, "nll"], abs=1e-6)
        kind = classes[(classes.model == name) & (classes.group == "kind")]
        assert (kind.share * kind.bpc).sum() == pytest.approx(metrics.loc[name, "bpc"],
                                                              abs=1e-6)
    report = (ws / "metrics/report.md").read_text()
    for heading in ("## Where the bits go", "## lstm2 against ngram2, character by character",
                    "## What the recurrent units track", "Gate saturation"):
        assert heading in report
    links = [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](" in line]
    assert any(link.endswith(".html") for link in links)
    for link in links:  # every figure and page the report names is there
        assert (ws / "metrics" / link).is_file(), link


def test_the_report_excerpt_shows_what_follows_a_long_prime(stages_ws: Path,
                                                             tmp_path: Path) -> None:
    """sample.prime of 3000 characters: the sample stage samples after it, and the report's
    excerpt shows the generated text (it showed the first 300 characters: the prime)."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(stages_ws, ws)
    prime = make_text(3000, seed=8)
    p = yaml.safe_load((ws / "params.yaml").read_text())
    p["sample"]["prime"] = prime
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for stage in ("sample", "report"):
        assert run_stage(ws, stage, key="lstm2")[0] == 0, stage
    sample = (ws / "samples/lstm2.txt").read_text(encoding="utf-8")
    generated = sample[len(prime):]
    assert sample.startswith(prime) and len(generated) == 20
    report = (ws / "metrics/report.md").read_text(encoding="utf-8")
    section = report.split("### lstm2\n", 1)[1]
    excerpt = section.split("```text\n", 1)[1].split("\n```", 1)[0]
    assert excerpt == "…" + prime[-100:] + generated


def test_analyze_stage_rejects_an_unknown_pair_before_any_work(stages_ws: Path, capsys,
                                                               tmp_path: Path) -> None:
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(stages_ws, ws)
    p = yaml.safe_load((ws / "params.yaml").read_text())
    p["analyze"]["pairs"] = [["lstm2", "rnn9"]]
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    before = {f: f.read_bytes() for f in (ws / "metrics").rglob("*") if f.is_file()}
    code, _, err = run_stage(ws, "analyze", capsys, key="lstm2")
    assert code == 2
    assert err.strip() == ("error: analyze.pairs[0][1]: unknown model 'rnn9'; the models are "
                           "ngram2, lstm2")
    assert {f: f.read_bytes() for f in (ws / "metrics").rglob("*") if f.is_file()} == before


def test_analyze_stage_without_scores_is_one_line(stages_ws: Path, capsys,
                                                  tmp_path: Path) -> None:
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(stages_ws, ws)
    (ws / "data/scores/test_logprobs.npz").unlink()
    code, _, err = run_stage(ws, "analyze", capsys, key="lstm2")
    assert code == 2
    assert err.strip() == ("error: data/scores/test_logprobs.npz: no scores file (run the "
                           "evaluate stage: `dvc repro`)")


# --- the commands ---------------------------------------------------------------------------------

def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        cli_main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_compare_and_cells(built: dict, capsys, tmp_path: Path) -> None:
    d = built["dir"]
    text = make_text(1500, seed=9)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    vocab = ["--vocab", str(d / "vocab.json")]
    code, out, err = cli(["compare", str(d / "lstm2.pt"), str(d / "ngram3.npz"),
                          str(tmp_path / "t.txt"), "--html", str(tmp_path / "c.html"), *vocab],
                         capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path / 't.txt'}: 1499 predicted characters"
    assert lines[1].split() == ["class", "share", str(d / "lstm2.pt"), str(d / "ngram3.npz")]
    assert any(line.startswith("lowercase") for line in lines)
    page = (tmp_path / "c.html").read_text()
    assert page.count("<tr>") > 20 and '<div class="text">' in page

    code, out, err = cli(["cells", str(d / "lstm2.pt"), str(tmp_path / "t.txt"), "--html",
                          str(tmp_path / "u.html"), "--max-chars", "1000", *vocab], capsys)
    assert code == 0, err
    assert "read 1000 characters" in out and "layer 2 saturation: input" in out
    assert "speaker_line" in out and (tmp_path / "u.html").is_file()


@pytest.mark.parametrize("argv,message", [
    (["cells", "NGRAM", "FILE"], r"^error: .*ngram3\.npz: an n-gram model has no units; "
                                 r"cells needs a trained recurrent model \(\.pt\)$"),
    (["cells", "missing.pt", "FILE"], r"^error: missing\.pt: no such model file"),
    (["compare", "LSTM", "LSTM", "FILE"], r"^error: compare: name two different models"),
    (["compare", "LSTM", "NGRAM", "SHORT"], r"^error: .*short\.txt: need at least 2 "
                                            r"characters, got 1$"),
    (["compare", "LSTM", "NGRAM", "OOV"], r"^error: .*oov\.txt: 1 character\(s\) not in the "
                                          r"vocabulary of \d+: 'Ω'$"),
    (["cells", "LSTM", "nofile.txt"], r"^error: nofile\.txt: No such file or directory$"),
    (["cells", "LSTM", "FILE", "--max-chars", "0"], r"error: --max-chars must be >= 1$"),
    (["compare", "LSTM", "NGRAM", "FILE", "--top", "0"], r"error: --top must be >= 1$"),
], ids=["cells-ngram", "cells-missing", "compare-same", "too-short", "oov", "no-file",
        "max-chars-0", "top-0"])
def test_cli_errors_are_one_line(built: dict, capsys, tmp_path: Path, argv: list[str],
                                 message: str) -> None:
    import re

    d = built["dir"]
    (tmp_path / "t.txt").write_text(make_text(300, seed=2), encoding="utf-8")
    (tmp_path / "short.txt").write_text("K", encoding="utf-8")
    (tmp_path / "oov.txt").write_text("KING Ω", encoding="utf-8")
    subst = {"NGRAM": str(d / "ngram3.npz"), "LSTM": str(d / "lstm2.pt"),
             "FILE": str(tmp_path / "t.txt"), "SHORT": str(tmp_path / "short.txt"),
             "OOV": str(tmp_path / "oov.txt")}
    code, _, err = cli([subst.get(a, a) for a in argv] + ["--vocab", str(d / "vocab.json")],
                       capsys)
    assert code == 2
    lines = err.strip().splitlines()
    if "--" in message:  # argparse's own errors: the usage line, then the error
        lines = lines[-1:]
    assert len(lines) == 1 and re.search(message, lines[0]), err


@pytest.mark.parametrize("kind,where,message", [
    ("fifo", "p.html", r": is a FIFO \(named pipe\), not a regular file; .*"),
    ("char-device", "p.html", r": is a character device, not a regular file; .*"),
    ("link-to-fifo", "p.html", r" \(a link to .*target\): is a FIFO \(named pipe\), not a .*"),
    (None, "no/dir/p.html", r": .*/no/dir: no such directory; create it first, or give "
                            r"another path"),
], ids=["fifo", "char-device", "link-to-fifo", "missing-dir"])
@pytest.mark.parametrize("command", ["compare", "cells"])
def test_html_page_is_written_to_a_file_never_over_another_kind(
        built: dict, capsys, tmp_path: Path, command: str, kind: str | None, where: str,
        message: str) -> None:
    """`--html` naming a FIFO, a device or a missing directory: one line before any model is
    read (it was replaced by a regular file, or the directories created)."""
    import re

    d = built["dir"]
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "t.txt").write_text(make_text(300, seed=2), encoding="utf-8")
    if kind is not None:
        make_node(ws / where, kind)
    before = {p: node_kind(p) for p in ws.rglob("*")}
    models = [str(d / "lstm2.pt")] + ([str(d / "ngram3.npz")] if command == "compare" else [])
    page = str(ws / where)
    code, out, err = cli([command, *models, str(tmp_path / "t.txt"), "--html", page,
                          "--vocab", str(d / "vocab.json")], capsys)
    assert code == 2 and out == ""  # nothing was read or computed
    assert re.fullmatch(f"error: {re.escape(page)}" + message, err.strip()), err
    assert {p: node_kind(p) for p in ws.rglob("*")} == before


def test_html_page_through_a_symlink_writes_its_target(built: dict, capsys,
                                                       tmp_path: Path) -> None:
    d = built["dir"]
    (tmp_path / "t.txt").write_text(make_text(300, seed=2), encoding="utf-8")
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages/real.html").write_text("previous")
    (tmp_path / "p.html").symlink_to("pages/real.html")
    code, _, err = cli(["cells", str(d / "lstm2.pt"), str(tmp_path / "t.txt"), "--html",
                        str(tmp_path / "p.html"), "--vocab", str(d / "vocab.json")], capsys)
    assert code == 0, err
    assert (tmp_path / "p.html").is_symlink()
    assert "<html" in (tmp_path / "pages/real.html").read_text()
