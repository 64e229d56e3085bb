"""The n-gram choices a params file can make, defined once for ``params.py`` and the model.

``charlab.params`` (imported by every stage) and ``charlab.ngram`` both read these, so this
module imports nothing: it stays outside the ``charlab.ngram`` package because importing any
module of a package first runs the package's ``__init__`` (numpy and every table module).
"""

from __future__ import annotations

from typing import Literal, get_args

# kn: interpolated Kneser-Ney; mkn: modified KN (3 discounts); addk: add-k
Smoothing = Literal["kn", "mkn", "addk"]
SMOOTHINGS: tuple[str, ...] = get_args(Smoothing)

MIN_ORDER = 0  # the history length: order 0 is the unigram model
MAX_ORDER = 64  # params' bound: the tables grow with the order (order 10**5 hung the fit)
# params' bounds on add-k's k: beyond, probabilities underflow or the model is uniform
ADD_K_RANGE = (1e-10, 1e6)

# A Kneser-Ney discount D is subtracted from each count: the model is defined for D in
# [DISCOUNT_MIN, DISCOUNT_MAX]. The pipeline's ngram.discount takes [MIN_DISCOUNT, 1):
# D = 0 gives an unseen character probability 0 (an infinite test perplexity), and D = 1
# leaves a singleton window no weight of its own. The library accepts both ends (a caller
# may want them, e.g. to reproduce another toolkit).
DISCOUNT_MIN, DISCOUNT_MAX = 0.0, 1.0
# the pipeline's lower bound: a discount below it is, for scoring, a zero one
MIN_DISCOUNT = 1e-3


def discount_in_range(d: float, *, open_interval: bool = False) -> bool:
    if open_interval:
        return DISCOUNT_MIN < d < DISCOUNT_MAX
    return DISCOUNT_MIN <= d <= DISCOUNT_MAX
