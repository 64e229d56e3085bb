"""End to end: a temporary git + DVC repo, a corpus served over HTTP on 127.0.0.1,
`dvc repro` with tiny models, then a param edit that must rerun only what it touches; two
`dvc repro` at once."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, HTTPServer, make_text
from helpers import PY, wait_for

from charlab.encoding import Vocab

pytestmark = pytest.mark.slow

# not a train entry: sizes laid over each entry of the real params.yaml (its cells stay)
TINY_SIZES = {"hidden_size": 16, "batch_size": 4, "seq_length": 16, "max_steps": 6, "eval_every": 4,
        "threads": 1, "device": "cpu"}


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_params(repo: Path, fn) -> None:
    path = repo / "params.yaml"
    p = yaml.safe_load(path.read_text())
    fn(p)
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def make_repo(tmp_path: Path, http_server: HTTPServer, text: str, tweak=None) -> Path:
    """A git + DVC repo holding the project's pipeline, its corpus served over HTTP."""
    data = text.encode()
    url = http_server.put("input.txt", data)

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    for name in ("stages", "src"):
        shutil.copytree(REPO / name, repo / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    for name in (".gitignore", ".dvcignore"):  # resume states and temp files stay out
        shutil.copy(REPO / name, repo / name)

    def tiny(p):
        p["download"].update(url=url, sha256=hashlib.sha256(data).hexdigest())
        p["ngram"]["orders"] = [2, 3]
        for entry in p["train"].values():
            entry.update(TINY_SIZES)
        p["sample"]["length"] = 40
        p["evaluate"]["device"] = "cpu"
        p["intervals"]["block"] = 50  # test splits of 200-1500 characters
        if tweak:
            tweak(p)
    edit_params(repo, tiny)
    return repo


@pytest.fixture
def pipeline_repo(tmp_path: Path, http_server) -> Path:
    return make_repo(tmp_path, http_server, make_text(30_000, seed=1))


def test_pipeline_end_to_end(pipeline_repo: Path):
    repo = pipeline_repo
    out = run(["dvc", "repro"], repo)
    assert stages_run(out) == {"validate", "download", "encode", "ngram", "train@rnn",
                               "train@rnn3", "sample", "evaluate", "analyze", "intervals",
                               "report"}

    # every output the issue names
    vocab = Vocab.load(repo / "data/encoded/vocab.json")
    assert vocab.size > 10
    split = json.loads((repo / "data/encoded/split.json").read_text())
    assert split["splits"]["test"]["end"] == 30_000
    assert (repo / "data/encoded/corpus.bin").stat().st_size == 30_000  # uint8
    models = ["ngram2", "ngram3", "rnn", "rnn3"]
    for order in (2, 3):
        assert (repo / f"models/ngram/ngram{order}.npz").is_file()
    for name in ("rnn", "rnn3"):
        assert (repo / f"models/{name}.pt").is_file()
        curve = pd.read_csv(repo / f"metrics/train/{name}.csv")
        assert list(curve.columns) == ["step", "train_loss", "val_loss", "chars_per_sec",
                                       "elapsed_sec"]
        assert curve["step"].tolist() == [4, 6]  # every eval_every, and the last step
    for name in models:
        text = (repo / f"samples/{name}.txt").read_text()
        assert text.startswith("First Citizen:\n")
        assert len(text) == len("First Citizen:\n") + 40

    table = pd.read_csv(repo / "metrics/metrics.csv")
    assert set(["model", "split", "nll", "bpc", "perplexity", "params"]) <= set(table.columns)
    assert sorted(zip(table.model, table.split, strict=True)) == sorted(
        (m, s) for m in models for s in ("train", "val", "test"))
    assert ((table.bpc - table.nll / 0.6931471805599453).abs() < 1e-4).all()
    # every model scores the same number of test characters
    assert table[table.split == "test"].chars.nunique() == 1
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert set(metrics) == set(models)
    assert set(metrics["rnn3"]) >= {"test_bpc", "test_perplexity", "test_nll"}

    report = (repo / "metrics/report.md").read_text()
    for row in table[table.split == "test"].itertuples():
        assert f"| {row.model} | {row.params:,} | {row.nll:.4f} | {row.bpc:.4f} |" in report
    for fig in ("loss_curves.png", "test_bpc.png"):
        assert (repo / "metrics/figures" / fig).read_bytes()[:4] == b"\x89PNG"

    # the analysis: per-character scores (DVC-cached), classes, pages, figures, the report
    assert (repo / "data/scores/test_logprobs.npz").is_file()
    classes = pd.read_csv(repo / "metrics/class_bpc.csv")
    assert set(classes.model) == set(models)
    summary = json.loads((repo / "metrics/analysis/summary.json").read_text())
    best = table[table.split == "test"].set_index("model")["nll"]
    assert (summary["pairs"][0]["a"], summary["pairs"][0]["b"]) == (
        best[["rnn", "rnn3"]].idxmin(), best[["ngram2", "ngram3"]].idxmin())
    assert [c["model"] for c in summary["cells"]] == ["rnn", "rnn3"]
    for name in ("class_bpc.png", "cells_rnn.png", "cells_rnn3.png", summary["pairs"][0]["figure"]):
        assert (repo / "metrics/analysis/figures" / name).read_bytes()[:4] == b"\x89PNG"
    assert (repo / "metrics/analysis/pages" / summary["pairs"][0]["page"]).is_file()
    assert "## Where the bits go" in report and "## What the recurrent units track" in report

    # nothing changed: nothing reruns
    assert stages_run(run(["dvc", "repro"], repo)) == set()

    # a reader's params module edited (a comment: the outputs stay the same): the readers
    # and validate rerun, no data stage and no training
    readers = repo / "src/charlab/params/readers.py"
    readers.write_text(readers.read_text() + "\n# an edit\n")
    rerun = stages_run(run(["dvc", "repro"], repo))
    assert {"validate", "sample", "evaluate", "analyze", "intervals"} <= rerun
    assert rerun <= {"validate", "sample", "evaluate", "analyze", "intervals", "report"}

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)

    # a single rnn3 param: only rnn3's training and what reads its checkpoint rerun (and the
    # params check, whose outputs stay the same)
    edit_params(repo, lambda p: p["train"]["rnn3"].update(lr=0.01))
    rerun = stages_run(run(["dvc", "repro"], repo))
    assert rerun == {"validate", "train@rnn3", "sample", "evaluate", "analyze", "intervals",
                     "report"}
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "rnn3 lr"], repo)

    # every declared plot loads, for the workspace and across two commits
    for cmd in (["dvc", "plots", "show"], ["dvc", "plots", "diff", "HEAD~1"]):
        out = run([*cmd, "-o", str(repo / "plots_html"), "--json"], repo)
        assert "failed to load" not in out
        for plotted in ("metrics/train/rnn3.csv", "Test bits/char by model", "loss_curves.png",
                        "Test bits/char by character class", "class_bpc.png",
                        "Validation nll against training FLOPs", "budget_flops.png"):
            assert plotted in out
    shutil.rmtree(repo / "plots_html")

    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo))
    changed = {key.split(".")[0] for key in diff["metrics/metrics.json"]}
    assert "rnn3" in changed
    assert changed <= {"rnn3"}  # other models' metrics did not move
    # nor their intervals: the same bootstrap seed draws the same blocks
    assert {key.split(".")[0] for key in diff["metrics/intervals.json"]} == {"rnn3"}

    # the CLI on the pipeline's outputs
    out = run(["charlab", "sample", "rnn3", "--prime", "KING:", "--length", "30", "--seed", "1"],
              repo)
    assert out.startswith("KING:") and len(out.rstrip("\n")) == len("KING:") + 30
    scored = run(["charlab", "score", "ngram3", "data/raw/corpus.txt"], repo)
    assert re.search(r"perplexity\s+\d+\.\d+", scored)

    # an experiment from the command line, listed with its metrics
    run(["dvc", "exp", "run", "-S", "train.rnn3.hidden_size=8"], repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))
    text = json.dumps(shown)
    assert '"train.rnn3.hidden_size": 8' in text or '"hidden_size": 8' in text
    assert "test_bpc" in text

    # a new model from the command line (Hydra's + appends a key), as docs/models.md's lstm3
    gru = "{cell: gru, layers: 2, hidden_size: 8, batch_size: 4, seq_length: 16, max_steps: 4, " \
          "eval_every: 2, threads: 1, device: cpu}"
    run(["dvc", "exp", "run", "-S", f"+train.gru2={gru}"], repo)
    assert "gru2" in json.loads((repo / "metrics/metrics.json").read_text())
    assert (repo / "samples/gru2.txt").is_file()


