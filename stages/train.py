"""Stage `train@<model>`: train one entry of `train:` into a checkpoint and a loss curve."""

from __future__ import annotations

from charlab import params
from charlab.encoding import Corpus
from charlab.errors import CharlabError, run_main
from charlab.train import DeviceError, resolve_device, train


def main() -> None:
    args = params.stage_parser(__doc__, "model", "checkpoint", "curve", corpus=True).parse_args()

    models = params.train_models(params.load(args.params))
    if args.model not in models:
        raise CharlabError(f"train.{args.model}: no such entry; have {', '.join(models)}")
    cfg = models[args.model]
    try:  # before any work: a missing GPU is a params problem
        resolve_device(cfg.device)
    except DeviceError as e:
        raise params.ParamsError(f"train.{args.model}.device: {e}") from None
    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    train(cfg, corpus, checkpoint_path=args.checkpoint, curve_path=args.curve, name=args.model)


if __name__ == "__main__":
    run_main(main)
