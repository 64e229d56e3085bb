"""Stage `analyze`: where and why the models differ, from evaluate's per-character scores.

Writes the bits/char per class of character (a CSV for `dvc plots`), the figures for the
report, and self-contained HTML pages: the best trained model against the best n-gram (and
any `analyze.pairs`) character by character, and what the units of every trained model track.
"""

from __future__ import annotations

import time

import torch

from charlab.analysis import AnalyzeSettings, analyze
from charlab.encoding import Corpus
from charlab.errors import run_main
from charlab.evaluate import read_scores
from charlab.models import ModelSet, checkpoint_file, model_names, ngram_name
from charlab.params import core
from charlab.params.readers import AnalyzeParams
from charlab.runtime import cpu_threads


def main() -> None:
    args = core.stage_parser(__doc__, "model-set", "scores", "models-dir", "classes",
                               "figures-dir", "pages-dir", "summary", corpus=True).parse_args()

    p = core.section(core.load(args.params), "analyze", AnalyzeParams)
    models = ModelSet.load(args.model_set)  # a dependency: a new set reruns this
    orders, trained = list(models.ngram_orders), list(models.trained)
    p.check_models("analyze", model_names(orders, trained))
    torch.set_num_threads(cpu_threads(p.threads))

    start = time.perf_counter()
    corpus = Corpus.load(args.vocab, args.tokens, args.splits)
    scores = read_scores(args.scores)
    settings = AnalyzeSettings(p.excerpt_chars, p.cells_chars, p.top_contexts, p.context_chars,
                               tuple((a, b) for a, b in p.pairs))
    out = analyze(scores, corpus, {m: checkpoint_file(args.models_dir, m) for m in trained},
                  [ngram_name(o) for o in sorted(orders)], settings, class_csv=args.classes,
                  figures_dir=args.figures_dir, pages_dir=args.pages_dir, summary=args.summary)
    for pair in out["pairs"]:
        print(f"analyze: {pair['a']} vs {pair['b']}: {pair['a']} better on "
              f"{pair['a_better_share']:.1%} of the characters -> {pair['page']}")
    for entry in out["cells"]:
        found = [b for b in entry["best"] if b["unit"]]
        top = max(found, key=lambda b: abs(b["r"]), default=None)
        print(f"analyze: {entry['model']}: "
              + (f"best unit {top['unit']} tracks {top['feature']} (r = {top['r']:+.3f})"
                 if top else "no feature present in the excerpt"))
    for skip in out["skipped"]:
        print(f"analyze: {skip['model']}: units not read ({skip['why']})")
    print(f"analyze: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    run_main(main)
