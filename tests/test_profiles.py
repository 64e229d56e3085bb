"""Params profiles: a partial params.yaml applied as one `dvc exp run -S '++key=value'`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from charlab.families.scanrnn import ScanFamily
from charlab.params.core import load
from charlab.params.training import train_models
from charlab.profiles import ProfileError, command, hydra_value, merged, overrides


@pytest.mark.parametrize("value,text", [
    (None, "null"), (True, "true"), (False, "false"), (3, "3"), (0.002, "0.002"),
    (1e-05, "1e-05"), ("lstm", "lstm"), ("auto", "auto"), ("a: b", "'a: b'"),
    ("it's", "'it\\'s'"), ("null", "'null'"), ("3", "'3'"), ([4, 10], "[4,10]"),
    ("First Citizen:\n", "'First Citizen:\n'"),
])
def test_hydra_value(value, text: str) -> None:
    assert hydra_value(value) == text


# strings a profile may set (sample.prime is any text): quotes, backslashes (before a quote,
# at the end, alone, doubled), shell metacharacters, newlines, separators, Hydra's syntax
VERBATIM = ["a\\b", "a\\", "\\", "\\\\", "a\\'b", "it's", "'", "\\'", "''", "a\\\\nb", "\\n",
            "C:\\dir\\", "x;touch PWNED;", "$(touch PWNED)", "`id`|&><*?~#!", "$HOME", "a\nb\r\n",
            "a\tb", "a/../b", "/abs", "a,b", "[a]", "{a: b}", "a=b", "  lead and trail  ", "null",
            "3", "-1", "é☃", "\"q\"", "", "NaN", "True", "a:b", "++x=1", "~a"]


@pytest.mark.parametrize("value", VERBATIM)
def test_a_profile_string_reaches_dvc_verbatim(value: str) -> None:
    """What `dvc exp run -S` hands Hydra reads back as the very string: hydra_value used to
    double every backslash, so a prime `a\\b` became `a\\\\b` in params.yaml (Hydra's quoted
    strings escape only a quote and the backslashes before one)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(f"++sample.prime={hydra_value(value)}")
    assert override.value() == value


@pytest.mark.parametrize("value", [float("inf"), float("nan"), {1, 2}])
def test_values_an_override_cannot_hold(value) -> None:
    with pytest.raises(ProfileError, match="train.x.lr"):
        hydra_value(value, "train.x.lr")


BASE = {"download": {"url": "file:///x.txt"}, "encode": {}, "ngram": {}, "sample": {},
        "evaluate": {}, "analyze": {}, "intervals": {},
        "train": {"rnn": {"lr": 0.004, "batch_size": 128}}}


def write(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def test_overrides_set_keys_and_add_entries(tmp_path: Path) -> None:
    base = write(tmp_path, "params.yaml", BASE)
    prof = write(tmp_path, "p.yaml", {"train": {"rnn": {"batch_size": 256},
                                                "lstm3": {"cell": "lstm", "layers": 3}}})
    assert overrides(prof, base) == ["++train.rnn.batch_size=256", "++train.lstm3.cell=lstm",
                                     "++train.lstm3.layers=3"]
    assert merged(BASE, yaml.safe_load(prof.read_text()))["train"] == {
        "rnn": {"lr": 0.004, "batch_size": 256}, "lstm3": {"cell": "lstm", "layers": 3}}
    assert command(prof, base, ("--queue",))[:5] == ["dvc", "exp", "run", "-S",
                                                     "++train.rnn.batch_size=256"]


@pytest.mark.parametrize("profile,message", [
    ({"train": {"rnn": {"hidden_size": -1}}}, "train.rnn.hidden_size: must be > 0"),
    ({"train": {"rnn": {"hiden_size": 64}}}, "train.rnn.hiden_size: unknown key"),
    ({"sample": {"top_k": 0}}, "sample.top_k"),
])
def test_a_profile_that_would_give_bad_params_fails_first(tmp_path: Path, profile,
                                                          message: str) -> None:
    base = write(tmp_path, "params.yaml", BASE)
    with pytest.raises(ProfileError, match=f"p.yaml would give invalid params: .*{message}"):
        overrides(write(tmp_path, "p.yaml", profile), base)


def test_missing_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="nope.yaml: file not found"):
        overrides(tmp_path / "nope.yaml", write(tmp_path, "params.yaml", BASE))