def test_a_gpt_entry_added_from_the_command_line_goes_through_every_stage(tmp_path,
                                                                         http_server):
    """The README's one-liner that adds a GPT (Hydra's + appends a key) beside an RNN: the
    pipeline trains and scores it, analyze skips its units and says why, the report lists
    it; no traceback anywhere (analyze used to stop with `unknown cell 'gpt'`)."""
    repo = make_repo(tmp_path, http_server, make_text(12_000, seed=6), lambda p: p.update(
        train={"rnn": p["train"]["rnn"]}, ngram={**p["ngram"], "orders": [2]}))
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "rnn"], repo)
    gpt = "{cell: gpt, layers: 1, heads: 2, hidden_size: 16, context: 16, batch_size: 4, " \
          "max_steps: 4, eval_every: 2, threads: 1, device: cpu}"
    out = run(["dvc", "exp", "run", "-S", f"+train.gpt={gpt}"], repo)
    assert "Traceback" not in out
    assert stages_run(out) == {"validate", "train@gpt", "sample", "evaluate", "analyze",
                               "intervals", "report"}
    assert set(json.loads((repo / "metrics/metrics.json").read_text())) == {
        "ngram2", "rnn", "gpt"}
    summary = json.loads((repo / "metrics/analysis/summary.json").read_text())
    assert [c["model"] for c in summary["cells"]] == ["rnn"]
    assert summary["skipped"] == [{"model": "gpt", "why": "gpt: a Transformer has no "
                                                          "recurrent units to read"}]
    report = (repo / "metrics/report.md").read_text()
    assert "| gpt |" in report and "Units not read: gpt (gpt: a Transformer" in report
    assert (repo / "samples/gpt.txt").is_file()


