"""charlab: train and compare character-level language models on a corpus."""

__version__ = "0.1.0"
