"""Atomic writes: an output is either the old file, the complete new file, or absent.

An output is written only as a regular file: a device, a FIFO or a directory at its path is
refused (replacing /dev/null by a file, as root, would break the machine), and a symlink is
followed, so its target gets the new file and the link stays a link.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from charlab.errors import CharlabError

try:
    import fcntl
except ImportError:  # not POSIX: no stale-temp detection
    fcntl = None  # type: ignore[assignment]

# errno values that mean "the disk (or this process's share of it) is full"
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutputError(CharlabError):
    """An output could not be written (disk full, file too large, no permission)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _no_space(exc: BaseException) -> OSError | None:
    """The disk-full OSError behind ``exc`` (itself, its cause or its context), if any.

    Writers that wrap the OSError of a failed ``write`` (torch's serializer, a download
    loop) keep it as ``__context__`` or ``__cause__``.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return e
        e = e.__cause__ or e.__context__
    return None


def _names(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def not_a_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists but is not a regular file ("a directory", "a
    character device", ...; symlinks followed), else None: for the one-line errors of
    readers that would otherwise say "no such file" of /dev/zero or a directory."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None)


def _real_target(path: Path) -> Path:
    """Where a write to ``path`` lands: the path itself, or a symlink's final target
    (missing or not); refused if something other than a regular file is there."""
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as e:  # a symlink loop, a path through a file
        raise OutputError(f"{path}: cannot write there: {e.strerror}") from None
    kind = next((kind for test, kind in _KINDS if test(mode)), None)
    if kind is not None:
        shown = f"{path} (a link to {real})" if real != path else str(path)
        raise OutputError(f"{shown}: is {kind}, not a regular file; charlab writes its "
                          "outputs only as regular files: give a file name")
    return real


def check_output(path: str | os.PathLike) -> None:
    """Before any work, for an output the user named (``charlab ngram export OUT``): it can
    be written as a regular file, and its directory exists. Stages do not call this: their
    output directories come from dvc.yaml, and DVC may have removed them (atomic_paths
    creates them)."""
    real = _real_target(Path(path))
    parent = real.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "no such directory"
        raise OutputError(f"{path}: {parent}: {what}; create it first, or give another path")


# mkstemp's temp names: f".{name}." + 8 characters of this set + ".tmp"
_TEMP_MIDDLE = re.compile(r"[a-z0-9_]{8}")


def _hold(fd: int) -> None:
    """Mark an open temp file as in use: a lock that ends with its process, however it
    ends (kill -9 included), so another writer can tell a live temp from a stale one."""
    if fcntl is not None:  # blocks only while a cleaner that took it in passing lets go
        fcntl.flock(fd, fcntl.LOCK_EX)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temp files of ``path`` (``.<name>.XXXXXXXX.tmp`` beside it) that no live
    writer holds: what a killed write left (a 32 MiB token file, empty manifests).

    A writer holds a lock on its temp file until it is renamed; a lock we can take means its
    process is gone. Returns the paths removed.
    """
    path = Path(path)
    prefix = f".{path.name}."
    if fcntl is None or not path.parent.is_dir():
        return []
    removed = []
    for entry in os.scandir(path.parent):
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")
                and _TEMP_MIDDLE.fullmatch(name[len(prefix):-4])
                and entry.is_file(follow_symlinks=False)):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(fd)
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; rename them all into place only
    once the block finishes cleanly.

    The temp files live in the target directories so each final ``os.replace`` is atomic,
    and they are fsynced first so a crash never leaves a renamed but empty file. If the
    block fails, every temp file is removed and no target is touched: a set of outputs
    that belong together (an encoded corpus and its manifest) is never left half new,
    half old. A full disk is reported as :class:`OutputError`, naming the outputs.

    A target that is a device, a FIFO or a directory is refused before anything is
    created; a symlink's target is written. Missing directories are created (a stage's
    output directory that DVC removed). The stale temp files of each target (a killed
    earlier write) are removed first.
    """
    targets = [Path(p) for p in paths]
    reals = [_real_target(p) for p in targets]
    temps: list[Path] = []
    held: list[int] = []
    try:
        for path, real in zip(targets, reals, strict=True):  # noqa: B007 (path: the error)
            real.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(real)
            fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
            held.append(fd)
            temps.append(Path(tmp))
            _hold(fd)
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    except OSError as e:
        _drop(temps, held)
        raise OutputError(f"{path}: cannot create the output: {e.strerror}") from None
    try:
        yield temps
        for tmp in temps:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        for tmp, real in zip(temps, reals, strict=True):
            os.replace(tmp, real)
        _drop([], held)
    except BaseException as e:
        _drop(temps, held)
        full = _no_space(e)
        if full is not None:
            raise OutputError(
                f"{_names(targets)}: cannot write: {full.strerror or 'disk full'} "
                f"({_what_is_left(targets)})"
            ) from None
        raise


def _drop(temps: list[Path], held: list[int]) -> None:
    """Remove ``temps``, then let go of their locks."""
    for tmp in temps:
        tmp.unlink(missing_ok=True)
    for fd in held:
        os.close(fd)
    held.clear()


def _what_is_left(targets: list[Path]) -> str:
    """After a failed write: which previous files are still there, said truthfully. Under
    `dvc repro` there are none: DVC deletes a stage's outputs before it runs the command,
    and says so in the environment of the command (DVC_STAGE); a stage or library call run
    by hand deleted nothing, so there the message blames no one."""
    absent = [p for p in targets if not p.exists()]
    if not absent:
        return ("not replaced; the previous file is unchanged" if len(targets) == 1
                else "none replaced; the previous files are unchanged")
    why = ("" if not os.environ.get("DVC_STAGE") else
           ": dvc repro deletes a stage's outputs before running it; `dvc checkout <path>` "
           "restores a cached one, docs/errors.md says how to restore the others")
    if len(absent) == len(targets):
        return f"nothing written; there was no previous file{why}"
    present = [p for p in targets if p.exists()]
    return (f"none replaced; the previous {_names(present)} unchanged, no previous "
            f"{_names(absent)}{why}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing that only replaces ``path`` once the block finishes cleanly."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def json_text(obj: Any) -> str:
    """The JSON that :func:`write_json` writes: indented, UTF-8 characters kept as they are."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        f.write(json_text(obj))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping.

    PyYAML keeps the last value silently; DVC (ruamel.yaml) refuses the file. charlab reads
    params.yaml too, so it must not run on a value DVC never accepted.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        self._check_unique(node, "", set())
        return super().construct_document(node)

    def _check_unique(self, node: yaml.Node, where: str, seen: set[int]) -> None:
        if id(node) in seen:  # an alias: checked where its anchor is (and no recursion)
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique(item, f"{where}[{i}]", seen)
        if not isinstance(node, yaml.MappingNode):
            return
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node,
                                                                            yaml.ScalarNode):
                continue  # merge keys (<<) may be overridden; a complex key fails later
            key = self.construct_object(key_node)
            path = f"{where}.{key}" if where else str(key)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {path} (first at line {first[key]}; "
                        "DVC refuses such a file too)", key_node.start_mark)
                first[key] = line
            except TypeError:  # unhashable: SafeLoader reports it
                pass
            self._check_unique(value_node, path, seen)


def read_yaml(path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` of the file (no tags that run code), refusing duplicate keys."""
    with open(path, encoding="utf-8") as f:
        loader = _UniqueKeyLoader(f)  # what yaml.safe_load does, with this SafeLoader
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def drop_mapped_pages(array: Any) -> None:
    """Unmap the pages a memory-mapped array has read from this process's resident set.

    They stay in the kernel's page cache, and the next read maps them again; a long
    sequential pass over a corpus larger than memory calls this after each chunk so its RSS
    stays bounded. Arrays that are not memory-mapped are left alone.
    """
    mapping = getattr(array, "_mmap", None)  # np.memmap's mapping, shared by its slices
    # read-only maps only: on a copy-on-write map it would discard the caller's changes
    if (isinstance(mapping, mmap.mmap) and getattr(array, "mode", None) == "r"
            and hasattr(mmap, "MADV_DONTNEED")):
        mapping.madvise(mmap.MADV_DONTNEED)
