"""Hugging Face ``transformers`` as the independent float reference (rung 1)."""
from __future__ import annotations

from pathlib import Path

import torch

from airfoil.compiler.model import LoadedModel
from airfoil.compiler.tokenizer import load_tokenizer, quiet_transformers

__all__ = ["load_hf_causal_lm", "load_model_tokenizer"]


def load_hf_causal_lm(model: LoadedModel, device: torch.device | str = "cpu"):
    """``LlamaForCausalLM`` loaded by transformers itself from the same file, in float32."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
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

        quiet_transformers()
        return AutoTokenizer.from_pretrained(str(src))
    return load_tokenizer(src)
