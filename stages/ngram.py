"""Stage `ngram`: fit one character n-gram table per order in `ngram.orders`."""

from __future__ import annotations

from charlab.encoding import Corpus
from charlab.errors import run_main
from charlab.models import ngram_file
from charlab.ngram import NGramLM
from charlab.params import core
from charlab.params.data import NgramParams


def main() -> None:
    args = core.stage_parser(__doc__, "out-dir", corpus=True).parse_args()

    p = core.section(core.load(args.params), "ngram", NgramParams)
    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    train = corpus.split("train")  # counts come from the train split only
    # One fit at the highest order holds every lower order's counts too.
    full = NGramLM.fit(train, corpus.vocab.size, max(p.orders), smoothing=p.smoothing,
                       add_k=p.add_k, discount=p.discount)
    for order in p.orders:
        model = full.with_order(order)
        path = ngram_file(args.out_dir, order)
        model.save(path, corpus.vocab)  # the file records its vocabulary
        print(f"ngram: order {order}: {model.num_params():,} table entries -> {path}")


if __name__ == "__main__":
    run_main(main)
