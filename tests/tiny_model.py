"""A tiny random LLaMA (2 layers, d 64, GQA 4/2 heads) for fast tests of whole-model code."""
import torch

from airfoil.compiler.model import LoadedModel, ModelSpec

TINY_SPEC = ModelSpec(name="tiny", arch="llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128,
                      vocab=96, max_positions=256)


def tiny_llama(seed: int) -> LoadedModel:
    """Random weights scaled like a trained model's (unit-variance outputs, gains near 1)."""
    g = torch.Generator().manual_seed(seed)
    d = TINY_SPEC.d_model
    w = {n: torch.randn(o, k, generator=g) / k ** 0.5 for n, (o, k) in TINY_SPEC.linear_shapes().items()}
    w["embed"] = w.pop("lm_head")
    for i in range(TINY_SPEC.n_layers):
        w[f"layers.{i}.attn_norm"] = 1 + 0.1 * torch.randn(d, generator=g)
        w[f"layers.{i}.ffn_norm"] = 1 + 0.1 * torch.randn(d, generator=g)
    w["final_norm"] = torch.ones(d)
    return LoadedModel(TINY_SPEC, w)
