"""Stage `intervals`: how sure each test number is, from evaluate's per-character scores.

Every model's test nll with its 95% interval (a metrics file `dvc metrics show` reads),
every pair's paired difference with its interval and verdict, each configuration's mean
over its seeds and the intervals between configurations: a paired circular block bootstrap
of the test split (docs/intervals.md).
"""

from __future__ import annotations

import time

from charlab.compare import Bootstrap
from charlab.errors import run_main
from charlab.evaluate import read_scores
from charlab.intervals import check_block, compute, seed_note, write
from charlab.models import ModelSet
from charlab.params import core
from charlab.params.readers import IntervalsParams


def main() -> None:
    args = core.stage_parser(__doc__, "model-set", "scores", "json", "pairs", "configs",
                             "config-pairs").parse_args()

    p = core.section(core.load(args.params), "intervals", IntervalsParams)
    models = ModelSet.load(args.model_set)  # a dependency: a new set reruns this
    start = time.perf_counter()
    scores = read_scores(args.scores)
    check_block(p.block, scores.logprobs.shape[1])  # before any work: a params problem
    configs = models.configs()
    iv = compute(scores, configs, Bootstrap(p.block, p.resamples, p.seed))
    write(iv, args.json, args.pairs, args.configs, args.config_pairs)
    for r in iv.models.sort_values("nll").itertuples():
        print(f"intervals: {r.model:>10}  test nll {r.nll:.4f}  95% {r.lo:.4f} to {r.hi:.4f}")
    told = (iv.pairs["verdict"] != "tie").sum()
    note = seed_note(configs)
    print(f"intervals: {told} of {len(iv.pairs)} pairs told apart (block {p.block}, "
          f"{p.resamples} resamples){'; seeds: ' + note if note else ''}; "
          f"{time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    run_main(main)