def _wide(n: int) -> str:
    """Text over n distinct characters (beyond Latin-1 when n > 256)."""
    rng = random.Random(0)
    chars = [chr(0x4E00 + i) for i in range(n - 2)] + [" ", "\n"]
    return "".join(rng.choice(chars) for _ in range(6_000)) + "".join(chars)


@pytest.mark.parametrize("text,dtype_bytes", [
    (_wide(300), 2),                       # vocabulary wider than uint8
    ("ab" * 1500 + "aab" * 500, 1),        # a two-character vocabulary
], ids=["wide-vocab", "two-chars"])
def test_pipeline_other_corpora(tmp_path, http_server, text, dtype_bytes):
    def one_model(p):
        p["train"] = {"rnn": p["train"]["rnn"]}
        p["sample"]["prime"] = text[:3]
    repo = make_repo(tmp_path, http_server, text, one_model)
    run(["dvc", "repro"], repo)
    assert (repo / "data/encoded/corpus.bin").stat().st_size == len(text) * dtype_bytes
    vocab = Vocab.load(repo / "data/encoded/vocab.json")
    assert vocab.size == len(set(text))
    table = pd.read_csv(repo / "metrics/metrics.csv")
    assert set(table.model) == {"ngram2", "ngram3", "rnn"}
    assert table.nll.map(math.isfinite).all()
    sample = (repo / "samples/rnn.txt").read_text(encoding="utf-8")
    assert set(sample) <= set(text)


def test_remote_push_clone_pull(tmp_path, http_server):
    """The committed default remote (a sibling folder of the repo) shares the cache and the
    run-cache: a fresh clone pulls and finds nothing to run."""
    repo = make_repo(tmp_path, http_server, make_text(8_000, seed=2),
                     lambda p: p.update(train={"rnn": p["train"]["rnn"]}))
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pipeline"], repo)
    run(["dvc", "push", "--run-cache"], repo)
    assert (tmp_path / "charlab-storage" / "files").is_dir()

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models" / "rnn.pt").exists()
    run(["dvc", "pull"], clone)
    assert (clone / "models" / "rnn.pt").read_bytes() == (repo / "models" / "rnn.pt").read_bytes()
    assert stages_run(run(["dvc", "repro"], clone)) == set()
    assert "up to date" in run(["dvc", "status"], clone)