def test_the_gpu_profile_is_valid_and_trains_the_three_models() -> None:
    prof = yaml.safe_load((REPO / "profiles" / "gpu.yaml").read_text())
    raw = merged(load(REPO / "params.yaml"), prof)
    models = train_models(raw)
    assert {"rnn", "rnn3", "lstm3"} <= set(models)
    lstm = models["lstm3"]
    assert (lstm.cell, lstm.net.layers, lstm.net.hidden_size) == ("lstm", 3, 512)
    assert overrides(REPO / "profiles" / "gpu.yaml", REPO / "params.yaml")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_dvc_applies_exactly_the_validated_params(tmp_path: Path) -> None:
    """Through the real `dvc exp run`: the experiment's params.yaml is the merge that was
    validated, strings with colons, lists and new entries included."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    write(tmp_path, "params.yaml", BASE)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: cp params.yaml out.yaml\n    params: [train, sample]\n"
        "    outs: [out.yaml]\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    profile = {"train": {"rnn": {"batch_size": 256}, "gru": {"cell": "gru", "layers": 2}},
               "sample": {"prime": "ROMEO: it's", "top_k": None}, "ngram": {"orders": [3, 5]}}
    write(tmp_path, "p.yaml", profile)
    proc = subprocess.run(["charlab", "profile", "p.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert got == merged(BASE, profile)
    assert yaml.safe_load((tmp_path / "out.yaml").read_text()) == got


def test_arguments_after_a_double_dash_are_for_profile_only(capsys) -> None:
    from charlab.cli import main as cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["info", "models/rnn.pt", "--", "--queue"])
    assert e.value.code == 2
    assert "arguments after -- are for charlab profile only" in capsys.readouterr().err


@pytest.mark.parametrize("profile,where", [
    ({"sample": {"prime": "${oc.env:SECRET}"}}, "sample.prime"),
    ({"download": {"url": "http://127.0.0.1:9/c.txt?k=${oc.env:SECRET}"}}, "download.url"),
    ({"sample": {"prime": "a ${x} b"}}, "sample.prime"),
    ({"analyze": {"pairs": [["rnn", "${x}"]]}}, r"analyze.pairs\[0\]\[1\]"),
    ({"train": {"rnn": {"cell": "${train.rnn3.cell}"}}}, "train.rnn.cell"),
], ids=["env-secret", "env-in-url", "plain", "in-a-list", "reference"])
def test_an_interpolation_in_a_profile_value_is_refused(tmp_path: Path, profile,
                                                        where: str) -> None:
    base = write(tmp_path, "params.yaml", BASE)
    with pytest.raises(ProfileError, match=rf"^\S*p\.yaml: {where}: holds '\$\{{', which DVC "
                                           r"would resolve .*profile values are data"):
        overrides(write(tmp_path, "p.yaml", profile), base)


def _dvc_workspace(root: Path, env: dict, params: dict, dvc_yaml: str) -> None:
    write(root, "params.yaml", params)
    (root / "dvc.yaml").write_text(dvc_yaml)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_profile_never_copies_an_environment_secret_anywhere(tmp_path: Path,
                                                               http_server) -> None:
    """`charlab profile` with `${oc.env:SECRET}` in a URL and in the prime: refused in one
    line before DVC runs; the secret reaches neither params.yaml, nor the HTTP server (the
    real download stage would fetch the URL), nor any file of the workspace."""
    secret = "s3cr3t-Token-4242"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "SECRET": secret}
    http_server.put("c.txt", b"some corpus text\n" * 50)
    download = "python " + str(REPO / "stages/download.py")
    _dvc_workspace(tmp_path, env, {**BASE, "download": {"url": http_server.url("c.txt"),
                                                        "sha256": None}},
                   f"stages:\n  download:\n    cmd: {download} --out corpus.txt\n"
                   "    params: [download]\n    outs: [corpus.txt]\n"
                   "  s:\n    cmd: mkdir -p samples && cp params.yaml samples/prime.txt\n"
                   "    params: [sample]\n    outs: [samples]\n")
    before = (tmp_path / "params.yaml").read_bytes()
    write(tmp_path, "p.yaml", {"download": {"url": http_server.url("c.txt") +
                                            "?k=${oc.env:SECRET}"},
                               "sample": {"prime": "${oc.env:SECRET}"}})
    proc = subprocess.run(["charlab", "profile", "p.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert re.fullmatch(r"error: p\.yaml: download\.url: holds '\$\{', .*",
                        proc.stderr.strip()), proc.stderr
    assert proc.stdout == ""  # no dvc command was printed, none ran
    assert (tmp_path / "params.yaml").read_bytes() == before
    assert http_server.requests == 0
    assert not (tmp_path / "samples").exists()
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []


def test_a_nul_in_a_profile_value_is_one_line(tmp_path: Path, capsys) -> None:
    """A NUL cannot be passed to `dvc exp run -S` (`ValueError: embedded null byte`, a
    traceback from `charlab profile`): one line, dvc never runs."""
    from charlab.cli import main as cli_main

    base = write(tmp_path, "params.yaml", BASE)
    prof = write(tmp_path, "p.yaml", {"sample": {"prime": "a\x00b"}})
    with pytest.raises(SystemExit) as e:
        cli_main(["profile", str(prof), "--params", str(base)])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"error: {prof}: sample.prime: holds a NUL character, which no command "
                   "line can carry (dvc exp run -S); set it in params.yaml instead\n")


def test_a_duplicate_key_in_a_profile_is_refused(tmp_path: Path, capsys) -> None:
    """`charlab profile` kept the last of two values silently; now one line, dvc never runs."""
    from charlab.cli import main as cli_main

    write(tmp_path, "params.yaml", BASE)
    (tmp_path / "p.yaml").write_text("train:\n  rnn:\n    batch_size: 64\n    batch_size: 256\n")
    with pytest.raises(SystemExit) as e:
        cli_main(["profile", str(tmp_path / "p.yaml"), "--params", str(tmp_path / "params.yaml"),
                  "--dry-run"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert re.fullmatch(r"error: profile \S*p\.yaml: not valid YAML: found duplicate key "
                        r"train\.rnn\.batch_size \(first at line 3; DVC refuses such a file "
                        r"too\) in \"\S*p\.yaml\", line 4, column 5", err.strip()), err


def test_the_cpu_best_profile_adds_one_valid_entry_to_the_defaults() -> None:
    """profiles/cpu-best.yaml: the CPU comparison's best configuration (bench/RESULTS.md) as
    one new train: entry beside the default models, complete and valid, one command away."""
    base = load(REPO / "params.yaml")
    prof = yaml.safe_load((REPO / "profiles" / "cpu-best.yaml").read_text())
    assert set(prof) == {"train"}
    (name,) = set(prof["train"]) - set(base["train"])
    assert set(prof["train"]) == {name}
    entry = train_models(merged(base, prof))[name]
    assert (entry.device, entry.precision, entry.nproc) == ("auto", "auto", 1)
    sets = overrides(REPO / "profiles" / "cpu-best.yaml", REPO / "params.yaml")
    assert f"++train.{name}.cell={entry.cell}" in sets
    assert all(s.startswith(f"++train.{name}.") for s in sets)


def test_the_gpu_profile_trains_the_new_recurrent_families_at_gpu_scale() -> None:
    prof = yaml.safe_load((REPO / "profiles" / "gpu.yaml").read_text())
    models = train_models(merged(load(REPO / "params.yaml"), prof))
    scan = {m: e for m, e in models.items() if isinstance(e.family, ScanFamily)}
    assert scan
    for entry in scan.values():
        assert (entry.batch_size, entry.seq_length) == (256, 128)
        assert entry.net.hidden_size > 192  # beyond the CPU comparison's size
