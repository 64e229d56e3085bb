"""GPT sampling cost: KV-cached steps (charlab.families.gpt.GPTLM) against recomputing the
window for every character, in one process, on the same model and the same characters.

Usage: ``python bench/gpt_sample_bench.py [--layers 4 --hidden 128 --context 128 --chars 300]``
(random weights: the cost does not depend on them). Prints chars/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from charlab.families.gpt import GPT, GPTLM, GPTConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--chars", type=int, default=300)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, layers=args.layers, heads=args.heads,
                          hidden_size=args.hidden, context=args.context, dropout=0.0)).eval()
    lm = GPTLM(model, "cpu")
    ids = np.random.default_rng(0).integers(0, 65, args.chars)

    t = time.perf_counter()
    _, state = lm.start(ids[:1])
    for i in ids[1:]:
        _, state = lm.step(state, int(i))
    cached = time.perf_counter() - t

    t = time.perf_counter()
    with torch.inference_mode():
        for n in range(1, args.chars + 1):  # the window the cache would hold, from scratch
            window = state_window(n, args.context, lm.stride)
            model(torch.as_tensor(ids[n - window:n])[None])
    full = time.perf_counter() - t
    print(f"{args.layers} x {args.hidden}, context {args.context}, {args.chars} chars, "
          f"{torch.get_num_threads()} threads")
    print(f"KV cache   {args.chars / cached:10.0f} chars/s")
    print(f"recompute  {args.chars / full:10.0f} chars/s")
    print(f"ratio      {full / cached:10.2f}x")


def state_window(n: int, context: int, stride: int) -> int:
    """How many characters the sampler's window holds after reading n."""
    if n <= context:
        return n
    return context - stride + 1 + (n - context - 1) % stride


if __name__ == "__main__":
    main()
