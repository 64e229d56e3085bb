"""The data sections of params.yaml: ``download``, ``encode`` and ``ngram``."""

from __future__ import annotations

import os
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from charlab.ngram_choices import (
    ADD_K_RANGE,
    DISCOUNT_MAX,
    MAX_ORDER,
    MIN_DISCOUNT,
    MIN_ORDER,
    Smoothing,
)
from charlab.params.core import ParamsError, check, fraction, non_negative, shown

# socket timeouts above ~1e10 s overflow the C time type; a day per read is already generous
MAX_TIMEOUT = 86_400.0
URL_SCHEMES = ("http", "https", "file")


def timeout_seconds(v: Any) -> str | None:
    if v <= 0:
        return "must be > 0"
    return None if v <= MAX_TIMEOUT else f"must be at most {MAX_TIMEOUT:g} seconds (a day)"


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a corpus source (http, https, file:// or a local path),
    or None. Parsing only: nothing is fetched."""
    got = shown(url)
    if not url.strip():
        return "must name a file or an http(s) URL, got an empty string"
    if any(unicodedata.category(c) == "Cc" for c in url):
        # urllib drops a newline or a tab from a URL (another URL is fetched), http.client
        # refuses them at download time, and open() a NUL
        return f"must not hold control characters (a newline, a tab, NUL), got {got}"
    try:
        parsed = urllib.parse.urlparse(url)
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as e:
        return f"not a valid URL: {e} (got {got})"
    scheme = parsed.scheme
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a path (C:\\ on Windows)
        return None
    if scheme not in URL_SCHEMES:
        return (f"scheme {scheme!r} is not allowed; use one of {', '.join(URL_SCHEMES)} or "
                f"a local path (got {got})")
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return (f"a file:// URL names a file on this machine: host {parsed.netloc!r} is "
                    f"not allowed (use file:///path or file://localhost/path; got {got})")
        if not parsed.path:
            return f"a file:// URL needs a path (got {got})"
    elif not parsed.hostname:
        return f"an {scheme} URL needs a host (got {got})"
    elif " " in url:  # http.client refuses it when the download starts
        return f"an {scheme} URL cannot hold a space: write it %20 (got {got})"
    return None


def sha256_hex(v: Any) -> str | None:
    if v is None or re.fullmatch(r"[0-9a-fA-F]{64}", v):
        return None
    return "must be 64 hex digits, or null to skip verification"



@dataclass(frozen=True)
class DownloadParams:
    url: str
    sha256: str | None = field(default=None, metadata=check(sha256_hex))
    timeout: float = field(default=30.0, metadata=check(timeout_seconds))
    retries: int = field(default=3, metadata=check(non_negative))

    def validate(self, path: str) -> None:
        problem = url_problem(self.url)
        if problem:
            raise ParamsError(f"{path}.url: {problem}")


@dataclass(frozen=True)
class EncodeParams:
    val_fraction: float = field(default=0.05, metadata=check(fraction))
    test_fraction: float = field(default=0.05, metadata=check(fraction))

    def validate(self, path: str) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            raise ParamsError(
                f"{path}.val_fraction + {path}.test_fraction: must sum to < 1 (leaving a train "
                f"split), got {self.val_fraction} + {self.test_fraction}"
            )
        for key in ("val_fraction", "test_fraction"):
            if getattr(self, key) <= 0:
                raise ParamsError(f"{path}.{key}: must be > 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class NgramParams:
    orders: list[int] = field(default_factory=lambda: [4, 10])
    # kn: interpolated Kneser-Ney; mkn: modified KN (3 discounts); addk: add-k
    smoothing: Smoothing = "kn"
    add_k: float = field(default=0.01)
    # null: one discount per order, D = n1 / (n1 + 2 n2) (Ney et al.)
    discount: float | None = None

    def validate(self, path: str) -> None:
        if not self.orders:
            raise ParamsError(f"{path}.orders: must list at least one order")
        for i, o in enumerate(self.orders):
            if o < MIN_ORDER:
                raise ParamsError(f"{path}.orders[{i}]: must be >= {MIN_ORDER}, got {o}")
            if o > MAX_ORDER:
                raise ParamsError(f"{path}.orders[{i}]: must be at most {MAX_ORDER} (the table "
                                  f"grows with the order), got {o}")
        lo, hi = ADD_K_RANGE
        if not lo <= self.add_k <= hi:
            raise ParamsError(f"{path}.add_k: must be in [{lo:g}, {hi:g}] (beyond, probabilities "
                              f"underflow or the model is uniform), got {self.add_k}")
        if len(set(self.orders)) != len(self.orders):
            raise ParamsError(f"{path}.orders: must not repeat an order, got {self.orders}")
        # why these bounds, and why narrower than the library's: charlab.ngram_choices
        if self.discount is not None and not MIN_DISCOUNT <= self.discount < DISCOUNT_MAX:
            raise ParamsError(f"{path}.discount: must be in [{MIN_DISCOUNT:g}, "
                              f"{DISCOUNT_MAX:g}) or null, got {self.discount}")
