"""Sweeps on many workers: a grid over train.rnn3.lr queued with `dvc exp run --queue`, run by
`dvc queue start -j 2` with one torch thread per worker (OMP_NUM_THREADS in the environment of
`dvc queue start` reaches every stage the workers run), tiny models."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_text
from test_pipeline import make_repo, run, stages_run

pytestmark = pytest.mark.slow

LRS = (0.001, 0.03)
TIMEOUT_S = 300
THREAD_LINE = re.compile(r"^train rnn3: device cpu \([^)]*\), precision \w+ \([^)]*\), "
                         r"(\d+) threads\b", re.M)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("OMP_NUM_THREADS", None)  # only where a call sets it
    return env | extra


def queue_status(repo: Path) -> tuple[dict[str, str], str]:
    """({experiment name: Queued | Running | Success | Failed}, the raw table)."""
    out = run(["dvc", "queue", "status"], repo)
    tasks = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4 and re.fullmatch(r"[0-9a-f]{7}", cols[0]):
            tasks[cols[1]] = cols[-1]
    return tasks, out


def queue_logs(repo: Path, names) -> str:
    parts = []
    for name in names:
        proc = subprocess.run(["dvc", "queue", "logs", name], cwd=repo, env=_env(),
                              capture_output=True, text=True)
        parts.append(f"--- dvc queue logs {name} (rc {proc.returncode})\n"
                     f"{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def procs_in(repo: Path) -> dict[int, str]:
    """Live processes whose working directory is the repo or below it (the queue workers run
    in the repo, their experiments in temporary clones under .dvc/tmp/exps): pid -> cmdline."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone, or a zombie
            continue
        if cmd and (cwd == repo or repo in cwd.parents):
            found[int(entry.name)] = cmd
    return found


def wait_no_procs(repo: Path, timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (left := procs_in(repo)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
def test_queue_grid_two_workers(tmp_path, http_server):
    if len(os.sched_getaffinity(0)) < 2:  # and 1 thread would be every core's default too
        pytest.skip("two workers need two cores")
    def rnn3_only(p):
        p["train"] = {"rnn3": p["train"]["rnn3"]}
        # threads 0: the stage takes OMP_NUM_THREADS from its environment (else every core),
        # so the thread count in the log shows what reached it
        p["train"]["rnn3"].update(threads=0, warmup_steps=0)
    repo = make_repo(tmp_path, http_server, make_text(30_000, seed=1), rnn3_only).resolve()
    # the queue runs each experiment in a clone of HEAD: commit everything it needs, and a
    # baseline's dvc.lock so the clones take download/encode/ngram from the cache
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)

    out = run(["dvc", "exp", "run", "--queue", "-S", f"train.rnn3.lr={LRS[0]},{LRS[1]}"], repo)
    assert out.count("Queued experiment") == 2, out
    tasks, table = queue_status(repo)
    assert sorted(tasks.values()) == ["Queued", "Queued"], table
    names = sorted(tasks)

    try:
        # output to a file, not a pipe: a process of the worker's daemon chain holds the
        # command's stdout open until the worker exits, so reading a pipe waits for the queue
        with (tmp_path / "queue_start.log").open("w+") as log:
            proc = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo,
                                  env=_env(OMP_NUM_THREADS="1"), stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=60)
            log.seek(0)
            started = log.read()
        assert proc.returncode == 0, started
        assert "Started '2' new experiments task queue workers" in started

        deadline = time.monotonic() + TIMEOUT_S
        most_running = 0
        while True:
            tasks, table = queue_status(repo)
            most_running = max(most_running, list(tasks.values()).count("Running"))
            if not {"Queued", "Running"} & set(tasks.values()):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"queue not done after {TIMEOUT_S}s:\n{table}\n"
                            f"{queue_logs(repo, names)}")
            time.sleep(1)
        logs = {name: queue_logs(repo, [name]) for name in names}
        assert tasks == dict.fromkeys(names, "Success"), f"{table}\n{''.join(logs.values())}"
        assert most_running == 2, f"-j 2 never ran two experiments at once:\n{table}"

        for log in logs.values():
            # the clone reused the baseline's upstream outputs, trained rnn3 and evaluated it
            ran = stages_run(log)
            assert ran == {"validate", "train@rnn3", "sample", "evaluate", "analyze",
                           "intervals", "report"}, log
            # OMP_NUM_THREADS=1 of `dvc queue start` reached the stage (not every core)
            assert THREAD_LINE.findall(log) == ["1"], log

        shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))
        exps = {e["name"]: e for branch in shown for e in branch.get("experiments") or []}
        assert sorted(exps) == names
        lrs, nlls = {}, {}
        for name, exp in exps.items():
            assert exp["executor"]["state"] == "success", exp["executor"]
            data = exp["revs"][0]["data"]
            lrs[name] = data["params"]["params.yaml"]["data"]["train"]["rnn3"]["lr"]
            nlls[name] = data["metrics"]["metrics/metrics.json"]["data"]["rnn3"]["test_nll"]
        assert sorted(lrs.values()) == sorted(LRS)  # each experiment has its own lr
        assert all(isinstance(v, float) and 0 < v < 10 for v in nlls.values()), nlls
        assert len(set(nlls.values())) == 2, nlls  # ... and its own result

        # idle workers exit on their own once the queue is empty; `queue stop` ends any left
        run(["dvc", "queue", "stop"], repo)
        left = wait_no_procs(repo, 30)
        assert not left, f"processes left behind by the queue: {left}"
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=_env(),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        for pid in wait_no_procs(repo, 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
