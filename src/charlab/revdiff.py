"""``charlab diff REV_A REV_B``: did each model's test nll really change between two
revisions?

Both revisions' per-character test scores (``data/scores/test_logprobs.npz``) and split
manifests (``data/encoded/split.json``) are read through DVC at the revision (from the
cache, or a remote), so a revision is a git commit, branch or tag, or an experiment of
``dvc exp run`` (its name, or its ref ``refs/exps/...``). The two must have scored the same
test text: the manifests' corpus sha256 and test range must agree, else nothing is
compared. Per model present in both, the difference B - A of its test nll is a paired
circular block bootstrap of the per-character differences (:mod:`charlab.compare`): the
same characters, resampled on the same blocks for both revisions.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from charlab.compare import Bootstrap, nll_rows, quantile_bounds, resample_means, verdict
from charlab.encoding import Manifest
from charlab.errors import CharlabError
from charlab.evaluate import SplitScores, read_scores

SCORES = "data/scores/test_logprobs.npz"
SPLITS = "data/encoded/split.json"
DIFF_COLUMNS = ["model", "a", "b", "diff", "lo", "hi", "change"]
# verdict() of the interval of B - A: "a" means its first term, B, has the lower nll
CHANGES = {"a": "better", "b": "worse", "tie": "no real change"}


class DiffError(CharlabError):
    """Two revisions that cannot be compared."""


def resolve(rev: str, repo: str | Path = ".") -> str:
    """The commit of ``rev``: a git revision, or the name of a ``dvc exp run`` experiment
    (whose commit lives under ``refs/exps/``, not on a branch)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)

    found = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if found.returncode == 0:
        return found.stdout.strip()
    refs = git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/").stdout
    matches = {sha for ref, sha in (line.split() for line in refs.splitlines())
               if ref.rsplit("/", 1)[-1] == rev}
    if len(matches) == 1:
        return matches.pop()
    if matches:
        raise DiffError(f"{rev}: {len(matches)} experiments have this name; give its ref "
                        "(`git for-each-ref refs/exps/`)")
    raise DiffError(f"{rev}: no such git revision or experiment (`dvc exp show` lists the "
                    "experiments)")


def read_at(path: str, rev: str, sha: str, repo: str | Path = ".") -> bytes:
    """The bytes of pipeline output ``path`` at commit ``sha``, through DVC."""
    import dvc.api  # 0.4 s: only this command needs it

    try:
        return dvc.api.read(path, repo=str(repo), rev=sha, mode="rb")
    except Exception as e:  # DVC's errors: not in that commit, not in the cache or remote
        detail = " ".join(str(e).split()) or type(e).__name__
        raise DiffError(f"{rev}: cannot read {path} through DVC ({detail}); has that "
                        "revision run the pipeline, and is its cache here (`dvc pull`)?"
                        ) from None


@dataclass(frozen=True)
class Side:
    """One revision's test scores and where its test split lies."""

    rev: str
    manifest: Manifest
    scores: SplitScores


def read_manifest(rev: str, sha: str, repo: str | Path = ".") -> Manifest:
    try:
        return Manifest.from_json(json.loads(read_at(SPLITS, rev, sha, repo)))
    except (ValueError, KeyError, TypeError) as e:
        raise DiffError(f"{rev}: {SPLITS} is not a split manifest ({e})") from None


def read_side_scores(rev: str, sha: str, manifest: Manifest,
                     repo: str | Path = ".") -> SplitScores:
    """The revision's test scores, checked against its own split manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_logprobs.npz"
        path.write_bytes(read_at(SCORES, rev, sha, repo))
        try:
            scores = read_scores(path)
        except CharlabError as e:
            raise DiffError(f"{rev}: {SCORES}: {str(e).split(': ', 1)[-1]}") from None
    a, b = manifest.splits["test"]
    if scores.start != a or scores.logprobs.shape[1] != b - a - 1:
        raise DiffError(f"{rev}: {SCORES} scores {scores.logprobs.shape[1]} characters from "
                        f"{scores.start}, its split manifest's test split is {a}-{b}: the "
                        "revision's outputs do not belong together")
    return scores


def same_test_text(rev_a: str, a: Manifest, rev_b: str, b: Manifest) -> None:
    """Refuse, in one line, two revisions whose test text differs."""
    ta, tb = a.splits["test"], b.splits["test"]
    if a.sha256 != b.sha256 or ta != tb:
        raise DiffError(
            f"{rev_a} and {rev_b} scored different test text (corpus sha256 "
            f"{a.sha256[:12]}… test characters {ta[0]}-{ta[1]}, against "
            f"{b.sha256[:12]}… {tb[0]}-{tb[1]}): their test nll cannot be compared "
            "character by character")


def load_sides(rev_a: str, rev_b: str, repo: str | Path = ".") -> tuple[Side, Side]:
    """Both revisions; their manifests are compared before any scores are read."""
    shas = [resolve(rev, repo) for rev in (rev_a, rev_b)]
    manifests = [read_manifest(rev, sha, repo) for rev, sha in zip((rev_a, rev_b), shas,
                                                                   strict=True)]
    same_test_text(rev_a, manifests[0], rev_b, manifests[1])
    a, b = (Side(rev, m, read_side_scores(rev, sha, m, repo))
            for rev, sha, m in zip((rev_a, rev_b), shas, manifests, strict=True))
    return a, b


def diff_table(a: Side, b: Side, boot: Bootstrap) -> pd.DataFrame:
    """``model, a, b, diff, lo, hi, change`` for every model scored at both revisions:
    ``diff`` = B's test nll - A's (negative: B is better), its interval, and ``better``,
    ``worse`` or ``no real change`` (the interval contains 0)."""
    common = [m for m in b.scores.models if m in a.scores.models]
    if not common:
        raise DiffError(f"no model is in both revisions ({a.rev}: "
                        f"{', '.join(a.scores.models)}; {b.rev}: {', '.join(b.scores.models)})")
    x = nll_rows(np.stack([a.scores[m] for m in common] + [b.scores[m] for m in common]))
    k = len(common)
    draws = resample_means(x, boot)
    lo, hi = quantile_bounds(draws[:, k:] - draws[:, :k], boot.level)
    point = x.mean(axis=1)
    rows = []
    for i, name in enumerate(common):
        same = np.array_equal(x[i], x[k + i])
        rows.append({"model": name, "a": point[i], "b": point[k + i],
                     "diff": point[k + i] - point[i], "lo": lo[i], "hi": hi[i],
                     "change": "identical" if same else CHANGES[verdict(lo[i], hi[i])]})
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def format_diff(a: Side, b: Side, table: pd.DataFrame, boot: Bootstrap) -> str:
    n = a.scores.logprobs.shape[1]
    lines = [f"test nll (nats/char) at A = {a.rev} and B = {b.rev}, and B - A (negative: B is "
             f"better) with its {boot.level:.0%} interval: a paired block bootstrap of the "
             f"same {n:,} test characters (blocks of {boot.block}, {boot.resamples} "
             "resamples)",
             f"{'model':<12}{'A':>8}{'B':>8}{'B - A':>9}  {'interval':<20}change"]
    for r in table.itertuples():
        lines.append(f"{r.model:<12}{r.a:>8.4f}{r.b:>8.4f}{r.diff:>+9.4f}  "
                     f"{f'{r.lo:+.4f} to {r.hi:+.4f}':<20}{r.change}")
    for side, other in ((a, b), (b, a)):
        only = [m for m in side.scores.models if m not in other.scores.models]
        if only:
            lines.append(f"only in {side.rev}: {', '.join(only)}")
    return "\n".join(lines)