def run_status(cmd: list[str], cwd: Path) -> tuple[int, str]:
    """Like :func:`run`, for a command that may fail: (exit code, stdout + stderr)."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


# what the validate stage writes; DVC deletes them before it runs it, so a failed
# validation leaves them absent (they are constant, and the next run writes them again)
VALIDATE_OUTS = {"data/params.ok", "data/models.json"}


def outputs(repo: Path) -> dict[str, bytes]:
    """Every pipeline output in the workspace but the validate stage's: path -> bytes."""
    found = {}
    for top in ("data", "models", "metrics", "samples"):
        for p in sorted((repo / top).rglob("*")):
            rel = str(p.relative_to(repo))
            if p.is_file() and p.name != ".gitignore" and rel not in VALIDATE_OUTS:
                found[rel] = p.read_bytes()
    return found


BAD_PARAMS = [
    # a typo in a train entry: before issue 12, train@rnn ran and DVC deleted models/rnn.pt
    # and metrics/train/rnn.csv (not cached: gone) before the stage found the typo
    (lambda p: p["train"]["rnn"].update(hiden_size=32),
     r"error: train\.rnn\.hiden_size: unknown key; allowed keys: cell, "),
    # an evaluate key: metrics.csv, metrics.json and test_bpc.csv (not cached) were deleted
    (lambda p: p["evaluate"].update(threads=-1), r"error: evaluate\.threads: must be >= 0"),
    (lambda p: p["ngram"].update(smoothing="addk", add_k=float("inf")),
     r"error: ngram\.add_k: must be a finite number, got inf"),
    (lambda p: p["download"].update(timeout=1e300),
     r"error: download\.timeout: must be at most 86400 seconds"),
    # names that DVC or argparse used to fail on (train@my model got `--model my model`)
    (lambda p: p["train"].update({"my model": p["train"]["rnn"]}),
     r"error: train\.my model: model names must be letters, digits, _ or -"),
    (lambda p: p["train"].update({"../x": p["train"]["rnn"]}),
     r"error: train\.\.\./x: model names must be letters, digits, _ or -"),
    (lambda p: p.update(train={}), r"error: train: lists no model"),
    (lambda p: p.update(sampel={"length": 3}), r"error: sampel: unknown section"),
]


def test_a_params_error_stops_repro_before_any_output_is_deleted(tmp_path, http_server):
    """Issue 12: every params section is checked by the first stage, so a bad value costs no
    output (DVC deletes a stage's outputs before it runs its command)."""
    repo = make_repo(tmp_path, http_server, make_text(8_000, seed=4),
                     lambda p: p["ngram"].update(orders=[2]))
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    good = (repo / "params.yaml").read_text()
    before = outputs(repo)
    assert {"metrics/metrics.csv", "metrics/metrics.json", "metrics/test_bpc.csv",
            "metrics/train/rnn.csv", "models/rnn.pt", "metrics/report.md"} <= set(before)

    for edit, message in BAD_PARAMS:
        edit_params(repo, edit)
        code, out = run_status(["dvc", "repro"], repo)
        assert code != 0, out
        assert re.search(message, out), out
        assert "Traceback" not in out, out
        assert stages_run(out) == {"validate"}, out
        assert outputs(repo) == before  # every output of every other stage is still there
        (repo / "params.yaml").write_text(good)

    # fixed: only the params check runs again (or DVC restores it from its run-cache), its
    # outputs are the same as before, and nothing downstream reruns
    assert stages_run(run(["dvc", "repro"], repo)) <= {"validate"}
    assert outputs(repo) == before
    assert "up to date" in run(["dvc", "status"], repo)


