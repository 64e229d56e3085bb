"""The trainer: learning, curve, reproducibility, resume, NaN guard, checkpoints, errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_params, with_keys
from helpers import (
    ENCODED,
    edit_params,
    one_line_error,
    run_stage,
    temp_leftovers,
    train_entry,
)

from charlab.checkpoint import (
    CheckpointError,
    default_state_path,
    load_checkpoint,
)
from charlab.encoding import Corpus, Vocab, encode_corpus
from charlab.params.core import ParamsError
from charlab.params.training import TrainParams
from charlab.runtime import (
    DeviceError,
    cpu_threads,
    resolve_device,
    resolve_precision,
)
from charlab.training.batches import StreamBatches
from charlab.training.guard import TrainingDiverged, TrainingInterrupted
from charlab.training.loop import lr_at
from charlab.training.plan import make_plan, run_paths
from charlab.training.records import CURVE_COLUMNS
from charlab.training.resume import load_resume_state, restore_hidden

WORDS = ["the", "king", "queen", "shall", "speak", "of", "love", "and", "war", "my", "lord"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(900)]
    text = "\n".join(line.capitalize() + "." for line in lines) + "\n"
    d = tmp_path_factory.mktemp("corpus")
    (d / "corpus.txt").write_text(text, encoding="utf-8")
    encode_corpus(d / "corpus.txt", d / "vocab.json", d / "tokens.bin", d / "split.json",
                  val_fraction=0.1, test_fraction=0.05)
    return Corpus.load(d / "vocab.json", d / "tokens.bin", d / "split.json")


def cfg(**kw) -> TrainParams:
    """conftest's TINY, wider and longer (enough steps to learn), with the default seed."""
    base = dict(hidden_size=32, batch_size=8, seq_length=16, max_steps=20, eval_every=10,
                warmup_steps=2, seed=TrainParams.seed)
    return tiny_params("train.test", **{**base, **kw})


def run(c: TrainParams, corpus: Corpus, d: Path, name: str = "m", **kw):
    return train_entry(c, corpus, checkpoint_path=d / f"{name}.pt",
                       curve_path=d / f"{name}.csv", name=name, progress=False, **kw)


