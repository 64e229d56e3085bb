"""Stage `evaluate`: score every model on train/val/test -> metrics.csv and metrics.json,
and every model's per-character log-probabilities on the test split -> the scores file."""

from __future__ import annotations

import torch

from charlab.encoding import Corpus
from charlab.errors import run_main
from charlab.evaluate import score_splits, write_metrics
from charlab.models import ModelSet, load_models, model_files
from charlab.params import core
from charlab.params.readers import EvaluateParams
from charlab.runtime import FP32, DeviceError, cpu_threads, float32_gemms, resolve_device


def main() -> None:
    args = core.stage_parser(__doc__, "model-set", "ngram-dir", "models-dir", "csv", "json",
                               "bar", "scores", corpus=True).parse_args()

    p = core.section(core.load(args.params), "evaluate", EvaluateParams)
    models = ModelSet.load(args.model_set)  # a dependency: a new set reruns this
    try:  # before any work: a missing GPU is a params problem
        device = resolve_device(p.device)
    except DeviceError as e:
        raise core.ParamsError(f"evaluate.device: {e}") from None
    torch.set_num_threads(cpu_threads(p.threads))

    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    files = model_files(models.ngram_orders, models.trained, args.ngram_dir, args.models_dir)
    # one pass: the analyze stage reads the test split's per-character scores from here;
    # fp32 GEMMs (cuDNN's RNN would otherwise take TF32), as validation scores in training
    with float32_gemms(FP32):
        table, scores = score_splits(load_models(files, corpus.vocab, device=str(device)),
                                     corpus, keep="test")
    write_metrics(table, args.csv, args.json, args.bar, scores=scores, scores_path=args.scores)
    test = table[table["split"] == "test"].set_index("model")
    for name, row in test.iterrows():
        print(f"evaluate: {name:>10}  test nll {row.nll:.4f}  bpc {row.bpc:.4f}  "
              f"ppl {row.perplexity:.3f}")


if __name__ == "__main__":
    run_main(main)
