"""Tiny random LLaMAs for fast tests of whole-model code: ``TINY_SPEC`` (2 layers, d 64, GQA 4/2
heads of 16) and ``TINY64_SPEC`` (2 layers, d 128, 2 heads of 64 sharing one KV head, SmolLM2's
theta and eps: the RTL datapath's RoPE table and constants are SmolLM2's)."""
import torch

from airfoil.compiler.model import LoadedModel, ModelSpec

TINY_SPEC = ModelSpec(name="tiny", arch="llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128,
                      vocab=96, max_positions=256)


TINY64_SPEC = ModelSpec(name="tiny64", arch="llama", n_layers=2, d_model=128, n_heads=2, n_kv_heads=1, d_ff=256,
                        vocab=96, max_positions=256, rope_theta=100000.0, norm_eps=1e-5)


def tiny_llama(seed: int, spec: ModelSpec = TINY_SPEC) -> LoadedModel:
    """Random weights scaled like a trained model's (unit-variance outputs, gains near 1)."""
    g = torch.Generator().manual_seed(seed)
    d = spec.d_model
    w = {n: torch.randn(o, k, generator=g) / k ** 0.5 for n, (o, k) in spec.linear_shapes().items()}
    w["embed"] = w.pop("lm_head")
    for i in range(spec.n_layers):
        w[f"layers.{i}.attn_norm"] = 1 + 0.1 * torch.randn(d, generator=g)
        w[f"layers.{i}.ffn_norm"] = 1 + 0.1 * torch.randn(d, generator=g)
    w["final_norm"] = torch.ones(d)
    return LoadedModel(spec, w)
