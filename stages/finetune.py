"""Stage `finetune@<model>`: train an entry of `finetune:` starting from the weights of the
checkpoint its `init_from` names (`--init`, a dependency of the stage, so replacing it reruns
the fine-tune). Otherwise as `train@<model>`: the same trainer, files and torchrun launch.

DVC gives every stage of a `foreach` the same dependencies, so a fine-tune, which depends on
one more file, is its own stage over its own params section.
"""

from __future__ import annotations

import sys

from charlab import distributed, params
from charlab.encoding import Corpus
from charlab.errors import CharlabError, run_main
from charlab.runtime import DeviceError, cpu_threads, resolve_device
from charlab.train import train


def main() -> None:
    args = params.stage_parser(__doc__, "model", "init", "checkpoint", "curve",
                               corpus=True).parse_args()

    raw = params.load(args.params)
    models = params.train_models(raw)
    if args.model not in models or params.section_of(raw, args.model) != "finetune":
        raise CharlabError(f"finetune.{args.model}: no such entry")
    cfg = models[args.model]
    try:  # before any work: a missing GPU is a params problem
        device = resolve_device(cfg.device)
    except DeviceError as e:
        raise params.ParamsError(f"finetune.{args.model}.device: {e}") from None
    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    world = distributed.world_from_env()

    if cfg.nproc > 1 and not distributed.under_torchrun():
        try:
            distributed.check_devices(cfg.nproc, device)
        except distributed.DistributedError as e:
            raise params.ParamsError(f"finetune.{args.model}.nproc: {e}") from None
        params.check_train_split(cfg, args.model, len(corpus.split("train")))
        threads = cpu_threads(cfg.threads) // cfg.nproc if device.type == "cpu" else 1
        distributed.launch(cfg.nproc, [sys.argv[0], *sys.argv[1:]], threads)

    with distributed.process_group(world, distributed.device_for(world, device)):
        train(cfg, corpus, checkpoint_path=args.checkpoint, curve_path=args.curve,
              name=args.model, world=world, init_path=args.init,
              section="finetune")


if __name__ == "__main__":
    run_main(main)
