"""Data-parallel training: torchrun with 2 gloo processes on this CPU against 1 process with
the same global batch and seed, resume after SIGTERM, errors before anything launches."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TINY, make_text

from charlab.encoding import encode_corpus
from charlab.training.distributed import (
    DistributedError,
    World,
    torchrun_command,
    under_torchrun,
    world_from_env,
)

PY = sys.executable
# With dropout 0 the two runs compute the same sums in another order: measured differences
# are ~1e-6 nats/char after 30 steps; this leaves room for other CPUs' float reductions.
TOLERANCE = 1e-4
# conftest's TINY, larger: 8 streams to split between 2 ranks, 30 steps to compare
DDP_TINY = dict(TINY, layers=2, hidden_size=32, batch_size=8, seq_length=16, lr=0.003,
                max_steps=30, eval_every=10, seed=5)


# --- the world from torchrun's environment -------------------------------------------------

def test_world_from_env() -> None:
    assert world_from_env({}) == World() and not under_torchrun({})
    assert under_torchrun({"WORLD_SIZE": "1"})  # a world of one: no second torchrun
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                        "LOCAL_WORLD_SIZE": "2"})
    assert (w.rank, w.size, w.local_rank, w.local_size, w.main) == (3, 4, 1, 2, False)


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "x"},
                                 {"WORLD_SIZE": "2", "RANK": "2"}])
def test_world_from_bad_env(env: dict[str, str]) -> None:
    with pytest.raises(DistributedError, match="torchrun environment"):
        world_from_env(env)


@pytest.mark.parametrize(("rank", "size", "rows"), [(0, 1, range(0, 8)), (0, 2, range(0, 4)),
                                                     (1, 2, range(4, 8)), (3, 4, range(6, 8))])
def test_each_rank_takes_a_contiguous_block_of_streams(rank: int, size: int, rows: range) -> None:
    assert World(rank=rank, size=size, local_size=size, local_rank=rank).rows(8) == rows


def test_uneven_batch_is_an_error() -> None:
    with pytest.raises(DistributedError, match="batch_size 6 does not split evenly over 4"):
        World(rank=0, size=4, local_size=4).rows(6)


def test_torchrun_command_takes_a_free_port() -> None:
    cmd = torchrun_command(2, ["stages/train.py", "--model", "x"])
    assert cmd[:3] == [PY, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in cmd and "--rdzv-endpoint=localhost:0" in cmd
    assert "--shutdown-timeout=300" in cmd  # time for rank 0 to save before SIGKILL
    assert cmd[-3:] == ["stages/train.py", "--model", "x"]


# --- the train stage under torchrun --------------------------------------------------------

@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ddp")
    (d / "corpus.txt").write_text(make_text(120_000, seed=2), encoding="utf-8")
    encode_corpus(d / "corpus.txt", d / "vocab.json", d / "tokens.bin", d / "split.json",
                  val_fraction=0.05, test_fraction=0.05)
    return d


def stage(d: Path, model: str, entries: dict[str, dict], out: Path) -> list[str]:
    out.mkdir(exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump({"train": entries}))
    return [PY, str(REPO / "stages/train.py"), "--params", str(out / "params.yaml"),
            "--model", model, "--vocab", str(d / "vocab.json"), "--tokens",
            str(d / "tokens.bin"), "--splits", str(d / "split.json"),
            "--checkpoint", str(out / f"{model}.pt"), "--curve", str(out / f"{model}.csv"),
            "--run-info", str(out / f"{model}.json")]


def run_ok(cmd: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def curve(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


# every family of the registry (the recurrent one twice: the fused Elman path and an LSTM)
DDP_NETS = {"rnn": {"cell": "rnn"}, "lstm": {"cell": "lstm"},
            "gpt": {"cell": "gpt", "heads": 2, "context": 16},
            "mingru": {"cell": "mingru", "expansion": 1.5},
            "minlstm": {"cell": "minlstm"}, "lru": {"cell": "lru"}}


def test_every_family_is_tested_under_ddp() -> None:
    from charlab.families import FAMILIES, by_cell

    assert {by_cell(n["cell"]).name for n in DDP_NETS.values()} == {f.name for f in FAMILIES}


@pytest.mark.slow
@pytest.mark.parametrize("cell", sorted(DDP_NETS))
def test_two_processes_match_one_with_the_same_global_batch(encoded: Path, tmp_path: Path,
                                                            cell: str) -> None:
    base = dict(DDP_TINY, **DDP_NETS[cell])
    if "context" in base:  # a GPT reads windows of context, not seq_length
        base.pop("seq_length")
    entries = {"one": base, "two": dict(base, nproc=2)}
    log = run_ok(stage(encoded, "one", entries, tmp_path))
    assert "processes" not in log
    log = run_ok(stage(encoded, "two", entries, tmp_path))
    assert "2 processes (DDP, 4 streams each)" in log

    one, two = curve(tmp_path / "one.csv"), curve(tmp_path / "two.csv")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [10, 20, 30]
    for a, b in zip(one, two, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) <= TOLERANCE
        assert abs(a["val_loss"] - b["val_loss"]) <= TOLERANCE
    assert one[-1]["train_loss"] < one[0]["train_loss"] - 0.1  # it learned something
    w1, w2 = weights(tmp_path / "one.pt"), weights(tmp_path / "two.pt")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=TOLERANCE, rtol=0)
    # rank 0 alone writes: the checkpoint, its resume state, the curve and the run info
    assert sorted(p.name for p in tmp_path.glob("two*")) == ["two.csv", "two.json", "two.pt",
                                                                 "two.pt.state"]


@pytest.mark.slow
def test_sigterm_then_rerun_resumes_bit_for_bit(encoded: Path, tmp_path: Path) -> None:
    # dropout on: each rank's random state must come back too. No periodic resume state
    # (checkpoint_every past the end): the one on disk is the one the signal made.
    entry = dict(DDP_TINY, nproc=2, dropout=0.1, max_steps=200, eval_every=20,
                 checkpoint_every=1000)
    entries = {"cut": entry, "whole": entry}
    run_ok(stage(encoded, "whole", entries, tmp_path))

    cmd = stage(encoded, "cut", entries, tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = tmp_path / "cut.pt.state"
    deadline = time.monotonic() + 120
    while not (tmp_path / "cut.csv").exists():  # the first curve row comes at step 20
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no curve row after 120 s"
        time.sleep(0.05)
    assert not state.exists()
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    saved = torch.load(state, weights_only=True)
    assert 20 <= saved["step"] < 200, log
    assert f"interrupted at step {saved['step']}; state saved" in log
    assert saved["world_size"] == 2 and len(saved["rng_ranks"]) == 2
    assert saved["hidden"][0].shape[1] == 8  # both ranks' streams, joined

    log = run_ok(cmd)
    assert f"resuming from step {saved['step']}" in log
    assert curve(tmp_path / "cut.csv") == [
        {**r, "chars_per_sec": r2["chars_per_sec"], "elapsed_sec": r2["elapsed_sec"]}
        for r, r2 in zip(curve(tmp_path / "whole.csv"), curve(tmp_path / "cut.csv"),
                         strict=True)]
    w_cut, w_whole = weights(tmp_path / "cut.pt"), weights(tmp_path / "whole.pt")
    assert all(torch.equal(w_cut[k], w_whole[k]) for k in w_whole)


@pytest.mark.parametrize(("entry", "message"), [
    ({"nproc": 3}, r"train\.m\.nproc: 3 processes must share batch_size 8 evenly"),
    ({"nproc": 2, "batch_size": 8000},
     r"train\.m\.batch_size: 8000 streams of seq_length \+ 1 = 17"),
    ({"nproc": 2, "device": "cuda"} if not torch.cuda.is_available() else {"nproc": 99},
     r"train\.m\.(device|nproc): "),
])
def test_bad_settings_fail_before_torchrun_starts(encoded: Path, tmp_path: Path, entry: dict,
                                                 message: str) -> None:
    proc = subprocess.run(stage(encoded, "m", {"m": dict(DDP_TINY, **entry)}, tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("error: ") == 1  # once, from the stage, not once per rank
    assert "torch.distributed" not in proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.slow
def test_dvc_repro_trains_under_torchrun(tmp_path: Path, http_server) -> None:
    from test_pipeline import make_repo, run, stages_run

    def ddp(p):
        p["train"] = {"rnn3": dict(p["train"]["rnn3"], nproc=2)}
    repo = make_repo(tmp_path, http_server, make_text(30_000, seed=1), ddp)
    out = run(["dvc", "repro", "train@rnn3"], repo)
    assert stages_run(out) == {"validate", "download", "encode", "train@rnn3"}
    assert "2 processes (DDP, 2 streams each)" in out
    assert torch.load(repo / "models/rnn3.pt", weights_only=True)["step"] > 0
    assert "train@rnn3" not in stages_run(run(["dvc", "repro", "train@rnn3"], repo))
