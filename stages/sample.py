"""Stage `sample`: write `sample.length` characters from every model to samples/<model>.txt."""

from __future__ import annotations

from pathlib import Path

import torch

from charlab.encoding import Vocab, VocabError
from charlab.errors import run_main
from charlab.io import atomic_paths
from charlab.lm import generate
from charlab.models import ModelSet, load_models, model_files
from charlab.params import core
from charlab.params.readers import SampleParams


def main() -> None:
    args = core.stage_parser(__doc__, "vocab", "model-set", "ngram-dir", "models-dir",
                               "out-dir").parse_args()

    p = core.section(core.load(args.params), "sample", SampleParams)
    models = ModelSet.load(args.model_set)  # a dependency: a new set reruns this
    vocab = Vocab.load(args.vocab)
    try:  # before any model loads
        prime = vocab.encode(p.prime)
    except VocabError as e:
        raise core.ParamsError(f"sample.prime: {e}") from None

    torch.set_num_threads(1)  # one character at a time: more threads only add overhead
    files = model_files(models.ngram_orders, models.trained, args.ngram_dir, args.models_dir)
    # Sampling feeds one character at a time, which the CPU does faster than a GPU round trip.
    texts = {}
    for name, model in load_models(files, vocab, device="cpu").items():
        ids = generate(model, prime, p.length, temperature=p.temperature, top_k=p.top_k,
                       seed=p.seed)
        texts[Path(args.out_dir) / f"{name}.txt"] = p.prime + vocab.decode(ids)
    # every sample or none: a failed write (disk full) leaves the previous files in place
    with atomic_paths(*texts) as temps:
        for tmp, text in zip(temps, texts.values(), strict=True):
            tmp.write_text(text, encoding="utf-8")
    for path in texts:
        print(f"sample: {path.stem} -> {path}")


if __name__ == "__main__":
    run_main(main)