def test_removing_a_model_removes_it_from_every_listing(tmp_path, http_server):
    """Issue 12: the set of models (data/models.json) is a dependency of sample, evaluate,
    analyze and report, so removing a train: entry reruns them; adding one reruns only them
    and its own training."""
    repo = make_repo(tmp_path, http_server, make_text(8_000, seed=5),
                     lambda p: p["ngram"].update(orders=[2]))
    run(["dvc", "repro"], repo)
    assert set(json.loads((repo / "metrics/metrics.json").read_text())) == {
        "ngram2", "rnn", "rnn3"}

    edit_params(repo, lambda p: p["train"].pop("rnn3"))
    assert stages_run(run(["dvc", "repro"], repo)) == {"validate", "sample", "evaluate",
                                                       "analyze", "intervals", "report"}
    assert json.loads((repo / "data/models.json").read_text()) == {
        "ngram_orders": [2], "trained": ["rnn"]}
    assert set(json.loads((repo / "metrics/metrics.json").read_text())) == {"ngram2", "rnn"}
    assert set(pd.read_csv(repo / "metrics/metrics.csv").model) == {"ngram2", "rnn"}
    assert set(pd.read_csv(repo / "metrics/test_bpc.csv").model) == {"ngram2", "rnn"}
    assert "rnn3" not in (repo / "metrics/report.md").read_text()
    assert sorted(p.name for p in (repo / "samples").iterdir()) == ["ngram2.txt", "rnn.txt"]
    # nothing changed: nothing reruns, and DVC agrees that all is up to date
    assert stages_run(run(["dvc", "repro"], repo)) == set()
    assert "up to date" in run(["dvc", "status"], repo)

    # a new model: its training and the listings, never the other models' stages
    gru = {**TINY_SIZES, "cell": "gru", "max_steps": 2, "eval_every": 2}
    edit_params(repo, lambda p: p["train"].update(gru1=gru))
    assert stages_run(run(["dvc", "repro"], repo)) == {"validate", "train@gru1", "sample",
                                                       "evaluate", "analyze", "intervals",
                                                       "report"}
    assert set(json.loads((repo / "metrics/metrics.json").read_text())) == {
        "ngram2", "rnn", "gru1"}


# --- two `dvc repro` at once

SLOW_STAGE = """\
import pathlib, time
pathlib.Path("started").touch()
end = time.monotonic() + 60
while not pathlib.Path("release").exists() and time.monotonic() < end:
    time.sleep(0.05)
pathlib.Path("out.txt").write_text("done\\n")
"""


def test_two_dvc_repro_at_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}")

    def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120)
        assert not check or proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc("init", "-q")
    dvc("config", "core.analytics", "false")
    (repo / "stage.py").write_text(SLOW_STAGE)
    (repo / "dvc.yaml").write_text("stages:\n  slow:\n    cmd: python stage.py\n"
                                   "    deps: [stage.py]\n    outs: [out.txt]\n")
    first = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(repo / "started", first)
        second = dvc("repro", check=False)
    finally:
        (repo / "release").touch()
        first_out, _ = first.communicate(timeout=120)
    assert second.returncode != 0
    assert re.search(r"is busy, it is being blocked by|Unable to acquire lock",
                     second.stdout + second.stderr), second.stdout + second.stderr
    assert first.returncode == 0, first_out
    assert (repo / "out.txt").read_text() == "done\n"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (out,) = lock["stages"]["slow"]["outs"]
    assert out["md5"] == hashlib.md5(b"done\n").hexdigest()
    assert "up to date" in dvc("status").stdout
    again = dvc("repro")  # no stale lock left behind
    assert "up to date" in again.stdout + again.stderr


# --- which model is best, and how sure (issue 19): seeds, pairs, charlab diff

