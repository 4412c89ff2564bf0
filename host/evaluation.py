"""Perplexity, greedy decoding and the measurements behind ``airfoil eval``."""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator

import torch

from airfoil.errors import AirfoilError

__all__ = ["perplexity", "windows", "greedy_generate", "evaluate"]

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def windows(tokens: torch.Tensor, window: int) -> Iterator[torch.Tensor]:
    """Independent scoring windows of up to ``window`` + 1 tokens (inputs plus the next token)."""
    for s in range(0, len(tokens) - 1, window):
        chunk = tokens[s:s + window + 1]
        if len(chunk) >= 2:
            yield chunk


def nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
    logp = torch.log_softmax(logits.to(torch.float64).cpu(), dim=-1)
    return -logp.gather(1, targets.cpu()[:, None]).sum().item()


def perplexity(logits_fn: LogitsFn, tokens: torch.Tensor, window: int = 1024) -> float:
    """exp(mean NLL) of predicting tokens[1:], scored in independent windows of ``window`` tokens."""
    nll, count = 0.0, 0
    for chunk in windows(tokens, window):
        nll += nll_sum(logits_fn(chunk[:-1]), chunk[1:])
        count += len(chunk) - 1
    return math.exp(nll / count)


def greedy_generate(step: LogitsFn, prompt: torch.Tensor, n: int, stop: int | None = None) -> list[int]:
    """Greedy decoding: ``step(tokens)`` returns logits for the new tokens (it keeps its own cache)."""
    out: list[int] = []
    logits = step(prompt)
    for _ in range(n):
        t = int(torch.argmax(logits[-1]).item())
        out.append(t)
        if stop is not None and t == stop:
            break
        logits = step(torch.tensor([t]))
    return out


def evaluate(model_name: str, compressed: str | None = None, n_tokens: int = 1024, text_file: str | None = None,
             device: str | None = None, integer: bool = True, window: int = 1024,
             progress: Callable[[str], None] = lambda m: None) -> dict:
    """The figures of ``airfoil eval`` (see its help)."""
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.compiler.model import load_model
    from airfoil.host.float_reference import FloatReference
    from airfoil.host.hf_reference import load_hf_causal_lm, load_model_tokenizer
    from airfoil.host.integer_reference import IntegerReference, default_device
    from airfoil.host.text import eval_tokens

    if n_tokens < 2:
        raise AirfoilError(f"--tokens {n_tokens}: need at least 2 tokens")
    t0 = time.time()
    dev = torch.device(device) if device else default_device()
    cm = CompressedModel.load(compressed) if compressed else None  # a corrupt file fails before any work
    progress(f"load {model_name}")
    model = load_model(model_name)
    if cm is not None and cm.spec.to_dict() | {"name": ""} != model.spec.to_dict() | {"name": ""}:
        raise AirfoilError(f"--compressed {compressed}: compressed from a model of another shape than {model_name!r}")
    tokens = eval_tokens(load_model_tokenizer(model), n_tokens, text_file)
    progress("run transformers and the float reference")
    hf = load_hf_causal_lm(model, dev)
    ref = FloatReference(model.spec, model.weights, dev)
    nll_hf = nll_float = 0.0
    max_diff = 0.0
    count = 0
    with torch.no_grad():
        for chunk in windows(tokens, window):
            x = chunk[:-1].to(dev)
            lh = hf(x[None]).logits[0].float()
            lf = ref.forward(x)
            max_diff = max(max_diff, (lh - lf).abs().max().item())
            nll_hf += nll_sum(lh, chunk[1:])
            nll_float += nll_sum(lf, chunk[1:])
            count += len(chunk) - 1
    del hf
    out = {"model": model_name, "tokens": int(len(tokens)), "ppl_hf": math.exp(nll_hf / count),
           "ppl_float": math.exp(nll_float / count), "max_abs_logit_diff_vs_hf": max_diff}
    if cm is not None:
        progress("run the compressed model's float simulation")
        sim = FloatReference(cm.spec, cm.dequantised_weights(), dev)
        out["ppl_compressed"] = perplexity(sim.forward, tokens, window)
        out["ppl_ratio_vs_float"] = out["ppl_compressed"] / out["ppl_float"]
        if integer:
            progress(f"run the integer reference on {dev}")
            ir = IntegerReference(cm, dev)
            nll_int, agree, gap = 0.0, 0, 0.0
            for chunk in windows(tokens, window):
                li = ir.logits_float(chunk[:-1])
                ls = sim.forward(chunk[:-1].to(dev)).to(torch.float64)
                nll_int += nll_sum(li, chunk[1:])
                agree += int((li.argmax(-1) == ls.argmax(-1)).sum())
                gap = max(gap, (li - ls).abs().max().item())
            out["ppl_integer"] = math.exp(nll_int / count)
            out["integer_vs_float_sim"] = {"max_abs_logit_diff": gap, "top1_agreement": agree / count,
                                           "ppl_ratio": out["ppl_integer"] / out["ppl_compressed"]}
        out["effective_bits_per_weight"] = cm.effective_bits_per_weight()
        out["sparsity"] = cm.sparsity()
        out["plan"] = cm.plan.name
    else:
        out["effective_bits_per_weight"] = None
        out["sparsity"] = 0.0
    out["device"] = str(dev)
    out["seconds"] = round(time.time() - t0, 1)
    return out
