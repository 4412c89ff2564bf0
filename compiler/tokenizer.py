"""The tokenizer and chat template stored in a GGUF file."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["load_tokenizer"]


@lru_cache(maxsize=4)
def load_tokenizer(gguf_path: str | Path):
    """A ``transformers`` fast tokenizer built from the GGUF's own vocabulary and merges."""
    import logging

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    p = Path(gguf_path)
    return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
