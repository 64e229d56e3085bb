import math

import numpy as np
import pytest

from charlab.lm import LanguageModel, Score, generate, score


class Bigram:
    """A hand-set bigram table over 3 ids: an exact, tiny LanguageModel."""

    vocab_size = 3

    def __init__(self):
        p = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])
        self.logp = np.log(p)
        self.first = np.log(np.array([0.2, 0.3, 0.5]))

    def num_params(self):
        return 9

    def log_probs(self, ids):
        ids = np.asarray(ids)
        return self.logp[ids[:-1], ids[1:]]

    def start(self, prime):
        return (self.logp[prime[-1]] if len(prime) else self.first), None

    def step(self, state, next_id):
        return self.logp[next_id], None


def test_protocol():
    assert isinstance(Bigram(), LanguageModel)


def test_score_by_hand():
    s = score(Bigram(), np.array([0, 1, 2, 2]))
    expected = -(math.log(0.25) + math.log(0.8) + math.log(1 / 3))
    assert s.count == 3
    assert s.nll == pytest.approx(expected / 3)
    assert s.bpc == pytest.approx(expected / 3 / math.log(2))
    assert s.perplexity == pytest.approx(math.exp(expected / 3))


def test_score_metrics_definitions():
    s = Score(nll_sum=2 * math.log(4), count=2)
    assert s.nll == pytest.approx(math.log(4))
    assert s.bpc == pytest.approx(2.0)
    assert s.perplexity == pytest.approx(4.0)


def test_score_too_short():
    with pytest.raises(ValueError, match="at least 2"):
        score(Bigram(), np.array([1]))


def test_generate_greedy_and_seeded():
    m = Bigram()
    assert list(generate(m, np.array([1]), 3, temperature=0)) == [2, 0, 0]
    a = list(generate(m, np.array([], dtype=np.int64), 50, seed=3))
    b = list(generate(m, np.array([], dtype=np.int64), 50, seed=3))
    assert a == b and set(a) <= {0, 1, 2}


def test_generate_top_k_one_is_greedy():
    m = Bigram()
    assert list(generate(m, np.array([1]), 5, top_k=1, seed=9)) == [2, 0, 0, 0, 0]


def test_generate_follows_distribution():
    # after id 1 the table says 2 with p=0.8
    m = Bigram()
    draws = [next(generate(m, np.array([1]), 1, seed=s)) for s in range(400)]
    assert 0.7 < draws.count(2) / 400 < 0.9


@pytest.mark.parametrize("temperature", [5e-324, 1e-310, 1e-300])
def test_a_tiny_temperature_samples_the_likeliest(temperature):
    """Towards 0 the draw tends to greedy (issue 12: below ~1e-308 every scaled logit was
    -inf and the draw NaN, which picked the last id)."""
    m = Bigram()
    for seed in range(5):
        # after 0 the likeliest is 0 (p = 0.5); after 1 it is 2 (p = 0.8)
        assert list(generate(m, np.array([0]), 4, temperature=temperature, seed=seed)) == [0] * 4
        assert next(generate(m, np.array([1]), 1, temperature=temperature, seed=seed)) == 2
