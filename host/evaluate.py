"""Perplexity and logit comparisons used by ``airfoil eval`` and the tests."""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["perplexity", "greedy_generate"]


def perplexity(logits_fn: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, window: int = 1024) -> float:
    """exp(mean NLL) of predicting tokens[1:], scored in independent windows of ``window`` tokens."""
    nll, count = 0.0, 0
    for s in range(0, len(tokens) - 1, window):
        chunk = tokens[s:s + window + 1]
        if len(chunk) < 2:
            break
        logits = logits_fn(chunk[:-1]).to(torch.float64).cpu()
        logp = torch.log_softmax(logits, dim=-1)
        nll -= logp.gather(1, chunk[1:, None].cpu()).sum().item()
        count += len(chunk) - 1
    return math.exp(nll / count)


def greedy_generate(step: Callable[[torch.Tensor], torch.Tensor], prompt: torch.Tensor, n: int,
                    stop: int | None = None) -> list[int]:
    """Greedy decoding: ``step(tokens)`` returns logits for the new tokens given its own cache."""
    out: list[int] = []
    logits = step(prompt)
    for _ in range(n):
        t = int(torch.argmax(logits[-1]).item())
        out.append(t)
        if stop is not None and t == stop:
            break
        logits = step(torch.tensor([t]))
    return out
