"""Stage `validate`: check every params section before any other stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a params error found
by, say, `evaluate` would cost the previous metrics. Every other stage depends on this
stage's constant output: a bad value stops `dvc repro` here, before anything is deleted.
The second output, the set of models, is what sample, evaluate and report read: adding or
removing a model reruns them.
"""

from __future__ import annotations

from charlab.errors import run_main
from charlab.io import write_json, write_text
from charlab.models import ModelSet
from charlab.params.core import load, stage_parser
from charlab.params.sections import PARAMS_OK, validate_all


def main() -> None:
    args = stage_parser(__doc__, "ok", "model-set").parse_args()

    checked = validate_all(load(args.params))
    models = ModelSet.from_params(checked)
    write_json(args.model_set, models.to_json())
    write_text(args.ok, PARAMS_OK)
    seeds = "".join(f"; seeds of {config}: {', '.join(runs)}"
                    for config, runs in models.seeds.items())
    print(f"validate: {args.params}: {len(checked)} sections valid; models: n-gram orders "
          f"{', '.join(map(str, models.ngram_orders))}; trained {', '.join(models.trained)}"
          f"{seeds}")


if __name__ == "__main__":
    run_main(main)
