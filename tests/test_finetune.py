"""Fine-tuning from a checkpoint (finetune.<model>.init_from): rows remapped by character
across vocabularies, shape errors, the record in the checkpoint, and that it actually helps."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_text
from helpers import train_entry

from charlab.checkpoint import load_checkpoint
from charlab.encoding import Corpus, encode_corpus
from charlab.params.core import ParamsError
from charlab.params.training import TrainParams, parse_entry
from charlab.training.finetune import init_weights
from charlab.training.loop import evaluate_loss

RNN = dict(cell="rnn", layers=1, hidden_size=32, batch_size=8, seq_length=16, lr=0.01,
           device="cpu", threads=1, dropout=0.0, warmup_steps=2, eval_every=50)
SHAPES = {
    "rnn-onehot": RNN,
    "gru-embedding": {**RNN, "cell": "gru", "embedding_size": 8},
    "gpt": {**{k: v for k, v in RNN.items() if k != "seq_length"}, "cell": "gpt", "heads": 2,
            "context": 16},
}


def encode(text: str, d: Path) -> Corpus:
    d.mkdir(parents=True)
    (d / "corpus.txt").write_text(text, encoding="utf-8")
    encode_corpus(d / "corpus.txt", d / "vocab.json", d / "tokens.bin", d / "split.json",
                  val_fraction=0.1, test_fraction=0.05)
    return Corpus.load(d / "vocab.json", d / "tokens.bin", d / "split.json")


def B_TEXT() -> str:  # noqa: N802
    return make_text(30_000, seed=7).replace("k", "ж").replace("?", "%")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Corpus, Corpus]:
    """A, and B: other text in the same style with 'k' and '?' gone and 'ж', '%' new."""
    d = tmp_path_factory.mktemp("corpora")
    a = encode(make_text(30_000, seed=0), d / "a")
    b = encode(B_TEXT(), d / "b")
    assert {"ж", "%"} == set(b.vocab.chars) - set(a.vocab.chars)
    assert {"k", "?"} == set(a.vocab.chars) - set(b.vocab.chars)
    return a, b


def cfg(shape: str, **kw) -> TrainParams:
    return parse_entry({**SHAPES[shape], **kw}, "train.t")


def fit(c: TrainParams, corpus: Corpus, d: Path, name: str = "m", **kw):
    return train_entry(c, corpus, checkpoint_path=d / f"{name}.pt",
                       curve_path=d / f"{name}.csv", name=name, progress=False, **kw)


def fresh(c: TrainParams, corpus: Corpus) -> torch.nn.Module:
    torch.manual_seed(c.seed)  # as the trainer builds it
    return c.family.build(c.network_config(corpus.vocab.size))


# the parameters indexed by character, and along which axis
ROWS = {"rnn-onehot": {"rnn.weight_ih_l0": 1, "head.weight": 0, "head.bias": 0},
        "gru-embedding": {"embed.weight": 0, "head.weight": 0, "head.bias": 0},
        "gpt": {"tok.weight": 0, "head_bias": 0}}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shared_characters_keep_their_rows_new_ones_stay_fresh(shape: str, corpora, tmp_path
                                                               ) -> None:
    a, b = corpora
    c = cfg(shape, max_steps=3)
    fit(c, a, tmp_path)
    source = torch.load(tmp_path / "m.pt", weights_only=True)["model"]
    model = fresh(c, b)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = init_weights(model, c.network_config(b.vocab.size), b.vocab, tmp_path / "m.pt",
                        "train.t.init_from")
    after = model.state_dict()
    for name, value in after.items():
        axis = ROWS[shape].get(name)
        if axis is None:  # not indexed by character: copied as it is
            assert torch.equal(value, source[name]), name
            continue
        for i, ch in enumerate(b.vocab.chars):
            got = value.select(axis, i)
            if ch in a.vocab.chars:
                assert torch.equal(got, source[name].select(axis, a.vocab.chars.index(ch))), ch
            else:
                assert torch.equal(got, before[name].select(axis, i)), ch
    assert info["new"] == ["%", "ж"] and info["dropped"] == ["?", "k"]
    assert [a.vocab.chars[j] if j >= 0 else None for j in info["map"]] == [
        ch if ch in a.vocab.chars else None for ch in b.vocab.chars]


def test_finetuning_starts_far_better_and_beats_training_from_scratch(corpora, tmp_path
                                                                      ) -> None:
    a, b = corpora
    fit(cfg("rnn-onehot", max_steps=300, eval_every=300), a, tmp_path, "a")
    c = cfg("rnn-onehot", max_steps=30, eval_every=30)
    val = np.asarray(b.split("val"))
    scratch0 = evaluate_loss(fresh(c, b), val, torch.device("cpu"))
    tuned = fresh(c, b)
    init_weights(tuned, c.network_config(b.vocab.size), b.vocab, tmp_path / "a.pt", "k")
    tuned0 = evaluate_loss(tuned, val, torch.device("cpu"))
    assert tuned0 < scratch0 - 0.8, (tuned0, scratch0)  # step 0: far below a fresh model
    scratch = fit(c, b, tmp_path, "scratch")
    ft = fit(parse_entry({**RNN, "max_steps": 30, "eval_every": 30,
                          "init_from": str(tmp_path / "a.pt")}, "train.ft"), b, tmp_path, "ft")
    assert ft.best_val_loss < scratch.best_val_loss - 0.1, (ft.best_val_loss,
                                                            scratch.best_val_loss)
    _, _, info = load_checkpoint(tmp_path / "ft.pt")
    assert info["init"]["from"] == str(tmp_path / "a.pt")
    assert info["init"]["new"] == ["%", "ж"] and len(info["init"]["sha256"]) == 64


def test_init_from_an_entry_name_reads_its_checkpoint_beside(corpora, tmp_path) -> None:
    a, _ = corpora
    fit(cfg("gpt", max_steps=3), a, tmp_path, "base")
    res = fit(cfg("gpt", max_steps=2, init_from="base"), a, tmp_path, "ft")
    _, _, info = load_checkpoint(tmp_path / "ft.pt")
    assert info["init"]["from"] == str(tmp_path / "base.pt") and info["init"]["new"] == []
    assert res.steps == 2


@pytest.mark.parametrize("change,message", [
    ({"hidden_size": 16}, r"\{cell: rnn, layers: 1, hidden_size: 32, embedding_size: "
                          r"0\}, this entry \{cell: rnn, layers: 1, hidden_size: 16, "
                          r"embedding_size: 0\}; fine-tuning needs the same shape$"),
    ({"layers": 2}, r"\{cell: rnn, layers: 1, .*this entry \{cell: rnn, layers: 2,"),
    ({"cell": "lstm"}, r"\{cell: rnn, .*this entry \{cell: lstm,"),
    ({"cell": "gpt", "heads": 2, "context": 16, "seq_length": None},
     r"\{cell: rnn, layers: 1, hidden_size: 32, embedding_size: 0\}, this entry \{cell: gpt, "
     r"layers: 1, heads: 2, hidden_size: 32, context: 16\}"),
])
def test_another_shape_is_a_params_error_naming_both(change, message, corpora, tmp_path) -> None:
    a, b = corpora
    fit(cfg("rnn-onehot", max_steps=2), a, tmp_path, "a")
    entry = {**RNN, **change, "init_from": str(tmp_path / "a.pt")}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ParamsError, match=r"^train\.ft\.init_from: .*a\.pt has shape " + message):
        fit(parse_entry(entry, "train.ft"), b, tmp_path, "ft")
    assert not (tmp_path / "ft.pt").exists()


def test_a_missing_or_foreign_init_file_is_one_line(corpora, tmp_path) -> None:
    _, b = corpora
    with pytest.raises(ParamsError, match=r"^train\.ft\.init_from: .*nope\.pt: no such "
                                          r"checkpoint file$"):
        fit(cfg("rnn-onehot", init_from=str(tmp_path / "nope.pt")), b, tmp_path, "ft")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ParamsError, match=r"^train\.ft\.init_from: .*foreign\.pt: a torch "
                                          r"file, but not a charlab checkpoint$"):
        fit(cfg("rnn-onehot", init_from=str(tmp_path / "foreign.pt")), b, tmp_path, "ft")


@pytest.mark.slow
def test_the_finetune_stage_depends_on_its_init_checkpoint(tmp_path, http_server) -> None:
    """DVC: finetune@<name> runs after the entry it names, and replacing an imported init
    checkpoint (here `dvc add`ed, as `dvc import` would track it) reruns the fine-tune."""
    from test_pipeline import TINY_SIZES, edit_params, make_repo, run, stages_run

    def tweak(p):
        p["finetune"] = {"ft": {**TINY_SIZES, "init_from": "rnn"},
                         "ft2": {**TINY_SIZES, "init_from": "base"}}
    repo = make_repo(tmp_path, http_server, make_text(20_000, seed=1), tweak)
    edit_params(repo, lambda p: p["train"].pop("rnn3"))
    out = run(["dvc", "repro", "finetune@ft"], repo)
    assert stages_run(out) == {"validate", "download", "encode", "train@rnn",
                               "finetune@ft"}
    _, _, info = load_checkpoint(repo / "models/ft.pt")
    assert info["init"]["from"] == "models/rnn.pt"
    (repo / "models/base.pt").write_bytes((repo / "models/rnn.pt").read_bytes())
    run(["dvc", "add", "models/base.pt"], repo)
    assert "finetune@ft2" in stages_run(run(["dvc", "repro", "finetune@ft2"], repo))
    assert stages_run(run(["dvc", "repro", "finetune@ft2"], repo)) == set()
    (repo / "models/base.pt").write_bytes((repo / "models/ft.pt").read_bytes())  # replaced
    run(["dvc", "add", "models/base.pt"], repo)
    assert stages_run(run(["dvc", "repro", "finetune@ft2"], repo)) == {"finetune@ft2"}


def test_the_finetune_stage_reports_a_shape_error_in_one_line(corpora, tmp_path) -> None:
    import subprocess
    import sys

    import yaml
    from conftest import REPO

    a, _ = corpora
    fit(cfg("rnn-onehot", max_steps=2), a, tmp_path, "a")
    entry = {k: v for k, v in RNN.items() if k != "eval_every"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "train": {"a": entry}, "finetune": {"ft": {**entry, "hidden_size": 16,
                                                   "init_from": "a"}}}))
    enc = tmp_path / "b"
    encode(B_TEXT(), enc)
    args = ["--params", str(tmp_path / "params.yaml"), "--model", "ft", "--init",
            str(tmp_path / "a.pt"), "--vocab", str(enc / "vocab.json"), "--tokens",
            str(enc / "tokens.bin"), "--splits", str(enc / "split.json"), "--checkpoint",
            str(tmp_path / "ft.pt"), "--curve", str(tmp_path / "ft.csv"), "--run-info",
            str(tmp_path / "ft.json")]
    proc = subprocess.run([sys.executable, str(REPO / "stages/finetune.py"), *args],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: finetune.ft.init_from: "), lines
    assert lines[0].endswith("a.pt has shape {cell: rnn, layers: 1, hidden_size: 32, "
                             "embedding_size: 0}, this entry {cell: rnn, layers: 1, "
                             "hidden_size: 16, embedding_size: 0}; fine-tuning needs the same "
                             "shape")
    assert not (tmp_path / "ft.pt").exists() and not (tmp_path / "ft.csv").exists()


@pytest.mark.parametrize("bad,message", [
    ({"batch_size": 5000}, r"finetune\.ft\.batch_size: 5000 streams of seq_length \+ 1 = 9 "
                           r"characters need 45000"),
    ({"seq_length": 100_000}, r"finetune\.ft\.seq_length: 100000 is too long for the train "
                              r"split"),
    ({"device": "cuda"}, r"finetune\.ft\.device: device 'cuda' requested but CUDA is not "
                         r"available"),
    ({"nproc": 3}, r"finetune\.ft\.nproc: 3 processes must share batch_size 2 evenly"),
    ({"precision": "tf32"}, r"finetune\.ft\.precision: precision tf32 needs an NVIDIA GPU"),
], ids=["batch_size", "seq_length", "device", "nproc", "precision"])
def test_every_error_of_a_finetune_entry_names_its_key_path(pipeline_ws: Path, capsys, no_gpu,
                                                            bad: dict, message: str) -> None:
    """The finetune stage's errors name finetune.<name>.<key>, never train.<name>..., and
    come before any work: no checkpoint, curve or run info is written."""
    from conftest import TINY
    from helpers import one_line_error, run_stage

    edit = yaml.safe_load((pipeline_ws / "params.yaml").read_text())
    edit["finetune"] = {"ft": {**TINY, "init_from": "rnn", **bad}}
    (pipeline_ws / "params.yaml").write_text(yaml.safe_dump(edit, sort_keys=False))
    code, _, err = run_stage(pipeline_ws, "finetune", capsys, key="ft",
                             item={"init_from": "rnn"})
    assert code == 2
    assert re.fullmatch("error: " + message + ".*", one_line_error(err))
    assert not list((pipeline_ws / "models").glob("ft.*"))
    assert not (pipeline_ws / "metrics/train/ft.csv").exists()
