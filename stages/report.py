"""Stage `report`: metrics/report.md, opening with the verdict (which model is best, by how
much, how sure, and at equal budget), then a table of every model, the intervals, seeds and
budgets, figures, the analysis (bits per class, model against model, the units) and
samples. Writes metrics/budget.csv (validation nll against training FLOPs and seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from charlab import intervals
from charlab.compare import Bootstrap
from charlab.errors import CharlabError, run_main
from charlab.models import ModelSet, model_names
from charlab.params import core
from charlab.params.readers import IntervalsParams, SampleParams
from charlab.report import AnalysisFiles, TrainedInfo, read_run_info, write_report
from charlab.report_stats import BUDGET_FIGURE, budget_runs, findings


def main() -> None:
    args = core.stage_parser(__doc__, "metrics", "model-set", "curves-dir", "samples-dir",
                               "runs-dir", "out", "figures-dir", "classes", "analysis",
                               "analysis-figures", "analysis-pages", "intervals", "pairs",
                               "configs", "config-pairs", "budget").parse_args()

    params = core.load(args.params)
    # each sample is sample.prime + what the model wrote: the excerpt shows the latter
    prime = core.section(params, "sample", SampleParams).prime
    ip = core.section(params, "intervals", IntervalsParams)  # what the report says of them
    models = ModelSet.load(args.model_set)  # a dependency: a new set reruns this
    names = model_names(list(models.ngram_orders), list(models.trained))
    iv = intervals.read(args.intervals, args.pairs, args.configs, args.config_pairs)
    if list(iv.models["model"]) != names:
        raise CharlabError(f"{args.intervals}: intervals of {', '.join(iv.models['model'])}, "
                           f"the models are {', '.join(names)}: rerun the intervals stage "
                           "(`dvc repro`)")
    trained = {}
    for name in models.trained:
        run = read_run_info(Path(args.runs_dir) / f"{name}.json")
        if "chars_per_step" not in run:
            raise CharlabError(f"{args.runs_dir}/{name}.json: no run info of this charlab "
                               f"(written by an older one, or missing); retrain {name} "
                               "(`dvc repro`)")
        trained[name] = TrainedInfo(curve=pd.read_csv(Path(args.curves_dir) / f"{name}.csv"),
                                    chars_per_step=int(run["chars_per_step"]), run=run)
    samples = {name: (Path(args.samples_dir) / f"{name}.txt").read_text(encoding="utf-8")
               for name in names}
    figure = Path(args.figures_dir) / BUDGET_FIGURE
    found = findings(iv, models.configs(), pd.read_csv(args.metrics),
                     budget_runs(trained, args.runs_dir), Bootstrap(ip.block, ip.resamples,
                                                                    ip.seed),
                     args.budget, figure, os.path.relpath(figure, Path(args.out).parent))
    analysis = AnalysisFiles(Path(args.classes), Path(args.analysis), Path(args.analysis_figures),
                             Path(args.analysis_pages))
    write_report(args.metrics, trained, samples, args.out, args.figures_dir, analysis, prime,
                 found.verdict, found.sections)
    print(f"report: {args.out}")


if __name__ == "__main__":
    run_main(main)
