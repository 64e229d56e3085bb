"""params.yaml, typed and validated: the machinery (:mod:`charlab.params.core`) and one
module per owner of sections (:mod:`~charlab.params.data`, :mod:`~charlab.params.training`,
:mod:`~charlab.params.readers`; :mod:`~charlab.params.sections` has them all, for the
validate stage). This package imports nothing itself, so a stage that reads one section
depends on that module and the core only.
"""
