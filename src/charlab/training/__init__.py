"""The trainer: the run plan built at the edge (:mod:`~charlab.training.plan`), the loop
(:mod:`~charlab.training.loop`) and what it keeps (records, resume state, guard). Readers
(sample, evaluate, analyze, report, the CLI) never import this package, so an edit here
reruns only the train@ and finetune@ stages. This file imports nothing.
"""