def test_seeds_pairs_and_diff_between_revisions(tmp_path, http_server):
    """One repo: the pairs and the verdict; a changed lr, compared with `charlab diff`
    between two commits; a second seed written as a merge key trains only itself and the
    readers, and the report shows mean ± sd; an experiment ref; another corpus refused."""
    repo = make_repo(tmp_path, http_server, make_text(12_000, seed=7), lambda p: p.update(
        train={"rnn": p["train"]["rnn"]}, ngram={**p["ngram"], "orders": [2]}))
    run(["dvc", "repro"], repo)
    pairs = pd.read_csv(repo / "metrics/pairs.csv")
    assert list(pairs.columns) == ["a", "b", "diff", "lo", "hi", "verdict"]
    assert pairs[["a", "b"]].values.tolist() == [["ngram2", "rnn"]]
    for r in pairs.itertuples():
        assert r.lo <= r.diff <= r.hi
        assert r.verdict == ("a" if r.hi < 0 else "b" if r.lo > 0 else "tie")
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    text = json.dumps(shown)
    assert '"test_nll_lo"' in text and '"test_nll_hi"' in text
    assert (repo / "metrics/report.md").read_text().startswith("# charlab report\n\n## Verdict")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "base"], repo)

    # a changed lr: charlab diff between the two commits, B - A per model
    edit_params(repo, lambda p: p["train"]["rnn"].update(lr=0.03))
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "lr"], repo)
    rows = diff_rows(run(["charlab", "diff", "HEAD~1", "HEAD", "--block", "50"], repo))
    before = json.loads(run(["git", "show", "HEAD~1:metrics/metrics.json"], repo))
    after = json.loads((repo / "metrics/metrics.json").read_text())
    assert rows["ngram2"][-1] == "identical"
    a, b, change, lo, hi = rows["rnn"][0], rows["rnn"][1], rows["rnn"][2], *rows["rnn"][3:5]
    assert (a, b) == pytest.approx((before["rnn"]["test_nll"], after["rnn"]["test_nll"]),
                                   abs=1e-4)
    assert change == pytest.approx(b - a, abs=2e-4) and lo <= change <= hi
    assert rows["rnn"][-1] == ("better" if hi < 0 else "worse" if lo > 0 else "no real change")

    # a second seed, one line of params.yaml: only its training and the readers are stale
    text = (repo / "params.yaml").read_text()
    text = text.replace("\n  rnn:\n", "\n  rnn: &rnn\n", 1).replace(
        "\nfinetune:", "\n  rnn_s2: {<<: *rnn, seed: 2}\nfinetune:", 1)
    (repo / "params.yaml").write_text(text)
    run(["dvc", "repro", "validate"], repo)  # the model set: what the readers depend on
    readers = {"sample", "evaluate", "analyze", "intervals", "report"}
    assert set(json.loads(run(["dvc", "status", "--json"], repo))) == {"train@rnn_s2"} | readers
    assert stages_run(run(["dvc", "repro"], repo)) == {"train@rnn_s2"} | readers
    report = (repo / "metrics/report.md").read_text()
    row = pd.read_csv(repo / "metrics/configs.csv").set_index("config").loc["rnn"]
    assert row["seeds"] == 2
    assert f"| rnn | rnn, rnn_s2 | {row['mean']:.4f} ± {row['sd']:.4f} |" in report
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "seed 2"], repo)

    # an experiment (dvc exp run -S keeps the merge key): by its name and by its ref
    out = run(["dvc", "exp", "run", "-S", "train.rnn_s2.seed=3"], repo)
    assert stages_run(out) == {"validate", "train@rnn_s2"} | readers
    assert "<<: *rnn" in (repo / "params.yaml").read_text()
    name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    ref = run(["git", "for-each-ref", "--format=%(refname)", f"refs/exps/*/*/{name}"],
              repo).strip()
    for rev in (name, ref):
        rows = diff_rows(run(["charlab", "diff", "HEAD", rev, "--block", "50"], repo))
        assert rows["ngram2"][-1] == rows["rnn"][-1] == "identical"
        assert rows["rnn_s2"][-1] != "identical"

    # another corpus (an experiment run as far as the split manifest): refused in one line,
    # the manifests compared before any scores are read
    other = http_server.put("other.txt", make_text(12_500, seed=8).encode())
    sha = hashlib.sha256(make_text(12_500, seed=8).encode()).hexdigest()
    out = run(["dvc", "exp", "run", "-S", f"download.url={other}", "-S",
               f"download.sha256={sha}", "encode"], repo)
    name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    code, out = run_status(["charlab", "diff", "HEAD", name], repo)
    assert code == 2
    for argv, message in [(["HEAD", "nope"], "error: nope: no such git revision or "
                           "experiment (`dvc exp show` lists the experiments)\n"),
                          (["HEAD~1", "HEAD", "--block", "0"],
                           "error: --block: must be an integer >= 1, got 0\n")]:
        assert run_status(["charlab", "diff", *argv], repo) == (2, message)
    assert re.fullmatch(r"error: HEAD and \S+ scored different test text \(corpus sha256 "
                        r"[0-9a-f]{12}… test characters 11400-12000, against [0-9a-f]{12}… "
                        r"11875-12500\): their test nll cannot be compared character by "
                        r"character\n", out), out


def diff_rows(out: str) -> dict[str, list]:
    """`charlab diff`'s table: model -> [A, B, B - A, lo, hi, change]."""
    rows = {}
    for line in out.splitlines()[2:]:
        m = re.fullmatch(r"(\S+)\s+([\d.]+)\s+([\d.]+)\s+([-+][\d.]+)\s+([-+][\d.]+) to "
                         r"([-+][\d.]+)\s+(.+)", line)
        if m:
            rows[m.group(1)] = [*map(float, m.groups()[1:6]), m.group(7)]
    return rows

