"""Atomic writes: what a failed write leaves, and that its message says so truthfully."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from charlab.io import OutputError, atomic_path, atomic_paths

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
DVC_NOTE = (r"dvc repro deletes a stage's outputs before running it; `dvc checkout <path>` "
            r"restores a cached one, docs/errors.md says how to restore the others")


def _fill(tmp: Path) -> None:
    tmp.write_text("half")
    raise FULL


@pytest.mark.parametrize("previous,message", [
    ([True], r"^{a}: cannot write: No space left on device \(not replaced; the previous file is "
             r"unchanged\)$"),
    # what `dvc repro` leaves: DVC deleted the output before the stage ran
    ([False], r"^{a}: cannot write: No space left on device \(nothing written; there was no "
              r"previous file: " + DVC_NOTE + r"\)$"),
    ([True, True], r"^{a}, {b}: cannot write: No space left on device \(none replaced; the "
                   r"previous files are unchanged\)$"),
    ([False, False], r"^{a}, {b}: cannot write: .*\(nothing written; there was no previous "
                     r"file: " + DVC_NOTE + r"\)$"),
    ([True, False], r"^{a}, {b}: cannot write: .*\(none replaced; the previous {a} unchanged, "
                    r"no previous {b}: " + DVC_NOTE + r"\)$"),
], ids=["one-kept", "one-deleted-by-dvc", "two-kept", "two-deleted", "one-of-two-deleted"])
def test_disk_full_message_says_what_is_really_left(tmp_path: Path, previous: list[bool],
                                                     message: str) -> None:
    targets = [tmp_path / name for name in ("a.csv", "b.json")[: len(previous)]]
    for path, there in zip(targets, previous, strict=True):
        if there:
            path.write_text("previous")
    with pytest.raises(OutputError) as e:
        if len(targets) == 1:
            with atomic_path(targets[0]) as tmp:
                _fill(tmp)
        else:
            with atomic_paths(*targets) as temps:
                temps[0].write_text("new")
                _fill(temps[1])
    names = {"a": re.escape(str(targets[0])), "b": re.escape(str(targets[-1]))}
    assert re.search(message.format(**names), str(e.value)), str(e.value)
    for path, there in zip(targets, previous, strict=True):
        assert path.exists() == there
        if there:
            assert path.read_text() == "previous"
    # no temporary file is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p, there in zip(targets, previous, strict=True) if there)
