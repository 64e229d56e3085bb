"""Character n-gram models: the lecture's count table, fast, smoothed for scoring.

One module per job:

* :mod:`~charlab.ngram.windows`: windows of text as int64 numbers, history states;
* :mod:`~charlab.ngram.counting`: fitting, every window of a text counted in chunks;
* :mod:`~charlab.ngram.tables`: the stored tables, one lookup interface over both keys;
* :mod:`~charlab.ngram.smoothing`: Kneser-Ney, modified KN and add-k scoring;
* :mod:`~charlab.ngram.sampling`: the unsmoothed ML model with backoff, ``ngram show``;
* :mod:`~charlab.ngram.fileformat`: the ``.npz`` file, checked on load;
* :mod:`~charlab.ngram.ngramlm`: :class:`NGramLM`, the LanguageModel over them.

The params choices (smoothing names, discount range, order bound) live in
:mod:`charlab.ngram_choices`, shared with :mod:`charlab.params`.
"""

from charlab.ngram.counting import DEFAULT_CHUNK
from charlab.ngram.fileformat import FORMAT, VERSION, NGramFileError
from charlab.ngram.ngramlm import SCORE_BLOCK, NGramLM
from charlab.ngram.sampling import format_distribution
from charlab.ngram.smoothing import BackoffLevel
from charlab.ngram.tables import Tables
from charlab.ngram.windows import INT64_MAX
from charlab.ngram_choices import SMOOTHINGS, Smoothing

__all__ = ["DEFAULT_CHUNK", "FORMAT", "INT64_MAX", "SCORE_BLOCK", "SMOOTHINGS", "VERSION",
           "BackoffLevel", "NGramFileError", "NGramLM", "Smoothing", "Tables",
           "format_distribution"]