def read_curve(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def losses(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in rows]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_learns(cell: str, corpus: Corpus, tmp_path: Path) -> None:
    res = run(cfg(cell=cell, max_steps=60, eval_every=20, layers=2, dropout=0.1), corpus,
              tmp_path)
    rows = read_curve(tmp_path / "m.csv")
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    first, last = rows[0], rows[-1]
    assert float(last["val_loss"]) < float(first["val_loss"]) - 0.2
    assert float(last["train_loss"]) < float(first["train_loss"])
    assert float(last["val_loss"]) < math.log(corpus.vocab.size) - 0.5  # beats uniform
    assert res.best_val_loss == pytest.approx(min(float(r["val_loss"]) for r in rows), abs=1e-6)


def test_curve_columns_and_rows(corpus: Corpus, tmp_path: Path) -> None:
    run(cfg(max_steps=25, eval_every=10), corpus, tmp_path)
    with open(tmp_path / "m.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == CURVE_COLUMNS
    rows = read_curve(tmp_path / "m.csv")
    assert [int(r["step"]) for r in rows] == [10, 20, 25]  # and always the last step
    assert all(float(r["chars_per_sec"]) > 0 for r in rows)
    elapsed = [float(r["elapsed_sec"]) for r in rows]
    assert elapsed == sorted(elapsed)
    # eval_every beyond max_steps: one row, at the end
    run(cfg(max_steps=5, eval_every=100), corpus, tmp_path, name="one")
    assert [r["step"] for r in read_curve(tmp_path / "one.csv")] == ["5"]


def test_same_seed_same_curve_and_weights(corpus: Corpus, tmp_path: Path) -> None:
    c = cfg(dropout=0.2, layers=2)
    run(c, corpus, tmp_path / "a")
    run(c, corpus, tmp_path / "b")
    assert losses(read_curve(tmp_path / "a/m.csv")) == losses(read_curve(tmp_path / "b/m.csv"))
    assert_same_weights(weights(tmp_path / "a/m.pt"), weights(tmp_path / "b/m.pt"))
    run(dataclasses.replace(c, seed=7), corpus, tmp_path / "c")
    assert losses(read_curve(tmp_path / "c/m.csv")) != losses(read_curve(tmp_path / "a/m.csv"))


def interrupt_at(step: int):
    def hook(k: int, model: torch.nn.Module) -> None:
        if k == step:
            os.kill(os.getpid(), signal.SIGINT)
    return hook


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("cut", [9, 12])
def test_resume_after_interrupt_is_bit_identical(cell: str, cut: int, corpus: Corpus,
                                                 tmp_path: Path) -> None:
    # dropout on, odd interruption step (mid-epoch, between curve rows): RNG, data
    # position, carried hidden state and the partial train-loss sum must all survive.
    # At step 12 a row is due: the interrupted run skips it, the resumed run does it first.
    c = cfg(cell=cell, dropout=0.2, layers=2, max_steps=24, eval_every=6)
    run(c, corpus, tmp_path / "straight")
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as e:
        run(c, corpus, tmp_path / "resumed", on_step=interrupt_at(cut))
    assert e.value.step == cut and e.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert [int(r["step"]) for r in read_curve(tmp_path / "resumed/m.csv")] == [6]
    res = run(c, corpus, tmp_path / "resumed")  # rerun: continues on its own
    assert res.resumed_from == cut
    for f in ("m.pt", "m.pt.state"):
        assert_same_weights(weights(tmp_path / "straight" / f), weights(tmp_path / "resumed" / f))
    assert (losses(read_curve(tmp_path / "straight/m.csv"))
            == losses(read_curve(tmp_path / "resumed/m.csv")))


def test_resume_keeps_the_best_weights_when_the_best_step_is_behind(corpus: Corpus,
                                                                   tmp_path: Path) -> None:
    # lr 0.3: the val loss is best early and worse after; the interruption comes later, so
    # the resume state must hold the best weights as they were, not the live ones
    c = cfg(lr=0.3, max_steps=16, eval_every=1)
    straight = run(c, corpus, tmp_path / "straight")
    assert straight.best_step < straight.steps - 4
    state = torch.load(tmp_path / "straight/m.pt.state", weights_only=True)
    assert_same_weights(state["best"]["weights"], weights(tmp_path / "straight/m.pt"))
    assert not all(torch.equal(state["best"]["weights"][k], state["model"][k])
                   for k in state["model"])
    with pytest.raises(TrainingInterrupted):
        run(c, corpus, tmp_path / "resumed", on_step=interrupt_at(straight.best_step + 3))
    assert run(c, corpus, tmp_path / "resumed").best_step == straight.best_step
    assert_same_weights(weights(tmp_path / "straight/m.pt"), weights(tmp_path / "resumed/m.pt"))


def test_resume_true_extends_a_finished_run(corpus: Corpus, tmp_path: Path) -> None:
    c = cfg(lr_schedule="constant", dropout=0.1, max_steps=20)
    run(c, corpus, tmp_path / "straight")
    run(dataclasses.replace(c, max_steps=10), corpus, tmp_path / "ext")
    res = run(dataclasses.replace(c, resume=True), corpus, tmp_path / "ext")
    assert res.resumed_from == 10 and res.steps == 20
    assert_same_weights(weights(tmp_path / "straight/m.pt.state"),
                        weights(tmp_path / "ext/m.pt.state"))


def test_finished_or_changed_runs_start_afresh(corpus: Corpus, tmp_path: Path) -> None:
    c = cfg(max_steps=10)
    run(c, corpus, tmp_path)
    assert run(c, corpus, tmp_path).resumed_from is None  # finished: a rerun retrains
    with pytest.raises(TrainingInterrupted):
        run(c, corpus, tmp_path, on_step=interrupt_at(5))
    # interrupted, but the params changed since: the old state is not used
    assert run(dataclasses.replace(c, lr=0.005), corpus, tmp_path).resumed_from is None
    with pytest.raises(CheckpointError, match="network shape"):
        run(with_keys(c, hidden_size=16, resume=True), corpus, tmp_path)


def test_nan_guard_names_step_and_keeps_last_good_checkpoint(corpus: Corpus,
                                                              tmp_path: Path) -> None:
    def poison(k: int, model: torch.nn.Module) -> None:
        if k == 13:
            with torch.no_grad():
                model.head.bias[0] = float("nan")

    with pytest.raises(TrainingDiverged, match="at step 14") as e:
        run(cfg(max_steps=30, eval_every=5), corpus, tmp_path, on_step=poison)
    assert "best checkpoint (step 10)" in str(e.value)
    model, _, info = load_checkpoint(tmp_path / "m.pt")
    assert info["step"] == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = torch.load(default_state_path(tmp_path / "m.pt"), weights_only=True)
    assert state["step"] == 10 and not state["complete"]


def test_best_checkpoint_and_early_stopping(corpus: Corpus, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)

    def worsen(k: int, model: torch.nn.Module) -> None:
        if k > 10 and k % 5 == 0:  # from step 15 on, every evaluation is worse than step 10's
            with torch.no_grad():
                model.head.bias.add_(5 * torch.randn(model.head.bias.shape, generator=gen))

    res = run(cfg(max_steps=60, eval_every=5, patience=2, lr=1e-4), corpus, tmp_path,
              on_step=worsen)
    assert res.stopped_early and res.steps == 20 and res.best_step == 10
    rows = read_curve(tmp_path / "m.csv")
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    _, _, info = load_checkpoint(tmp_path / "m.pt")
    assert info["step"] == 10
    assert info["val_loss"] == pytest.approx(float(rows[1]["val_loss"]), abs=1e-6)


def test_bf16_precision_trains_on_cpu(corpus: Corpus, tmp_path: Path) -> None:
    run(cfg(precision="bf16", max_steps=40, eval_every=20, layers=2), corpus, tmp_path)
    rows = read_curve(tmp_path / "m.csv")
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert float(rows[-1]["val_loss"]) < math.log(corpus.vocab.size) - 0.5


def test_checkpoint_saved_on_cuda_loads_on_cpu(corpus: Corpus, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run(cfg(max_steps=5), corpus, tmp_path)
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    # Write the same checkpoint with every tensor tagged as living on cuda:0, as a file
    # saved on a GPU machine is.
    monkeypatch.setattr(torch.serialization, "_package_registry",
                        list(torch.serialization._package_registry))
    torch.serialization.register_package(1, lambda s: "cuda:0", lambda s, loc: None)
    torch.save(obj, tmp_path / "gpu.pt")
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    model, vocab, info = load_checkpoint(tmp_path / "gpu.pt", torch.device("cpu"),
                                         vocab=corpus.vocab)
    assert next(model.parameters()).device.type == "cpu" and not model.training
    assert vocab == corpus.vocab and info["step"] == 5
    assert_same_weights(model.state_dict(), obj["model"])


def test_checkpoint_errors(corpus: Corpus, tmp_path: Path) -> None:
    run(cfg(max_steps=5), corpus, tmp_path)
    good = (tmp_path / "m.pt").read_bytes()
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a charlab"):
        load_checkpoint(tmp_path / "other.pt")
    other = Vocab(tuple(sorted(set(corpus.vocab.chars) | {"#"})))
    with pytest.raises(CheckpointError, match="vocabulary"):
        load_checkpoint(tmp_path / "m.pt", vocab=other)


def test_device_errors() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ParamsError, match=r"^train\.test\.device: device 'cuda' requested"):
            make_plan(cfg(device="cuda"), "train.test", run_paths("x.pt", "x.csv"),
                      train_chars=10**6)


def test_too_short_train_split_is_a_clear_error(corpus: Corpus, tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"^train\.m\.batch_size: "):
        run(cfg(batch_size=4096, seq_length=64), corpus, tmp_path)


def test_threads_restored(corpus: Corpus, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    run(cfg(max_steps=3, threads=1), corpus, tmp_path)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("threads", "env", "expected"), [
    (3, "1", 3),       # an explicit value wins
    (0, "1", 1),       # 0: OMP_NUM_THREADS, as queued experiments and torchrun ranks set it
    (0, "", None),     # 0 and no OMP_NUM_THREADS: every core
    (0, "junk", None),
])
def test_cpu_threads(threads: int, env: str, expected: int | None,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(threads) == (cores if expected is None else expected)


def test_lr_schedule() -> None:
    c = cfg(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(c, 0) == pytest.approx(0.1)
    assert lr_at(c, 9) == pytest.approx(1.0)
    assert lr_at(c, 10) == pytest.approx(1.0)
    assert lr_at(c, 60) == pytest.approx(0.55)
    assert lr_at(c, 110) == pytest.approx(0.1)
    assert lr_at(dataclasses.replace(c, lr_schedule="constant"), 100) == 1.0


def test_precision_auto_resolves_and_is_recorded(corpus: Corpus, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    auto = resolve_precision("auto", cpu)
    assert auto in ("fp32", "bf16")
    res = run(cfg(precision="auto", max_steps=3), corpus, tmp_path)
    assert res.precision == auto
    assert load_checkpoint(tmp_path / "m.pt")[2]["precision"] == auto


def test_new_params_are_validated() -> None:
    with pytest.raises(ParamsError, match="train.test.precision"):
        cfg(precision="fp16")
    with pytest.raises(ParamsError, match="train.test.min_lr_ratio"):
        cfg(min_lr_ratio=1.5)
    with pytest.raises(ParamsError, match="train.test.resume"):
        cfg(resume="yes")


def test_stream_batches_rows_shard_the_global_batch(corpus: Corpus) -> None:
    ids = corpus.split("train")
    cpu = torch.device("cpu")
    whole = StreamBatches(ids, 8, 16, seed=3, device=cpu)
    halves = [StreamBatches(ids, 8, 16, seed=3, device=cpu, rows=range(r * 4, r * 4 + 4))
              for r in (0, 1)]
    for step in (0, 1, whole.steps_per_epoch, whole.steps_per_epoch + 5):
        x, y, new = whole.batch(step)
        parts = [h.batch(step) for h in halves]
        assert torch.equal(x, torch.cat([p[0] for p in parts]))
        assert torch.equal(y, torch.cat([p[1] for p in parts]))
        assert all(p[2] == new for p in parts)
    # stream b reads the b-th contiguous piece of the split, targets one ahead of inputs
    x, y, _ = whole.batch(0)
    per_stream = len(ids) // 8
    p = whole.offset(0)
    assert x[3].tolist() == ids[3 * per_stream + p:3 * per_stream + p + 16].tolist()
    assert torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.parametrize("block", [1, 3, 64])
def test_stream_batches_read_from_disk_as_from_memory(corpus: Corpus, block: int) -> None:
    cpu = torch.device("cpu")
    mem = StreamBatches(np.asarray(corpus.split("train")), 8, 16, seed=3, device=cpu)
    disk = StreamBatches(corpus.split_file("train"), 8, 16, seed=3, device=cpu, block=block)
    assert mem.steps_per_epoch > 3 * block or block == 64
    for step in [*range(0, 2 * mem.steps_per_epoch + 2, 1 if block < 64 else 5)]:
        got, want = disk.batch(step), mem.batch(step)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), step
        assert got[2] == want[2]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_resume_under_another_precision(cell: str, corpus: Corpus, tmp_path: Path) -> None:
    """A run saved in bf16 continues in fp32 (resume: true): the carried hidden state has the
    parameters' dtype whatever precision saved it (an LSTM's used to be bf16: a dtype
    error in the next fp32 forward)."""
    c = cfg(cell=cell, layers=2, dropout=0.1, max_steps=8, eval_every=4, precision="bf16")
    run(c, corpus, tmp_path)
    more = dataclasses.replace(c, precision="fp32", max_steps=14, resume=True)
    state = load_resume_state(default_state_path(tmp_path / "m.pt"), more, corpus,
                              more.network_config(corpus.vocab.size))
    assert state is not None and all(h.dtype == torch.float32 for h in state.hidden)
    res = run(more, corpus, tmp_path)
    assert res.resumed_from == 8 and res.steps == 14 and res.precision == "fp32"


def test_restored_hidden_is_contiguous_in_the_parameters_dtype() -> None:
    """A DDP rank's rows of the saved hidden state: a slice of the batch dimension is a
    strided view, which cuDNN rejects as hx; restored contiguous, in the parameters' dtype."""
    saved = [torch.randn(3, 8, 5, dtype=torch.bfloat16), torch.randn(3, 8, 5)]
    like = torch.zeros(1)
    h, c = restore_hidden(saved, range(2, 4), like)
    for got, full in ((h, saved[0]), (c, saved[1])):
        assert got.is_contiguous() and got.dtype == torch.float32 and got.shape == (3, 2, 5)
        assert torch.equal(got, full[:, 2:4].float())
    one = restore_hidden(saved[:1], range(0, 8), like)
    assert isinstance(one, torch.Tensor) and one.is_contiguous()


def test_resume_state_loads_on_the_cpu(corpus: Corpus, tmp_path: Path, monkeypatch) -> None:
    """Read on the CPU whatever the device: load_state_dict moves what must move and leaves
    Adam's step counters on the CPU (on a GPU they cost a host sync per step)."""
    c = cfg(max_steps=6, eval_every=3)
    run(c, corpus, tmp_path)
    seen = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    state = load_resume_state(default_state_path(tmp_path / "m.pt"),
                              dataclasses.replace(c, resume=True), corpus,
                              c.network_config(corpus.vocab.size))
    assert seen and all(kw["map_location"] == "cpu" and kw["weights_only"] for kw in seen)
    devices = {t.device.type for t in _tensors(state.to_dict())}
    assert devices == {"cpu"}
    steps = [s["step"] for s in state.optimizer["state"].values()]
    assert steps and all(isinstance(s, torch.Tensor) and s.device.type == "cpu" for s in steps)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def test_run_info_and_log_name_the_device_and_each_parts_precision(corpus: Corpus,
                                                                   tmp_path: Path,
                                                                   capsys) -> None:
    run(cfg(max_steps=4, eval_every=2, precision="bf16"), corpus, tmp_path,
        run_info_path=tmp_path / "runs" / "m.json")
    info = json.loads((tmp_path / "runs" / "m.json").read_text())
    assert info["device"] == "cpu" and info["device_name"]
    assert info["precision"] == "bf16" and info["precision_parts"]["recurrence"] == "bf16"
    assert info["steps"] == 4 and info["threads"] == 1 and info["processes"] == 1
    assert info["elapsed_seconds"] > 0 and info["params"] > 0
    out = capsys.readouterr().out
    assert "precision bf16 (recurrence bf16, head bf16), 1 threads" in out
    _, _, ckpt_info = load_checkpoint(tmp_path / "m.pt")
    assert ckpt_info["precision_parts"]["head"] == "bf16" and ckpt_info["device_name"]


# --- a short split and divergence, in the library and in the train stage

def test_train_library_names_the_key_path_for_a_short_split(pipeline_built: Path,
                                                            tmp_path: Path) -> None:
    corpus = Corpus.load(*(pipeline_built / p for p in ENCODED))
    with pytest.raises(ParamsError, match=r"^train\.m\.batch_size: "):
        train_entry(tiny_params(batch_size=4096), corpus, checkpoint_path=tmp_path / "m.pt",
                    curve_path=tmp_path / "m.csv", name="m", progress=False)


def poison_at(step: int, value: float) -> Callable[[int, torch.nn.Module], None]:
    def hook(k: int, model: torch.nn.Module) -> None:
        if k == step:
            with torch.no_grad():
                model.head.bias[0] = value
    return hook


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_divergence_before_any_checkpoint(pipeline_built: Path, tmp_path: Path,
                                          value: float) -> None:
    corpus = Corpus.load(*(pipeline_built / p for p in ENCODED))
    with pytest.raises(TrainingDiverged, match=r"^train\.m: non-finite training loss nan, "
                                               r"gradient norm nan at step 4; no checkpoint "
                                               r"was written yet"):
        train_entry(tiny_params(max_steps=10, eval_every=5), corpus,
                    checkpoint_path=tmp_path / "m.pt", curve_path=tmp_path / "m.csv", name="m",
                    progress=False, on_step=poison_at(3, value))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-made


def test_divergence_in_the_stage_names_the_step_and_keeps_the_checkpoint(
        pipeline_ws: Path, capsys, monkeypatch) -> None:
    import charlab.training.launch as launch

    real = launch.train  # what the train stage calls
    monkeypatch.setattr(launch, "train", lambda plan, corpus: real(
        dataclasses.replace(plan, on_step=poison_at(5, float("nan"))), corpus))
    edit_params(pipeline_ws, {"train": {"rnn": {"max_steps": 8, "eval_every": 2, "seed": 2}}})
    code, _, err = run_stage(pipeline_ws, "train", capsys)
    assert code == 2
    assert re.fullmatch(r"error: train\.rnn: non-finite training loss nan, gradient norm nan at "
                        r"step 6; the best checkpoint \(step 4\) is kept in models/rnn\.pt, and "
                        r"the resume state stays at the last saved step\. Lower lr or "
                        r"grad_clip, or use precision: fp32", one_line_error(err))
    model, _, info = load_checkpoint(pipeline_ws / "models/rnn.pt")
    assert info["step"] == 4 and all(torch.isfinite(p).all() for p in model.parameters())
    assert temp_leftovers(pipeline_ws) == []
