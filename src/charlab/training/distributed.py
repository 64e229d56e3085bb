"""Data-parallel training over several processes: ``torchrun`` starts them, DDP syncs them.

Nothing here is home-made transport: processes are launched by ``torch.distributed.run``
(torchrun), and gradients, losses and checkpoint parts travel through
``torch.distributed`` (gloo on CPU, NCCL on CUDA). With one process every helper is a
no-op, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from charlab.errors import CharlabError


class DistributedError(CharlabError):
    """Distributed training cannot start here."""


@dataclass(frozen=True)
class World:
    """Where this process sits among the training processes (torchrun's env variables)."""

    rank: int = 0        # 0 .. size-1 over every node
    size: int = 1
    local_rank: int = 0  # 0 .. local_size-1 on this node
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 writes the files, shows progress and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def rows(self, batch_size: int) -> range:
        """This rank's share of the global batch: a contiguous block of streams."""
        if batch_size % self.size:
            raise DistributedError(
                f"batch_size {batch_size} does not split evenly over {self.size} processes; "
                "use a batch_size that is a multiple of the number of processes"
            )
        share = batch_size // self.size
        return range(self.rank * share, (self.rank + 1) * share)


SINGLE = World()
# Ranks wait in this group, not the default one, while rank 0 reads a resume state or scores
# the whole val split: on a CPU and a large corpus that can pass the default timeout (30 min
# on gloo). Every other collective keeps the default, so a rank that hangs or dies on another
# node is noticed in minutes, not hours.
_SLOW_TIMEOUT = datetime.timedelta(hours=4)
_slow_group: Any = None


def under_torchrun(env: dict[str, str] | None = None) -> bool:
    """Whether torchrun (or another launcher with its environment) started this process."""
    return "WORLD_SIZE" in (os.environ if env is None else env)


def world_from_env(env: dict[str, str] | None = None) -> World:
    """The world torchrun describes in the environment, or a single process if none."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        world = World(rank=int(env["RANK"]), size=int(env["WORLD_SIZE"]),
                      local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
                      local_size=int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))
    except (KeyError, ValueError) as e:
        raise DistributedError(f"WORLD_SIZE is set but the torchrun environment is incomplete "
                               f"or not numeric: {e}") from None
    if not (0 <= world.rank < world.size and 0 <= world.local_rank < world.local_size):
        raise DistributedError(f"inconsistent torchrun environment: {world}")
    return world


# Seconds torchrun waits, after passing on Ctrl-C or SIGTERM, before it SIGKILLs the ranks:
# enough for rank 0 to write a large resume state (its default is 30).
SHUTDOWN_TIMEOUT = 300


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that reruns ``argv`` (script and arguments) as ``nproc`` local processes.

    The rendezvous takes a free port, so two launches on one machine (two queued
    experiments) never join each other.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc-per-node={nproc}", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
            "--max-restarts=0", f"--shutdown-timeout={SHUTDOWN_TIMEOUT}", *argv]


def launch(nproc: int, argv: Sequence[str], threads_per_process: int) -> None:
    """Replace this process by torchrun running ``argv`` ``nproc`` times (never returns).

    ``OMP_NUM_THREADS`` = ``threads_per_process`` shares the cores among the processes
    (ranks whose ``threads`` is 0 use it). exec, not a child: signals from DVC or the
    terminal reach torchrun, which passes them on to every rank.
    """
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; set nproc: 1")
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(max(1, threads_per_process))
    cmd = torchrun_command(nproc, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)


def check_devices(nproc: int, device: torch.device) -> None:
    """``nproc`` processes on this node can train data-parallel on ``device``."""
    if nproc <= 1:
        return
    if device.type not in ("cpu", "cuda"):
        raise DistributedError(f"data-parallel training runs on CPU (gloo) or CUDA (NCCL), not "
                               f"{device.type}; use nproc: 1 or device: cpu")
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise DistributedError(f"{nproc} processes need one GPU each; this machine has "
                               f"{torch.cuda.device_count()}")


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process on CUDA (by local rank); CPU and MPS stay as they are."""
    check_devices(world.local_size, device)
    if device.type != "cuda" or not world.distributed:
        return device
    device = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the other ranks for the duration (NCCL on CUDA, gloo otherwise)."""
    if not world.distributed:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, **kwargs)
    global _slow_group
    _slow_group = dist.new_group(timeout=_SLOW_TIMEOUT)
    try:
        yield
    finally:
        _slow_group = None
        dist.destroy_process_group()


# --- collectives: identity with one process ---------------------------------------------------

def _on(device: torch.device, values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float64, device=device)


def sum_all(world: World, values: Sequence[float], device: torch.device) -> list[float]:
    """Elementwise sum over every rank."""
    if not world.distributed:
        return list(values)
    t = _on(device, values)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (so all stop at the same step)."""
    if not world.distributed:
        return flag
    t = _on(device, [1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(world: World, value: Any, slow: bool = False) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object; peers only, never files).
    ``slow``: rank 0 may take long to get there (evaluating, reading a resume state)."""
    if not world.distributed:
        return value
    box = [value if world.main else None]
    dist.broadcast_object_list(box, src=0, group=_slow_group if slow else None)
    return box[0]


def gather(world: World, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out
