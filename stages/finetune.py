"""Stage `finetune@<model>`: train an entry of `finetune:` starting from the weights of the
checkpoint its `init_from` names (`--init`, a dependency of the stage, so replacing it reruns
the fine-tune). Otherwise as `train@<model>`: the same trainer, files and torchrun launch.

DVC gives every stage of a `foreach` the same dependencies, so a fine-tune, which depends on
one more file, is its own stage over its own params section.
"""

from __future__ import annotations

from charlab.errors import run_main
from charlab.params.core import stage_parser
from charlab.training.launch import run_entry


def main() -> None:
    args = stage_parser(__doc__, "model", "init", "checkpoint", "curve", "run-info",
                               corpus=True).parse_args()
    run_entry(args, "finetune", init_path=args.init)


if __name__ == "__main__":
    run_main(main)
