"""Offline text: evaluation and calibration tokens from Python's own ``pydoc_data.topics``.

Evaluation takes the first N tokens of the corpus; calibration takes tokens from its end, so
the two never overlap (for N up to half the corpus, checked)."""
from __future__ import annotations

from pathlib import Path

import torch

from airfoil.errors import AirfoilError

__all__ = ["corpus_text", "eval_tokens", "calibration_tokens"]


def corpus_text(text_file: str | Path | None = None) -> str:
    if text_file is not None:
        try:
            return Path(text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AirfoilError(f"--text-file {text_file}: cannot read UTF-8 text ({e})") from None
    import pydoc_data.topics as topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics))


def _all_tokens(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)


def eval_tokens(tokenizer, n: int, text_file: str | Path | None = None) -> torch.Tensor:
    text = corpus_text(text_file)
    # tokenise only a prefix long enough (about 3 characters per token) to keep this fast
    ids = _all_tokens(tokenizer, text[: max(4096, 8 * n)])
    if len(ids) < n:
        ids = _all_tokens(tokenizer, text)
    if len(ids) < n:
        raise AirfoilError(f"evaluation text has {len(ids)} tokens, fewer than the {n} asked for")
    return ids[:n]


def calibration_tokens(tokenizer, n: int) -> torch.Tensor:
    text = corpus_text()
    tail = text[-max(8192, 8 * n):]
    ids = _all_tokens(tokenizer, tail)
    if len(ids) < n:
        raise AirfoilError(f"calibration text has {len(ids)} tokens, fewer than {n}")
    return ids[-n:]
