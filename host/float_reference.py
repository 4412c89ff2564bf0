"""Float32 reference of a LLaMA-architecture model (rung 1 of the verification ladder).

Written from the model definition, not from ``transformers``: the tests compare the two.
The same forward takes either the original weights or a compressed model's dequantised
weights (the "float simulation" of compression that the integer reference is measured against).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from airfoil.compiler.model import ModelSpec

__all__ = ["FloatReference", "FloatKVCache", "rope_tables"]


def rope_tables(spec: ModelSpec, positions: torch.Tensor, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [T, head_dim/2] for the rotate-half RoPE convention."""
    half = spec.head_dim // 2
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, half, dtype=torch.float64, device=positions.device) * 2
                                          / spec.head_dim))
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [heads, T, hd]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


@dataclass
class FloatKVCache:
    k: list[torch.Tensor] = field(default_factory=list)  # per layer [kv_heads, T, hd]
    v: list[torch.Tensor] = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.k else self.k[0].shape[1]


class FloatReference:
    """A float32 LLaMA forward with a KV cache.  ``weights`` uses Airfoil's canonical names."""

    def __init__(self, spec: ModelSpec, weights: dict[str, torch.Tensor], device: str | torch.device = "cpu"):
        if spec.arch != "llama":
            raise ValueError(f"FloatReference runs llama-architecture models, not {spec.arch!r}")
        self.spec = spec
        self.device = torch.device(device)
        self.w = {k: v.to(self.device, torch.float32) for k, v in weights.items()}
        if "lm_head" not in self.w:
            self.w["lm_head"] = self.w["embed"]

    def _norm(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.spec.norm_eps) * g

    # layer() and head() follow autograd when a weight requires grad (compiler.recovery trains
    # through them); forward() is the inference entry point and records no graph.
    def layer(self, i: int, h: torch.Tensor, start: int, cache: FloatKVCache | None = None,
              observe: Callable[[str, torch.Tensor], None] | None = None) -> torch.Tensor:
        """One transformer block on hidden states ``h`` [T, d] at positions start..start+T-1."""
        s, w = self.spec, self.w
        T = h.shape[0]
        hd, nh, nkv = s.head_dim, s.n_heads, s.n_kv_heads
        cos, sin = rope_tables(s, torch.arange(start, start + T, device=self.device))
        mask = torch.full((T, start + T), float("-inf"), device=self.device).triu(start + 1)
        p = f"layers.{i}."
        x = self._norm(h, w[p + "attn_norm"])
        if observe:
            observe(p + "attn_q", x)
        q = (x @ w[p + "attn_q"].T).view(T, nh, hd).transpose(0, 1)
        k = (x @ w[p + "attn_k"].T).view(T, nkv, hd).transpose(0, 1)
        v = (x @ w[p + "attn_v"].T).view(T, nkv, hd).transpose(0, 1)
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        if cache is not None:
            if len(cache.k) > i:
                k = torch.cat([cache.k[i], k], dim=1)
                v = torch.cat([cache.v[i], v], dim=1)
                cache.k[i], cache.v[i] = k, v
            else:
                cache.k.append(k)
                cache.v.append(v)
        rep = nh // nkv
        kk, vv = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
        att = (q @ kk.transpose(1, 2)) / hd ** 0.5 + mask
        o = (att.softmax(-1) @ vv).transpose(0, 1).reshape(T, nh * hd)
        if observe:
            observe(p + "attn_o", o)
        h = h + o @ w[p + "attn_o"].T
        x = self._norm(h, w[p + "ffn_norm"])
        if observe:
            observe(p + "ffn_gate", x)
        a = torch.nn.functional.silu(x @ w[p + "ffn_gate"].T) * (x @ w[p + "ffn_up"].T)
        if observe:
            observe(p + "ffn_down", a)
        return h + a @ w[p + "ffn_down"].T

    def head(self, h: torch.Tensor, observe: Callable[[str, torch.Tensor], None] | None = None) -> torch.Tensor:
        x = self._norm(h, self.w["final_norm"])
        if observe:
            observe("lm_head", x)
        return x @ self.w["lm_head"].T

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cache: FloatKVCache | None = None,
                observe: Callable[[str, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Logits [T, vocab] for ``tokens`` [T] following ``cache`` (which is extended).
        ``observe(layer_name, input)`` sees the input of every linear layer (for calibration)."""
        tokens = tokens.to(self.device)
        start = cache.length if cache is not None else 0
        h = self.w["embed"][tokens]
        for i in range(self.spec.n_layers):
            h = self.layer(i, h, start, cache, observe)
        return self.head(h, observe)
