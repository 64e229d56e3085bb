"""Killed and interrupted training runs: SIGKILL at seeded steps (also halfway through a
checkpoint write), SIGINT and SIGTERM, then a rerun that resumes; the result equals an
uninterrupted run."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY
from helpers import (
    ENCODED,
    PY,
    REPO,
    edit_params,
    stage_argv,
    temp_leftovers,
    train_entry,
    wait_for,
)

from charlab.encoding import Corpus
from charlab.params.core import load
from charlab.params.training import parse_entry, train_models

KILL_DRIVER = r'''
import io, json, os, signal, sys
from pathlib import Path
import torch
from charlab.encoding import Corpus
from charlab.params.training import parse_entry
from charlab.training.loop import train
from charlab.training.plan import make_plan, run_paths

enc, out, kill_at, how = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = parse_entry(json.loads(sys.argv[5]), "train.m")
corpus = Corpus.load(enc / "vocab.json", enc / "corpus.bin", enc / "split.json")
real_save = torch.save

def dying_save(obj, f, *args, **kwargs):
    """Write half of the file, make it durable, then die: SIGKILL mid-checkpoint."""
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    fh = f if hasattr(f, "write") else open(f, "wb")  # a path or an open file
    fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    fh.flush()
    os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

def hook(step, model):
    if step == kill_at:
        if how == "step":
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save  # the next checkpoint or resume-state write dies halfway

train(make_plan(cfg, "train.m", run_paths(out / "m.pt", out / "m.csv"),
                train_chars=len(corpus.split("train")), progress=False, on_step=hook), corpus)
'''


def curve_losses(path: Path) -> list[tuple[str, ...]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    return [tuple(r[:3]) for r in rows]  # step, train_loss, val_loss (not the timings)


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_sigkill_at_seeded_steps_then_resume_equals_an_uninterrupted_run(pipeline_built: Path,
                                                                         tmp_path: Path) -> None:
    cfg = dict(TINY, hidden_size=16, batch_size=4, seq_length=16, dropout=0.1, max_steps=24,
               eval_every=6, checkpoint_every=5)
    corpus = Corpus.load(*(pipeline_built / p for p in ENCODED))
    straight = tmp_path / "straight"
    train_entry(parse_entry(cfg, "train.m"), corpus, checkpoint_path=straight / "m.pt",
                curve_path=straight / "m.csv", name="m", progress=False)

    rng = random.Random(20240606)
    steps = sorted(rng.sample(range(1, cfg["max_steps"]), 3))
    kills = list(zip(steps, ["step", "save", rng.choice(["step", "save"])], strict=True))
    out = tmp_path / "killed"
    out.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    enc = pipeline_built / "data/encoded"
    resumed = []
    for step, how in [*kills, (-1, "none")]:
        proc = subprocess.run([PY, str(driver), str(enc), str(out), str(step), how,
                               json.dumps(cfg)], capture_output=True, text=True, timeout=120)
        resumed += [int(k) for k in re.findall(r"m: resuming from step (\d+)", proc.stdout)]
        if step < 0:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == -signal.SIGKILL, (step, how, proc.stderr)
            # whatever was renamed into place is whole: the resume state always loads
            if (out / "m.pt.state").exists():
                torch.load(out / "m.pt.state", weights_only=True)
    assert len(resumed) >= 2 and resumed == sorted(resumed), (kills, resumed)  # it did resume
    for name in ("m.pt", "m.pt.state"):
        a, b = model_weights(straight / name), model_weights(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (kills, name)
    assert curve_losses(straight / "m.csv") == curve_losses(out / "m.csv")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_sigterm_save_the_state_and_resume_continues(pipeline_ws: Path, sig: int) -> None:
    edit_params(pipeline_ws, {"train": {"rnn": {"max_steps": 1_000_000, "eval_every": 1_000_000,
                                       "checkpoint_every": 2}}})
    state = pipeline_ws / "models/rnn.pt.state"
    state.unlink()
    script, *args = stage_argv("train")
    proc = subprocess.Popen([PY, str(REPO / script), *args], cwd=pipeline_ws,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(state, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "interrupted", err
    found = re.search(r"rnn: interrupted at step (\d+); state saved to models/rnn\.pt\.state; "
                      r"run again to resume", out)
    assert found, out
    step = int(found.group(1))
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == step and not saved["complete"]
    assert temp_leftovers(pipeline_ws) == []
    # continue the interrupted run, a few more steps
    corpus = Corpus.load(*(pipeline_ws / p for p in ENCODED))
    cfg = train_models(load(pipeline_ws / "params.yaml"))["rnn"]
    res = train_entry(parse_entry({**cfg.to_dict(), "resume": True, "max_steps": step + 3},
                                  "train.rnn"), corpus,
                      checkpoint_path=pipeline_ws / "models/rnn.pt",
                      curve_path=pipeline_ws / "metrics/train/rnn.csv", name="rnn",
                      progress=False)
    assert res.resumed_from == step and res.steps == step + 3
