"""The model families and the registry that maps each ``cell:`` value to its family.

A new family is one file in this package (a :class:`~charlab.families.base.Family`
subclass and its network) plus one line in :data:`FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from charlab.families.base import Family
from charlab.families.gpt import GPT_FAMILY
from charlab.families.lru import LRU_FAMILY
from charlab.families.mingru import MINGRU
from charlab.families.minlstm import MINLSTM
from charlab.families.recurrent import RECURRENT

FAMILIES: tuple[Family, ...] = (
    RECURRENT,  # rnn, lstm, gru: the lecture's networks
    GPT_FAMILY,  # gpt: a decoder-only Transformer
    MINGRU,  # mingru: Feng et al. 2024, a GRU that trains in parallel over time
    MINLSTM,  # minlstm: the same for the LSTM
    LRU_FAMILY,  # lru: the Linear Recurrent Unit (Orvieto et al. 2023)
)

CELLS: tuple[str, ...] = tuple(cell for f in FAMILIES for cell in f.cells)


def by_cell(cell: str) -> Family:
    """The family of a ``cell:`` value (ValueError if no family has it)."""
    for family in FAMILIES:
        if cell in family.cells:
            return family
    raise ValueError(f"unknown cell {cell!r}; the cells are {', '.join(CELLS)}")


def from_config_dict(obj: Mapping[str, Any]) -> tuple[Family, Any]:
    """A checkpoint's ``model_config``: its family and its config (ValueError if it is
    neither). Every config names its cell; a missing one reads as ``rnn``, the default."""
    family = by_cell(obj.get("cell", "rnn"))
    return family, family.config_from_dict(obj)


def family_of(net: Any) -> Family:
    """The family of a built network (by its config's cell)."""
    return by_cell(net.config.cell)
