"""The tokenizer and chat template stored in a GGUF file."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["load_tokenizer", "quiet_transformers"]


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars (its GGUF conversion bar ignores its own switch)."""
    import logging
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


@lru_cache(maxsize=4)
def load_tokenizer(gguf_path: str | Path):
    """A ``transformers`` fast tokenizer built from the GGUF's own vocabulary and merges."""
    from transformers import AutoTokenizer

    quiet_transformers()
    p = Path(gguf_path)
    return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
