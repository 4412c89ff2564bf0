"""Hugging Face ``transformers`` as the independent float reference (rung 1)."""
from __future__ import annotations

from pathlib import Path

import torch

from airfoil.compiler.model import LoadedModel

__all__ = ["load_hf_causal_lm", "load_model_tokenizer"]


def _quiet() -> None:
    import logging
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF conversion bar ignores its own switch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def load_hf_causal_lm(model: LoadedModel, device: torch.device | str = "cpu"):
    """``LlamaForCausalLM`` loaded by transformers itself from the same file, in float32."""
    from transformers import AutoModelForCausalLM

    _quiet()
    src = Path(model.source)
    if src.is_dir():
        hf = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    else:
        hf = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    return hf.eval().to(device)


def load_model_tokenizer(model: LoadedModel):
    """The model's own tokenizer: from the GGUF's vocabulary, or the folder's tokenizer files."""
    src = Path(model.source)
    if src.is_dir():
        from transformers import AutoTokenizer

        _quiet()
        return AutoTokenizer.from_pretrained(str(src))
    from airfoil.compiler.tokenizer import load_tokenizer

    return load_tokenizer(src)
