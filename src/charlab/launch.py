"""The edge of a training stage (`train@<model>`, `finetune@<model>`): every check that
needs no training first, then (``nproc`` > 1) torchrun, then the loop.

Both stages run this; they differ only in the params section and the init checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from charlab import distributed, params
from charlab.encoding import Corpus
from charlab.errors import CharlabError
from charlab.runtime import DeviceError, cpu_threads, hardware, plan_precision, resolve_device
from charlab.train import train


def run_entry(args: argparse.Namespace, section: str, init_path: str | None = None) -> None:
    """Train entry ``args.model`` of params section ``section`` with the paths in ``args``
    (``--params``, the encoded corpus, ``--checkpoint``, ``--curve``, ``--run-info``).

    Bad params, a missing GPU or a precision the device lacks stop here, with the key path,
    before any work. With ``nproc`` > 1 (and not already under torchrun) this process is
    replaced by torchrun running the same command line in ``nproc`` processes.
    """
    raw = params.load(args.params)
    models = params.train_models(raw)
    if args.model not in models or params.section_of(raw, args.model) != section:
        have = [m for m in models if params.section_of(raw, m) == section]
        raise CharlabError(f"{section}.{args.model}: no such entry; have "
                           f"{', '.join(have) or 'none'}")
    cfg = models[args.model]
    key = f"{section}.{args.model}"
    try:  # a missing GPU is a params problem
        device = resolve_device(cfg.device)
    except DeviceError as e:
        raise params.ParamsError(f"{key}.device: {e}") from None
    try:  # and so is a precision this device lacks
        plan_precision(cfg.precision, hardware(device))
    except DeviceError as e:
        raise params.ParamsError(f"{key}.precision: {e}") from None
    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    world = distributed.world_from_env()

    if cfg.nproc > 1 and not distributed.under_torchrun():
        try:
            distributed.check_devices(cfg.nproc, device)
        except distributed.DistributedError as e:
            raise params.ParamsError(f"{key}.nproc: {e}") from None
        # the ranks' own checks would fail the same way, once per rank: fail once, here
        params.check_train_split(cfg, args.model, len(corpus.split("train")))
        threads = cpu_threads(cfg.threads) // cfg.nproc if device.type == "cpu" else 1
        distributed.launch(cfg.nproc, [sys.argv[0], *sys.argv[1:]], threads)

    with distributed.process_group(world, distributed.device_for(world, device)):
        train(cfg, corpus, checkpoint_path=args.checkpoint, curve_path=args.curve,
              name=args.model, world=world, run_info_path=args.run_info,
              init_path=init_path, section=section)
