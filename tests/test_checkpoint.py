"""Checkpoint files: the checksum written at save and checked by every reader (issue 12);
hostile (pickled code), foreign, damaged and mismatched checkpoints."""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_text, tiny_params
from helpers import ENCODED, one_line_error, train_entry, write_malicious

from charlab import checkpoint as ckpt
from charlab.checkpoint import CheckpointError, checksum, load_checkpoint
from charlab.checkpoint import save as save_checkpoint
from charlab.cli import main as cli_main
from charlab.encoding import Corpus, Vocab, encode_corpus
from charlab.models import load_model

# conftest's TINY, two layers of 32: a checkpoint with records long enough to damage
CKPT = {"layers": 2, "hidden_size": 32, "batch_size": 4, "seq_length": 16}
DAMAGE = 2000


def train_rnn(ws: Path, **kw):
    corpus = Corpus.load(*(ws / p for p in ENCODED))
    return train_entry(tiny_params("train.rnn", **{**CKPT, **kw}), corpus,
                 checkpoint_path=ws / "models/rnn.pt", curve_path=ws / "metrics/train/rnn.csv",
                 name="rnn", progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace laid out as the pipeline's: encoded corpus, a checkpoint from training."""
    ws = tmp_path_factory.mktemp("ckpt")
    (ws / "corpus.txt").write_text(make_text(20_000, seed=5), encoding="utf-8")
    for d in ("data/encoded", "models", "metrics/train"):
        (ws / d).mkdir(parents=True)
    encode_corpus(ws / "corpus.txt", *(ws / p for p in ENCODED), val_fraction=0.1,
                  test_fraction=0.1)
    train_rnn(ws)
    (ws / "some.txt").write_text(make_text(500, seed=6), encoding="utf-8")
    return ws


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(built, dest)
    return dest


def records(path: Path) -> dict[str, tuple[int, int]]:
    """Zip record name -> (first, end) byte offsets of its data in the file."""
    raw = path.read_bytes()
    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            off = info.header_offset
            name_len, extra_len = struct.unpack("<HH", raw[off + 26:off + 30])
            first = off + 30 + name_len + extra_len
            out[info.filename] = (first, first + info.file_size)
    return out


def overwrite(path: Path, start: int, n: int = DAMAGE) -> None:
    raw = bytearray(path.read_bytes())
    new = np.random.default_rng(start).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert new != bytes(raw[start:start + n])
    raw[start:start + n] = new
    path.write_bytes(bytes(raw))


def damage(path: Path, where: str) -> None:
    recs = records(path)
    size = path.stat().st_size
    if where == "tensor":  # 2,000 bytes in the middle of the file, inside one tensor
        start = size // 2 - DAMAGE // 2
        inside = [n for n, (a, b) in recs.items()
                  if "/data/" in n and a <= start and start + DAMAGE <= b]
        assert inside, f"the middle of {path} is not inside one tensor: {recs}"
        overwrite(path, start)
        torch.load(path, weights_only=True)  # torch itself notices nothing
    elif where == "value":  # a setting in data.pkl, still a valid pickle: a val loss
        raw = path.read_bytes()
        obj = torch.load(path, weights_only=True)  # a checkpoint's val loss, or the last row's
        val = obj["val_loss"] if "val_loss" in obj else obj["curve"][-1]["val_loss"]
        old = b"G" + struct.pack(">d", val)  # pickle's BINFLOAT opcode and its 8 bytes
        a, b = recs[next(n for n in recs if n.endswith("data.pkl"))]
        at = raw.index(old, a, b) + 1  # the first (the state has it in its curve too)
        path.write_bytes(raw[:at] + struct.pack(">d", 0.5) + raw[at + 8:])
        loaded = torch.load(path, weights_only=True)  # torch loads it without a word
        assert 0.5 in (loaded.get("val_loss"),
                       *(r.get("val_loss") for r in loaded.get("curve", [])))
    elif where == "pickle":  # 2,000 bytes over data.pkl and the records after it
        a, _ = recs[next(n for n in recs if n.endswith("data.pkl"))]
        overwrite(path, a + 40)
    else:  # the zip's central directory and end record
        overwrite(path, size - DAMAGE)


WHERE = ["tensor", "value", "pickle", "directory"]
MESSAGE = {"tensor": "damaged checkpoint: its checksum does not match",
           "value": "damaged checkpoint: its checksum does not match",
           "pickle": "not a readable checkpoint", "directory": "not a readable checkpoint"}


@pytest.mark.parametrize("where", WHERE)
def test_damaged_checkpoint_is_refused_by_every_reader(ws: Path, capsys, monkeypatch,
                                                       where: str) -> None:
    path = ws / "models/rnn.pt"
    load_checkpoint(path)  # whole, it loads
    damage(path, where)
    expected = re.escape(f"{path}: {MESSAGE[where]}")
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=expected):
        load_model(path, Vocab.load(ws / ENCODED[0]))
    monkeypatch.chdir(ws)
    for argv in (["info", "models/rnn.pt"], ["sample", "rnn", "--length", "5"],
                 ["score", "rnn", "some.txt"]):
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
        out, err = capsys.readouterr()
        assert e.value.code == 2 and out == "", argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: models/rnn.pt: "), err
        assert MESSAGE[where] in lines[0], err


