"""Every family of the registry through everything an entry gets: train -> sample -> evaluate
-> analyze -> report with a fine-tune of it, and a fine-tune interrupted and resumed bit for
bit. Parametrized over :data:`charlab.families.FAMILIES`: a family is tested the moment it
is registered (and must bring a tiny entry here)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ENCODED, one_line_error, run_stage, train_entry

from charlab.checkpoint import load_checkpoint
from charlab.cli import main as cli_main
from charlab.encoding import Corpus
from charlab.families import FAMILIES, by_cell
from charlab.families.base import Family
from charlab.params.training import parse_entry
from charlab.training.guard import TrainingInterrupted

# the keys of a tiny network of each family (its cell names the family)
TINY_NETS = {
    "recurrent": {"cell": "lstm", "layers": 2, "hidden_size": 8, "seq_length": 8},
    "gpt": {"cell": "gpt", "layers": 1, "heads": 2, "hidden_size": 8, "context": 8},
    "mingru": {"cell": "mingru", "layers": 2, "hidden_size": 8, "expansion": 1.5,
               "seq_length": 8},
    "minlstm": {"cell": "minlstm", "layers": 2, "hidden_size": 8, "seq_length": 8},
    "lru": {"cell": "lru", "layers": 2, "hidden_size": 8, "conv_kernel": 3, "seq_length": 8},
}
TINY_RUN = {"dropout": 0.1, "batch_size": 2, "lr": 0.01, "max_steps": 4, "eval_every": 2,
            "seed": 1, "device": "cpu", "threads": 1, "warmup_steps": 0}


def tiny_entry(family: Family, **kw) -> dict:
    return {**TINY_RUN, **TINY_NETS[family.name], **kw}


def test_every_registered_family_has_a_tiny_entry_here() -> None:
    assert set(TINY_NETS) == {f.name for f in FAMILIES}
    for family in FAMILIES:
        assert by_cell(TINY_NETS[family.name]["cell"]) is family


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_a_family_goes_through_every_stage(family: Family, pipeline_ws: Path, capsys) -> None:
    ws = pipeline_ws
    p = yaml.safe_load((ws / "params.yaml").read_text())
    p["train"] = {"m": tiny_entry(family)}
    p["finetune"] = {"ft": tiny_entry(family, init_from="m", max_steps=2, lr=0.005)}
    p["intervals"]["block"] = 20  # of 299 test characters
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for stage, key in [("validate", ""), ("train", "m"), ("finetune", "ft"), ("sample", ""),
                       ("evaluate", ""), ("analyze", ""), ("intervals", ""), ("report", "")]:
        code, _, err = run_stage(ws, stage, capsys, key=key, item={"init_from": "m"})
        assert code == 0 and "Traceback" not in err, (stage, err)

    run_info = json.loads((ws / "metrics/runs/m.json").read_text())
    cfg = parse_entry(p["train"]["m"], "train.m")
    assert run_info["chars_per_step"] == cfg.batch_size * cfg.seq_length  # a GPT's: context
    assert run_info["model_config"] == cfg.network_config(run_info["model_config"]
                                                          ["vocab_size"]).to_dict()
    metrics = json.loads((ws / "metrics/metrics.json").read_text())
    assert {"ngram2", "m", "ft"} <= set(metrics)
    for name in ("m", "ft"):
        assert (ws / f"samples/{name}.txt").read_text(encoding="utf-8")
    _, _, info = load_checkpoint(ws / "models/ft.pt")
    assert info["init"]["from"] == "models/m.pt" and info["init"]["new"] == []
    summary = json.loads((ws / "metrics/analysis/summary.json").read_text())
    report = (ws / "metrics/report.md").read_text()
    assert "| m |" in report and "| ft |" in report
    if family.no_units is None:  # the family's units are read, for both models
        assert [c["model"] for c in summary["cells"]] == ["m", "ft"]
    else:  # skipped, and the report says why in one line; `charlab cells` says so too
        assert [s["model"] for s in summary["skipped"]] == ["m", "ft"]
        assert f"Units not read: m ({family.name}: {family.no_units}); ft (" in report
        with pytest.raises(SystemExit) as e:
            cli_main(["cells", str(ws / "models/m.pt"), str(ws / "data/raw/corpus.txt"),
                      "--vocab", str(ws / "data/encoded/vocab.json")])
        assert e.value.code == 2
        assert one_line_error(capsys.readouterr().err) == (
            f"error: {ws / 'models/m.pt'}: no units to read ({family.name}: "
            f"{family.no_units})")


def _interrupt_at(step: int):
    def hook(k: int, model: torch.nn.Module) -> None:
        if k == step:
            os.kill(os.getpid(), signal.SIGINT)
    return hook


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_a_fine_tune_of_every_family_resumes_bit_for_bit(family: Family, pipeline_built: Path,
                                                         tmp_path: Path) -> None:
    corpus = Corpus.load(*(pipeline_built / p for p in ENCODED))
    base = parse_entry(tiny_entry(family), "train.base")
    train_entry(base, corpus, tmp_path / "base.pt", tmp_path / "base.csv", name="base")
    ft = parse_entry(tiny_entry(family, init_from="base", max_steps=8, eval_every=4),
                     "finetune.ft")

    def run(d: str, **kw):
        (tmp_path / d).mkdir(exist_ok=True)
        return train_entry(ft, corpus, tmp_path / d / "ft.pt", tmp_path / d / "ft.csv",
                           name="ft", section="finetune", init_path=tmp_path / "base.pt", **kw)

    run("straight")
    with pytest.raises(TrainingInterrupted):
        run("resumed", on_step=_interrupt_at(5))
    assert run("resumed").resumed_from == 5
    for name in ("ft.pt", "ft.pt.state"):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)["model"]
        b = torch.load(tmp_path / "resumed" / name, weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    def losses(d: str) -> list[list[str]]:  # step, train_loss, val_loss (not the timings)
        return [r.split(",")[:3] for r in (tmp_path / d / "ft.csv").read_text().splitlines()]
    assert losses("straight") == losses("resumed")
