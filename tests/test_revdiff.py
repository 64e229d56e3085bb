"""`charlab diff` (charlab.revdiff) without a pipeline: the table on hand-made scores, the
refusal of other test text, revisions and experiment names resolved with git, and what a
revision without the pipeline's outputs says. The end-to-end runs (two commits, an
experiment, another corpus) are in test_pipeline.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error

from charlab.cli import main as cli_main
from charlab.compare import Bootstrap
from charlab.encoding import Manifest
from charlab.evaluate import SplitScores
from charlab.revdiff import DiffError, Side, diff_table, format_diff, resolve, same_test_text

N = 20_000
MANIFEST = Manifest(N + 1000, "uint8", "ab" * 32, {"train": (0, 500), "val": (500, 1000),
                                                  "test": (1000, N + 1001)})


def side(rev: str, rows: dict[str, np.ndarray]) -> Side:
    return Side(rev, MANIFEST, SplitScores("test", 1000, tuple(rows),
                                           np.stack(list(rows.values()))))


def test_the_change_b_minus_a_and_its_verdict() -> None:
    rng = np.random.default_rng(1)
    base = -rng.gamma(2.0, 0.8, size=N)  # log-probs
    noise = rng.normal(0, 0.5, size=N)
    b = side("B", {"rnn": base + 0.1 * noise + 0.05,  # B's log-probs higher: nll lower
                   "ngram4": base, "gpt": base, "lstm": base - 0.05 + 0.3 * noise})
    a = Side("A", MANIFEST, SplitScores("test", 1000, ("ngram4", "rnn", "gone", "lstm"),
                                        np.stack([base, base + 0.1 * noise, base,
                                                  base + 0.3 * noise])))
    table = diff_table(a, b, Bootstrap(block=100)).set_index("model")
    assert list(table.index) == ["rnn", "ngram4", "lstm"]  # B's order, models of both
    assert table.loc["ngram4", "change"] == "identical"
    assert table.loc["ngram4", ["diff", "lo", "hi"]].tolist() == [0, 0, 0]
    rnn = table.loc["rnn"]
    assert rnn["diff"] == pytest.approx(-0.05) and rnn["hi"] < 0 and rnn["change"] == "better"
    assert rnn["a"] == pytest.approx(-(base + 0.1 * noise).mean())
    assert table.loc["lstm", "change"] == "worse" and table.loc["lstm", "lo"] > 0
    text = format_diff(a, b, table.reset_index(), Bootstrap(block=100))
    lines = text.splitlines()
    assert lines[0].startswith("test nll (nats/char) at A = A and B = B, and B - A (negative: "
                               "B is better) with its 95% interval: a paired block bootstrap "
                               "of the same 20,000 test characters (blocks of 100, 2000 ")
    assert lines[2].startswith("rnn ") and lines[2].endswith("better")
    assert lines[-2:] == ["only in A: gone", "only in B: gpt"]


def test_a_tie_is_no_real_change() -> None:
    rng = np.random.default_rng(2)
    base = -rng.gamma(2.0, 0.8, size=N)
    a = side("A", {"m": base})
    b = side("B", {"m": base + rng.normal(0, 0.3, size=N)})  # noise, no shift
    row = diff_table(a, b, Bootstrap(block=100)).iloc[0]
    assert row["lo"] < 0 < row["hi"] and row["change"] == "no real change"


def test_other_test_text_is_refused_in_one_line() -> None:
    other = Manifest(MANIFEST.n_chars, "uint8", "cd" * 32, MANIFEST.splits)
    with pytest.raises(DiffError, match=r"^v1 and v2 scored different test text \(corpus "
                       r"sha256 abababababab… test characters 1000-21001, against "
                       r"cdcdcdcdcdcd… 1000-21001\): their test nll cannot be compared "
                       r"character by character$"):
        same_test_text("v1", MANIFEST, "v2", other)
    shifted = Manifest(MANIFEST.n_chars, "uint8", MANIFEST.sha256,
                       {**MANIFEST.splits, "test": (1001, N + 1001)})
    with pytest.raises(DiffError, match=r"test characters 1000-21001, against abababababab… "
                                        r"1001-21001"):
        same_test_text("v1", MANIFEST, "v2", shifted)
    same_test_text("v1", MANIFEST, "v2", MANIFEST)  # the same text: nothing to say


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(list(args) if args[0] == "dvc" else ["git", *args], cwd=repo,
                          env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture
def bare_repo(tmp_path: Path) -> Path:
    """A git + DVC repo with one commit and no pipeline outputs, and two experiment refs
    named `twin` and one named `solo` (as `dvc exp run` lays them out)."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "dvc", "init", "-q")
    git(tmp_path, "commit", "-qm", "init")
    head = git(tmp_path, "rev-parse", "HEAD")
    other = git(tmp_path, "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "exp")
    for ref, sha in ((f"refs/exps/{head[:2]}/{head[2:]}/twin", head),
                     (f"refs/exps/{head[:2]}/{head[2:]}/other-twin", head),
                     ("refs/exps/aa/bbbb/twin", other),
                     (f"refs/exps/{head[:2]}/{head[2:]}/solo", other)):
        git(tmp_path, "update-ref", ref, sha)
    return tmp_path


def test_revisions_and_experiment_names_resolve(bare_repo: Path) -> None:
    head = git(bare_repo, "rev-parse", "HEAD")
    exp = git(bare_repo, "rev-parse", "refs/exps/aa/bbbb/twin")
    assert resolve("HEAD", bare_repo) == head != exp
    assert resolve("solo", bare_repo) == exp  # a name, not a suffix (other-twin is not twin)
    assert resolve(f"refs/exps/{head[:2]}/{head[2:]}/solo", bare_repo) == exp
    with pytest.raises(DiffError, match=r"^twin: 2 experiments have this name; give its ref "):
        resolve("twin", bare_repo)
    with pytest.raises(DiffError, match=r"^--help: no such git revision or experiment"):
        resolve("--help", bare_repo)  # never read as an option of git


def test_a_revision_without_the_pipeline_outputs_is_one_line(bare_repo: Path, capsys,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(bare_repo)
    with pytest.raises(SystemExit) as e:
        cli_main(["diff", "HEAD", "solo"])
    assert e.value.code == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("error: HEAD: cannot read data/encoded/split.json through DVC (")
    assert line.endswith("); has that revision run the pipeline, and is its cache here "
                         "(`dvc pull`)?")
