"""The edge of a training stage (`train@<model>`, `finetune@<model>`): read the entry, build
the run plan (every check, once), then (``nproc`` > 1) torchrun, then the loop.

Both stages run this; they differ only in the params section and the init checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from charlab.encoding import Corpus
from charlab.errors import CharlabError
from charlab.params.core import load
from charlab.params.training import section_of, train_models
from charlab.training import distributed
from charlab.training.loop import train
from charlab.training.plan import make_plan, run_paths


def run_entry(args: argparse.Namespace, section: str, init_path: str | None = None) -> None:
    """Train entry ``args.model`` of params section ``section`` with the paths in ``args``
    (``--params``, the encoded corpus, ``--checkpoint``, ``--curve``, ``--run-info``).

    Bad params, a missing GPU, a precision the device lacks or a split too short stop here,
    with the key path, before any work. With ``nproc`` > 1 (and not already under torchrun)
    this process is then replaced by torchrun running the same command line in ``nproc``
    processes, each of which builds its own plan for its rank.
    """
    raw = load(args.params)
    models = train_models(raw)
    if args.model not in models or section_of(raw, args.model) != section:
        have = [m for m in models if section_of(raw, m) == section]
        raise CharlabError(f"{section}.{args.model}: no such entry; have "
                           f"{', '.join(have) or 'none'}")
    cfg = models[args.model]
    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    world = distributed.world_from_env()
    plan = make_plan(cfg, f"{section}.{args.model}",
                     run_paths(args.checkpoint, args.curve, run_info=args.run_info,
                               init=None if init_path is None else Path(init_path)),
                     train_chars=len(corpus.split("train")), world=world)
    if cfg.nproc > 1 and not distributed.under_torchrun():
        threads = plan.threads // cfg.nproc if plan.device.type == "cpu" else 1
        distributed.launch(cfg.nproc, [sys.argv[0], *sys.argv[1:]], threads)
    with distributed.process_group(world, plan.device):
        train(plan, corpus)