def test_damaged_checkpoint_message(ws: Path) -> None:
    path = ws / "models/rnn.pt"
    damage(path, "tensor")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == (
        f"{path}: damaged checkpoint: its checksum does not match its contents (tensors or "
        "settings changed since training wrote it); restore it (`dvc checkout`) or retrain "
        "it (`dvc repro`)")


@pytest.mark.parametrize("where", ["tensor", "value"])
def test_damaged_resume_state_is_refused(ws: Path, capsys, where: str) -> None:
    state = ws / "models/rnn.pt.state"
    ckpt.read(state, "cpu")  # training left a whole one
    damage(state, where)
    with pytest.raises(CheckpointError, match=re.escape(f"{state}: damaged checkpoint")):
        ckpt.read(state, "cpu")
    with pytest.raises(CheckpointError, match=re.escape(f"{state}: damaged checkpoint")):
        train_rnn(ws, resume=True, max_steps=6)
    capsys.readouterr()
    # resume: false: the damaged state is set aside and training starts from scratch
    res = train_rnn(ws, max_steps=6)
    assert res.resumed_from is None and res.steps == 6
    assert "ignoring unusable resume state" in capsys.readouterr().out


def test_checksum_covers_the_config(ws: Path) -> None:
    path = ws / "models/rnn.pt"
    obj = torch.load(path, weights_only=True)
    torch.save({**obj, "model_config": {**obj["model_config"], "hidden_size": 16}}, path)
    with pytest.raises(CheckpointError, match="damaged checkpoint: its checksum"):
        load_checkpoint(path)
    # resealed, the same edit reaches the config check
    obj["model_config"]["heads"] = 4
    ckpt.save(obj, path)
    with pytest.raises(CheckpointError, match="damaged charlab checkpoint: unknown model"):
        load_checkpoint(path)


def test_a_file_without_checksum_asks_for_a_retrain(ws: Path) -> None:
    path = ws / "models/rnn.pt"
    obj = torch.load(path, weights_only=True)
    del obj["checksum"]
    torch.save({**obj, "version": 1}, path)  # what charlab wrote before checksums
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == (f"{path}: checkpoint format version 1; this charlab reads "
                            "version 2; rerun `dvc repro` to retrain it")
    torch.save(obj, path)  # version 2 without its checksum
    with pytest.raises(CheckpointError, match="damaged checkpoint: its checksum"):
        load_checkpoint(path)


def test_checksum_reference() -> None:
    """The exact bytes hashed, derived by hand for a small dict."""
    obj = {"a": torch.tensor([1.0, -2.0]), "b": [1, None], "checksum": "ignored"}
    data = struct.pack("<2f", 1.0, -2.0)
    fed = (b"D2:" + b"S7:str:'a'" + b"Ttorch.float32(2,):8:" + data
           + b"S7:str:'b'" + b"L2:" + b"S5:int:1" + b"S13:NoneType:None")
    assert checksum(obj) == hashlib.sha256(fed).hexdigest()
    # a tuple and a list hash alike (torch may load one as the other); dtype and shape count
    assert checksum({"b": (1, None)}) == checksum({"b": [1, None]})
    assert checksum({"a": torch.zeros(2)}) != checksum({"a": torch.zeros(2, 1)})
    assert checksum({"a": torch.zeros(2)}) != checksum({"a": torch.zeros(2, dtype=torch.int32)})
    assert checksum({"a": torch.zeros(0)}) != checksum({"a": torch.zeros(0, 1)})
    assert checksum({"x": 1}) != checksum({"x": 1.0}) != checksum({"x": True})


