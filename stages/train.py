"""Stage `train@<model>`: train one entry of `train:` into a checkpoint and a loss curve.

With `train.<model>.nproc` > 1 the stage checks everything, then replaces itself by torchrun
running this same command in `nproc` data-parallel processes. Started by torchrun (by the
stage, or by hand on several nodes) it joins the other ranks.
"""

from __future__ import annotations

import sys

from charlab import distributed, params
from charlab.encoding import Corpus
from charlab.errors import CharlabError, run_main
from charlab.runtime import DeviceError, cpu_threads, resolve_device
from charlab.train import train


def main() -> None:
    args = params.stage_parser(__doc__, "model", "checkpoint", "curve", "run-info",
                               corpus=True).parse_args()

    models = params.train_models(params.load(args.params))
    if args.model not in models:
        raise CharlabError(f"train.{args.model}: no such entry; have {', '.join(models)}")
    cfg = models[args.model]
    try:  # before any work: a missing GPU is a params problem
        device = resolve_device(cfg.device)
    except DeviceError as e:
        raise params.ParamsError(f"train.{args.model}.device: {e}") from None
    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    world = distributed.world_from_env()

    if cfg.nproc > 1 and not distributed.under_torchrun():
        try:
            distributed.check_devices(cfg.nproc, device)
        except distributed.DistributedError as e:
            raise params.ParamsError(f"train.{args.model}.nproc: {e}") from None
        # the ranks' own checks would fail the same way, once per rank: fail once, here
        params.check_train_split(cfg, args.model, len(corpus.split("train")))
        threads = cpu_threads(cfg.threads) // cfg.nproc if device.type == "cpu" else 1
        distributed.launch(cfg.nproc, [sys.argv[0], *sys.argv[1:]], threads)

    with distributed.process_group(world, distributed.device_for(world, device)):
        train(cfg, corpus, checkpoint_path=args.checkpoint, curve_path=args.curve,
              name=args.model, world=world, run_info_path=args.run_info)


if __name__ == "__main__":
    run_main(main)
