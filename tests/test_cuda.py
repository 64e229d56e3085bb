"""The CUDA path, on a GPU: `pytest -m cuda` (bench/gpu_check.py runs these). Every test
skips cleanly without one; the decisions they check are tested on the CPU elsewhere
(tests/test_runtime.py: which dtypes; tests/test_model.py: that the network obeys them)."""

from __future__ import annotations

import dataclasses
import os
import re

# cuBLAS picks nondeterministic workspaces unless told otherwise (PyTorch's cuDNN RNN
# determinism note); before CUDA starts, so the bit-for-bit resume test can hold
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, make_text
from helpers import train_entry

from charlab.checkpoint import load_checkpoint
from charlab.encoding import Corpus, encode_corpus
from charlab.families.recurrent import CharRNN, ModelConfig
from charlab.families.streaming import StreamingLM
from charlab.params.training import TrainParams, parse_entry
from charlab.runtime import (
    SyncWindow,
    dtype_trace,
    float32_gemms,
    hardware,
    plan_precision,
)
from charlab.training.guard import TrainingInterrupted

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")]
CELLS = ["rnn", "lstm", "gru"]
PRECISIONS = ["fp32", "tf32", "bf16"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    d = tmp_path_factory.mktemp("corpus")
    (d / "c.txt").write_text(make_text(120_000), encoding="utf-8")
    encode_corpus(d / "c.txt", d / "v.json", d / "t.bin", d / "s.json", val_fraction=0.05,
                  test_fraction=0.05)
    return Corpus.load(d / "v.json", d / "t.bin", d / "s.json")


def cfg(**kw) -> TrainParams:
    base = dict(layers=2, hidden_size=64, batch_size=16, seq_length=32, lr=3e-3, max_steps=12,
                eval_every=6, device="cuda", threads=1, dropout=0.2, warmup_steps=2)
    return parse_entry({**base, **kw}, "train.t")


def run(c: TrainParams, corpus: Corpus, d: Path, **kw):
    return train_entry(c, corpus, checkpoint_path=d / "m.pt", curve_path=d / "m.csv", name="t",
                       progress=False, **kw)


def recurrent_ops(ops, hidden: int):
    """cuDNN's RNN kernels (``_cudnn_rnn`` and its backward), the native per-step cells, or,
    for a tanh RNN without a cuDNN that takes bf16 (< 9.13), the per-step GEMMs."""
    return [r for r in ops if re.search(r"rnn|lstm|gru", r.op)
            or (r.op in ("mm", "addmm") and r.shapes and r.shapes[0][-1] == hidden)]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_and_precision_trains_in_the_dtypes_it_names(cell: str, precision: str,
                                                               corpus: Corpus,
                                                               tmp_path: Path) -> None:
    res = run(cfg(cell=cell, precision=precision), corpus, tmp_path)
    assert res.precision == precision and res.steps == 12
    plan = plan_precision(precision, hardware(torch.device("cuda")))
    model = CharRNN(ModelConfig(corpus.vocab.size, cell=cell, layers=2, hidden_size=64,
                                dropout=0.2)).cuda().train()
    model.set_precision(plan.recurrence, plan.head)
    idx = torch.randint(0, corpus.vocab.size, (16, 32), device="cuda")
    with float32_gemms(plan), dtype_trace() as ops:
        logits, hidden = model(idx)
        logits.float().sum().backward()
    rec = recurrent_ops(ops, 64)
    assert rec, "no recurrent kernel ran"
    assert all(r.inputs[0] == plan.recurrence for r in rec), rec[:2]
    assert not any(torch.float16 in r.inputs + r.outputs for r in ops)  # autocast's choice
    assert logits.dtype == plan.head
    assert all(h.dtype == torch.float32 for h in (hidden if cell == "lstm" else (hidden,)))
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def interrupt_at(step: int):
    def hook(k: int, model) -> None:
        if k == step:
            os.kill(os.getpid(), signal.SIGINT)
    return hook


@pytest.mark.parametrize("cell", CELLS)
def test_resume_on_cuda_continues_bit_for_bit(cell: str, corpus: Corpus,
                                              tmp_path: Path) -> None:
    """Between-layer dropout is charlab's, from torch's CUDA generator that the resume
    state restores: an interrupted and resumed run ends with the same weights."""
    c = cfg(cell=cell, layers=3, max_steps=16, eval_every=8)
    run(c, corpus, tmp_path / "straight")
    with pytest.raises(TrainingInterrupted):
        run(c, corpus, tmp_path / "resumed", on_step=interrupt_at(5))
    assert run(c, corpus, tmp_path / "resumed").resumed_from == 5
    a = torch.load(tmp_path / "straight/m.pt.state", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed/m.pt.state", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def syncs_per_step(c: TrainParams, corpus: Corpus, d: Path, first: int, last: int) -> float:
    """Host syncs per optimizer step over steps first+1 .. last (no curve row among them)."""
    with SyncWindow(first, last) as window:
        run(c, corpus, d, on_step=window)
    return window.per_step


def test_no_host_sync_per_step_fresh_or_resumed(corpus: Corpus, tmp_path: Path) -> None:
    # no curve row and no resume-state save in the windows (both copy to the host), and
    # fewer than 32 steps since the last loss check (that one sync per 32 steps is by design)
    c = cfg(cell="lstm", max_steps=30, eval_every=30)
    assert syncs_per_step(c, corpus, tmp_path, 2, 25) == 0
    # a resume state saved at step 10, then continued (resume: true) with more steps
    short = dataclasses.replace(c, max_steps=10, eval_every=10)
    run(short, corpus, tmp_path / "r")
    more = dataclasses.replace(c, resume=True, max_steps=40, eval_every=40)
    assert syncs_per_step(more, corpus, tmp_path / "r", 12, 35) == 0


def test_a_cuda_checkpoint_scores_the_same_on_the_cpu(corpus: Corpus, tmp_path: Path) -> None:
    run(cfg(cell="lstm", precision="bf16"), corpus, tmp_path)
    ids = np.asarray(corpus.split("val"), dtype=np.int64)
    on_gpu = StreamingLM(load_checkpoint(tmp_path / "m.pt", "cuda")[0], "cuda").log_probs(ids)
    on_cpu = StreamingLM(load_checkpoint(tmp_path / "m.pt", "cpu")[0], "cpu").log_probs(ids)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs 2 GPUs")
def test_two_process_nccl_ddp_step(corpus: Corpus, tmp_path: Path) -> None:
    params = {"train": {"t": {**cfg(max_steps=4, eval_every=4).to_dict(), "nproc": 2}}}
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    d = Path(corpus.tokens_path).parent
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages/train.py"), "--params", str(tmp_path / "params.yaml"),
         "--model", "t", "--vocab", str(d / "v.json"), "--tokens", str(d / "t.bin"),
         "--splits", str(d / "s.json"), "--checkpoint", str(tmp_path / "t.pt"),
         "--curve", str(tmp_path / "t.csv"), "--run-info", str(tmp_path / "t.json")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 processes (DDP" in proc.stdout + proc.stderr