# --- hostile and mismatched checkpoints

def test_the_payload_is_live(tmp_path: Path) -> None:
    """The check below means something: unpickling this file does run the code."""
    write_malicious(tmp_path / "evil.pt", tmp_path / "marker", "pickle")
    pickle.loads((tmp_path / "evil.pt").read_bytes())
    assert (tmp_path / "marker").read_text() == "pwned"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_loading_a_malicious_checkpoint_never_runs_its_code(pipeline_ws: Path, tmp_path: Path,
                                                            capsys, monkeypatch,
                                                            kind: str) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    write_malicious(evil, marker, kind)
    vocab = Vocab.load(pipeline_ws / ENCODED[0])
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a readable checkpoint"):
        load_model(evil, vocab)
    monkeypatch.chdir(pipeline_ws)
    for argv in (["info", str(evil)], ["sample", str(evil), "--length", "2"]):
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
        assert e.value.code == 2
        assert "not a readable checkpoint" in one_line_error(capsys.readouterr().err)
    # planted as the resume state of a training run: ignored, and training starts afresh
    shutil.copy(evil, pipeline_ws / "models/rnn.pt.state")
    corpus = Corpus.load(*(pipeline_ws / p for p in ENCODED))
    res = train_entry(tiny_params(), corpus, checkpoint_path=pipeline_ws / "models/rnn.pt",
                curve_path=pipeline_ws / "metrics/train/rnn.csv", name="rnn", progress=False)
    assert res.resumed_from is None
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_refusing_a_malicious_checkpoint_gives_no_unsafe_advice(tmp_path: Path,
                                                                kind: str) -> None:
    write_malicious(tmp_path / "evil.pt", tmp_path / "marker", kind)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(e.value)
    assert "weights_only" not in message and "trust" not in message, message
    assert "\x1b" not in message, message  # no terminal escapes in a one-line error


@pytest.mark.parametrize("damage,message", [
    ("other_vocab", r"models/rnn\.pt: trained on a different vocabulary \(\d+ chars\) than this "
                    r"corpus \(\d+ chars; only in the corpus: 'Ω'; only in the model: 'z'\); "
                    r"retrain it"),
    ("truncated", r"models/rnn\.pt: not a readable checkpoint \(truncated, corrupted, or not "
                  r"written by charlab\)"),
    ("zeros", r"models/rnn\.pt: not a readable checkpoint"),
    ("foreign", r"models/rnn\.pt: a torch file, but not a charlab checkpoint$"),
    ("ngram_as_pt", r"models/rnn\.pt: not a readable checkpoint"),
    ("version", r"models/rnn\.pt: checkpoint format version 99; this charlab reads version 2$"),
    ("bad_config", r"models/rnn\.pt: damaged charlab checkpoint: unknown model config key"),
], ids=["other-vocab", "truncated", "zeros", "foreign-torch", "ngram-as-pt", "version",
        "bad-config"])
def test_mismatched_or_damaged_checkpoint_in_the_cli(pipeline_ws: Path, capsys, monkeypatch,
                                                     damage: str, message: str) -> None:
    ckpt = pipeline_ws / "models/rnn.pt"
    good = ckpt.read_bytes()
    obj = torch.load(ckpt, weights_only=True)
    if damage == "other_vocab":  # same size, one character swapped
        chars = sorted((set(obj["vocab"]) - {"z"}) | {"Ω"})
        Vocab(tuple(chars)).save(pipeline_ws / ENCODED[0])
        if "z" not in obj["vocab"]:
            pytest.skip("corpus has no 'z'")
    elif damage == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
    elif damage == "zeros":
        ckpt.write_bytes(bytes(len(good)))
    elif damage == "foreign":
        torch.save({"state_dict": obj["model"]}, ckpt)
    elif damage == "ngram_as_pt":
        shutil.copy(pipeline_ws / "models/ngram/ngram2.npz", ckpt)
    elif damage == "version":
        torch.save({**obj, "version": 99}, ckpt)
    else:
        # resealed with its checksum, so the damage reaches the config check
        save_checkpoint({**obj, "model_config": {**obj["model_config"], "heads": 4}}, ckpt)
    monkeypatch.chdir(pipeline_ws)
    with pytest.raises(SystemExit) as e:
        cli_main(["sample", "rnn", "--length", "5"])
    assert e.value.code == 2
    assert re.search(message, one_line_error(capsys.readouterr().err))
