"""Stage `encode`: corpus text -> vocab.json, a flat id file and the split manifest."""

from __future__ import annotations

from charlab.encoding import encode_corpus
from charlab.errors import run_main
from charlab.params import core
from charlab.params.data import EncodeParams


def main() -> None:
    args = core.stage_parser(__doc__, "corpus", corpus=True).parse_args()

    p = core.section(core.load(args.params), "encode", EncodeParams)
    m = encode_corpus(args.corpus, args.vocab, args.tokens, args.splits,
                      val_fraction=p.val_fraction, test_fraction=p.test_fraction)
    sizes = ", ".join(f"{k} {b - a:,}" for k, (a, b) in m.splits.items())
    print(f"encode: {m.n_chars:,} chars as {m.dtype}; {sizes}")


if __name__ == "__main__":
    run_main(main)
