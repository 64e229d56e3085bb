"""The `charlab` command on bad arguments, damaged files, pipes and narrow output encodings:
one `error:` line and exit code 2, or a quiet stop when the reader goes away (issue 12)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_text
from helpers import PY, one_line_error

from charlab.cli import main as cli_main
from charlab.encoding import Vocab
from charlab.ngram import NGramLM

# a corpus with one character beyond ASCII, so that an ascii stdout cannot print every sample
TEXT = make_text(4000, seed=4) + "café\n"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A vocabulary and an order-2 n-gram model where the CLI looks by default."""
    vocab = Vocab.from_text(TEXT)
    (tmp_path / "data/encoded").mkdir(parents=True)
    vocab.save(tmp_path / "data/encoded/vocab.json")
    (tmp_path / "models/ngram").mkdir(parents=True)
    NGramLM.fit(vocab.encode(TEXT), vocab.size, 2).save(tmp_path / "models/ngram/ngram2.npz",
                                                        vocab)
    return tmp_path


def cli(ws: Path, capsys, monkeypatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.chdir(ws)
    try:
        cli_main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(ws: Path, *argv: str, env: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "charlab.cli", *argv], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("argv,message", [
    (["--temperature", "nan"], r"^error: --temperature: must be a finite number >= 0 \(0 = "
                               r"greedy\), got nan$"),
    (["--temperature", "-0.5"], r"^error: --temperature: must be a finite number >= 0 \(0 = "
                                r"greedy\), got -0\.5$"),
    (["--temperature", "inf"], r"^error: --temperature: must be a finite number >= 0 \(0 = "
                               r"greedy\), got inf$"),
    (["--seed", "-1"], r"^error: --seed: must be >= 0 and < 2\*\*63, got -1$"),
    (["--length", "-1"], r"^error: --length: must be >= 0, got -1$"),
    (["--top-k", "0"], r"^error: --top-k: must be >= 1, got 0$"),
], ids=["temperature-nan", "temperature-negative", "temperature-inf", "seed-negative",
        "length-negative", "top-k-zero"])
def test_sample_arguments_out_of_range_are_one_line(ws, capsys, monkeypatch, argv, message):
    code, out, err = cli(ws, capsys, monkeypatch, "sample", "ngram2", "--length", "20", *argv)
    assert code == 2 and out == ""
    assert re.fullmatch(message, one_line_error(err))


@pytest.mark.parametrize("data,message", [
    (b'{"chars": ["a", ', r"not JSON \(Expecting value at line 1, column 17\)"),
    (b'{"tokens": {"a": 0}}', r"expected an object .*, got keys 'tokens'"),
    (b'{"chars": ["b", "a"]}', r"chars\[1\]: 'a' after 'b'"),
], ids=["cut", "foreign", "unsorted"])
@pytest.mark.parametrize("command", [
    ["sample", "ngram2", "--length", "5"], ["score", "ngram2", "text.txt"],
    ["ngram", "show", "ab", "--order", "2"],
], ids=["sample", "score", "ngram-show"])
def test_damaged_or_foreign_vocab_is_one_line_in_every_command(ws, capsys, monkeypatch, command,
                                                               data, message):
    (ws / "text.txt").write_text(TEXT[:200], encoding="utf-8")
    (ws / "data/encoded/vocab.json").write_bytes(data)
    code, out, err = cli(ws, capsys, monkeypatch, *command)
    assert code == 2 and out == ""
    assert re.fullmatch(r"error: data/encoded/vocab\.json: not a charlab vocabulary: .*"
                        + message + ".*", one_line_error(err))


def test_score_and_prime_file_drop_a_leading_bom(ws, capsys, monkeypatch):
    body = TEXT[:500]
    (ws / "plain.txt").write_text(body, encoding="utf-8")
    (ws / "bom.txt").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    code, plain, err = cli(ws, capsys, monkeypatch, "score", "ngram2", "plain.txt")
    assert code == 0, err
    code, bom, err = cli(ws, capsys, monkeypatch, "score", "ngram2", "bom.txt")
    assert code == 0, err
    assert bom.replace("bom.txt", "plain.txt") == plain
    (ws / "prime.txt").write_bytes(b"\xef\xbb\xbfKING:")
    code, out, err = cli(ws, capsys, monkeypatch, "sample", "ngram2", "--prime-file",
                         "prime.txt", "--length", "10")
    assert code == 0, err
    assert out.startswith("KING:")


def test_sample_into_a_closed_pipe_stops_quietly(ws):
    """`charlab sample ... | head -c 20`: the reader leaves; no traceback, exit 128 + SIGPIPE."""
    proc = cli_process(ws, "sample", "ngram2", "--length", "2000000", "--seed", "3")
    head = proc.stdout.read(20)
    proc.stdout.close()  # what `head` does once it has its bytes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert len(head) == 20
    assert err == ""


def test_sample_through_head_in_a_shell(ws):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(f"'{sys.executable}' -m charlab.cli sample ngram2 --length 1000000 "
                          "| head -c 50", shell=True, cwd=ws, env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0
    assert len(proc.stdout) == 50
    assert proc.stderr == b""


@pytest.mark.parametrize("command", [
    ["sample", "ngram2", "--prime", "caf", "--length", "20"],
    ["ngram", "show", "caf", "--order", "2"],
], ids=["sample", "ngram-show"])
def test_an_output_encoding_that_cannot_hold_the_text_is_one_line(ws, command):
    proc = cli_process(ws, *command, env={"PYTHONIOENCODING": "ascii"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    # stderr escapes what it cannot hold ('\xe9'); the code point is readable anywhere
    assert re.fullmatch(r"error: stdout's encoding \(ascii\) cannot print U\+00E9 '\\xe9'; set "
                        r"PYTHONIOENCODING=utf-8 \(or a UTF-8 locale\), or "
                        r"PYTHONIOENCODING=ascii:backslashreplace to print such characters as "
                        r"escapes", one_line_error(err.decode()))
    if command[0] == "sample":
        assert out == b""  # checked before any character is written


def test_an_output_encoding_with_escapes_prints(ws):
    proc = cli_process(ws, "sample", "ngram2", "--prime", "caf", "--length", "300",
                       env={"PYTHONIOENCODING": "ascii:backslashreplace"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith(b"caf")


# --- no GPU, and characters outside the vocabulary, on the command line

OOV = "Ω☃"  # never in make_text's corpora


def test_cli_device_cuda_without_gpu(pipeline_ws: Path, capsys, monkeypatch, no_gpu) -> None:
    monkeypatch.chdir(pipeline_ws)
    with pytest.raises(SystemExit) as e:
        cli_main(["sample", "rnn", "--device", "cuda", "--length", "3"])
    assert e.value.code == 2
    assert "CUDA is not available" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("argv,message", [
    (["sample", "ngram2", "--prime", f"KING{OOV}"],
     r"^error: --prime: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["sample", "rnn", "--prime", "☃"],
     r"^error: --prime: 1 character\(s\) not in the vocabulary of \d+: '☃'$"),
    (["sample", "rnn", "--prime-file", "oov.txt"],
     r"^error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["score", "ngram2", "oov.txt"],
     r"^error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["score", "rnn", "oov.txt"],
     r"^error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: 'Ω', '☃'$"),
    (["ngram", "show", "kΩ", "--order", "2"],
     r"^error: history: 1 character\(s\) not in the vocabulary of \d+: 'Ω'$"),
], ids=["sample-ngram-prime", "sample-rnn-prime", "sample-prime-file", "score-ngram",
        "score-rnn", "ngram-show"])
def test_out_of_vocabulary_characters_are_named(pipeline_ws: Path, capsys, monkeypatch,
                                                argv: list[str], message: str) -> None:
    (pipeline_ws / "oov.txt").write_text(f"KING:\nthe king{OOV[0]} shall{OOV[1]} speak\n",
                                         encoding="utf-8")
    monkeypatch.chdir(pipeline_ws)
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert re.fullmatch(message, one_line_error(err))


def test_out_of_vocabulary_in_a_real_cli_process(pipeline_ws: Path) -> None:
    (pipeline_ws / "oov.txt").write_text(f"the king{OOV}\n", encoding="utf-8")
    charlab = Path(PY).parent / "charlab"
    proc = subprocess.run([str(charlab), "score", "ngram2", "oov.txt"], cwd=pipeline_ws,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(r"error: oov\.txt: 2 character\(s\) not in the vocabulary of \d+: "
                        r"'Ω', '☃'", one_line_error(proc.stderr))


@pytest.mark.parametrize("argv,message", [
    (["score", "models/rnn.pt.state", "t.txt"],
     r"models/rnn\.pt\.state: a training resume state \(what an interrupted run continues "
     r"from\), not a model; use the checkpoint models/rnn\.pt"),
    (["sample", "rnn.pt.state"], r"rnn\.pt\.state: a training resume state .*; use the "
                                 r"checkpoint rnn\.pt"),
    (["score", "models/nope", "t.txt"],
     r"models/nope: no such model file \(has the pipeline run\? `dvc repro`\)"),
    (["score", "sub/best", "t.txt"], r"sub/best: unknown model file type \(expected \.npz or "
                                     r"\.pt\)"),
    (["score", "best", "t.txt"], r"best: unknown model file type \(expected \.npz or \.pt\)"),
    (["score", "/dev/zero", "t.txt"], r"/dev/zero: is a character device, not a model file"),
    (["score", "models", "t.txt"], r"models: is a directory, not a model file"),
    (["info", "/dev/zero"], r"/dev/zero: is a character device, not a checkpoint file"),
    (["info", "models"], r"models: is a directory, not a checkpoint file"),
], ids=["score-state", "sample-state", "missing-path", "path-without-suffix",
        "existing-file-without-suffix", "score-dev-zero", "score-directory", "info-dev-zero",
        "info-directory"])
def test_a_model_argument_is_named_as_what_it_is(pipeline_ws: Path, capsys, monkeypatch,
                                                 argv: list[str], message: str) -> None:
    """Issue 20: `charlab score models/rnn.pt.state f` said "models/models/rnn.pt.state.pt: no
    such model file", `charlab info /dev/zero` "no such checkpoint file". A name with a path
    separator, or a file that exists where no model of that name does, is a path."""
    (pipeline_ws / "t.txt").write_text("KING:\nthe king shall speak\n", encoding="utf-8")
    (pipeline_ws / "sub").mkdir()
    for where in ("sub/best", "best"):
        (pipeline_ws / where).write_bytes((pipeline_ws / "models/rnn.pt").read_bytes())
    code, out, err = cli(pipeline_ws, capsys, monkeypatch, *argv)
    assert code == 2 and out == ""
    assert re.fullmatch("error: " + message, one_line_error(err))


def test_a_model_name_wins_over_a_file_of_that_name(pipeline_ws: Path, capsys,
                                                    monkeypatch) -> None:
    (pipeline_ws / "t.txt").write_text("KING:\nthe king shall speak\n", encoding="utf-8")
    (pipeline_ws / "rnn").mkdir()  # e.g. a directory of notes called rnn
    code, out, err = cli(pipeline_ws, capsys, monkeypatch, "score", "rnn", "t.txt")
    assert code == 0, err
    assert "model       rnn" in out
