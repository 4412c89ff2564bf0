"""The integer reference: a compressed model run with exactly the arithmetic of docs/numerics.md.

Rung 2 of the verification ladder.  All tensors are int64 holding the integers the hardware
holds.  GEMMs are float64 matrix products of integer-valued tensors whose partial sums stay
below 2^53, so they are exact in any summation order: CUDA and CPU give the same integers.
Everything else is integer add / multiply / shift / compare / floor-divide.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from airfoil import numerics as nx
from airfoil.compiler.compress import CompressedLinear
from airfoil.compiler.compressed_model import CompressedModel

__all__ = ["IntegerKernels", "IntegerReference", "IntKVCache", "rshift_round", "block_quantise", "isqrt", "bitlen",
           "default_device"]

Trace = Callable[[int, str, torch.Tensor], None]  # (layer, op, integer tensor)


def default_device() -> torch.device:
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


# ---------------------------------------------------------------------------------- primitives
def rshift_round(x: torch.Tensor, s: torch.Tensor | int) -> torch.Tensor:
    """floor((x + 2^(s-1)) / 2^s) for s > 0, x * 2^-s for s <= 0 (s broadcast against x)."""
    s = torch.as_tensor(s, dtype=torch.int64, device=x.device).clamp(max=nx.MAX_SHIFT)
    pos = s.clamp(min=0)
    half = torch.where(pos > 0, torch.ones_like(pos) << (pos - 1).clamp(min=0), torch.zeros_like(pos))
    right = (x + half) >> pos
    left = x << (-s).clamp(min=0)
    return torch.where(s > 0, right, left)


def sat(x: torch.Tensor, bits: int) -> torch.Tensor:
    return x.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


_POW2 = {}


def bitlen(x: torch.Tensor) -> torch.Tensor:
    """Bit length of non-negative int64 values, by exact comparisons."""
    key = x.device
    if key not in _POW2:
        _POW2[key] = torch.tensor([1 << k for k in range(63)], dtype=torch.int64, device=x.device)
    return (x.unsqueeze(-1) >= _POW2[key]).sum(-1)


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) for 0 <= n < 2^62: a double-precision guess, then exact integer fix-ups."""
    r = torch.sqrt(n.to(torch.float64)).to(torch.int64)
    for _ in range(2):
        r = torch.where(r * r > n, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


def block_quantise(v: torch.Tensor, frac: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bq(v, F) over the last dimension: (int8 values as int64, exponent per row)."""
    a = v.abs().amax(-1)
    s = bitlen(a) - 7
    s = torch.where(rshift_round(a, s) > 127, s + 1, s)
    s = torch.where(a == 0, torch.zeros_like(s), s)
    q = sat(rshift_round(v, s.unsqueeze(-1)), 8)
    return q, s - frac


def _exact_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Integer a [.., M, K] @ b [.., K, N] via float64 (exact: all partial sums < 2^53)."""
    return torch.matmul(a.to(torch.float64), b.to(torch.float64)).round().to(torch.int64)


# ---------------------------------------------------------------------------------- weights
@dataclass
class _DeviceLinear:
    """A compressed weight as the GEMM needs it: w8 * S per element (an integer < 2^25)."""

    ws: torch.Tensor  # int64 [K, O]: w8[o,k] * S[o, k // group] (transposed)
    exp: int  # E
    w8: torch.Tensor | None = None  # int64 [O, K] (kept only for the embedding)
    scale: torch.Tensor | None = None  # int64 [O, G]
    group_size: int = 0

    @staticmethod
    def build(c: CompressedLinear, device: torch.device, keep_rows: bool = False) -> "_DeviceLinear":
        w8 = torch.from_numpy(c.operand().astype(np.int64))
        s = torch.from_numpy(c.scale.astype(np.int64))
        ws = w8 * torch.repeat_interleave(s, c.group_size, dim=1)
        return _DeviceLinear(ws=ws.T.contiguous().to(device), exp=c.scale_exp,
                             w8=w8.to(device) if keep_rows else None, scale=s.to(device) if keep_rows else None,
                             group_size=c.group_size)


@dataclass
class IntKVCache:
    """Per layer: K and V as scaled INT8 rows [kv_heads, T, hd] with exponents [kv_heads, T]."""

    k: list[torch.Tensor] = field(default_factory=list)
    ek: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)
    ev: list[torch.Tensor] = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.k else int(self.k[0].shape[1])

    def append(self, layer: int, k, ek, v, ev) -> None:
        if len(self.k) > layer:
            self.k[layer] = torch.cat([self.k[layer], k], 1)
            self.ek[layer] = torch.cat([self.ek[layer], ek], 1)
            self.v[layer] = torch.cat([self.v[layer], v], 1)
            self.ev[layer] = torch.cat([self.ev[layer], ev], 1)
        else:
            self.k.append(k), self.ek.append(ek), self.v.append(v), self.ev.append(ev)


class IntegerKernels:
    """The integer stages of docs/numerics.md with their tables, for any model of ``spec``: the
    integer reference composes them into a model; the functional simulator runs them per instruction."""

    def __init__(self, spec, device: str | torch.device | None = None, max_positions: int = 8192):
        self.spec = spec
        self.device = torch.device(device) if device is not None else default_device()
        dev = self.device
        self.eps_q = nx.eps_q(spec.norm_eps)
        self.c_qk = nx.c_qk(spec.head_dim)
        self.exp2 = torch.from_numpy(nx.exp2_table()).to(dev)
        self.sig = torch.from_numpy(nx.sigmoid_table()).to(dev)
        self.max_positions = min(max_positions, spec.max_positions)
        cos, sin = nx.rope_table(spec.head_dim, spec.rope_theta, self.max_positions)
        self.rope_c, self.rope_s = torch.from_numpy(cos).to(dev), torch.from_numpy(sin).to(dev)

    # ------------------------------------------------------------------ stages (docs/numerics.md)
    @staticmethod
    def requantise(y: torch.Tensor, scale_exp: int, e: torch.Tensor, frac: int, where: str = "linear") -> torch.Tensor:
        """GEMM sums (of w8 * S) to INT32 fixed point with ``frac`` fraction bits."""
        if int(y.abs().max()) >= 1 << (nx.ACC_BITS - 1):
            raise OverflowError(f"{where}: accumulator exceeds {nx.ACC_BITS} bits")
        return sat(rshift_round(y, scale_exp - e.unsqueeze(-1) - frac), 32)

    def rmsnorm(self, h: torch.Tensor, gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = h.shape[-1]
        p = (bitlen(h.abs().amax(-1)) - 24).clamp(min=0)
        hs = rshift_round(h, p.unsqueeze(-1))
        ms = torch.div((hs * hs).sum(-1), d, rounding_mode="floor")
        r = isqrt(ms + (self.eps_q >> (2 * p))).clamp(min=1)
        inv = torch.div(torch.full_like(r, 1 << nx.INV_RMS_SHIFT), r, rounding_mode="floor")
        z = rshift_round(hs * inv.unsqueeze(-1), nx.INV_RMS_SHIFT - nx.FRAC_N)
        u = rshift_round(z * gain, nx.FRAC_G)
        return block_quantise(u, nx.FRAC_N)

    def rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [heads, T, hd] in A format."""
        half = x.shape[-1] // 2
        c, s = self.rope_c[positions], self.rope_s[positions]  # [T, half]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([sat(rshift_round(x1 * c - x2 * s, nx.ROPE_FRAC), 32),
                          sat(rshift_round(x2 * c + x1 * s, nx.ROPE_FRAC), 32)], -1)

    def attention(self, q8, eq, k8, ek, v8, ev, start: int) -> torch.Tensor:
        """q8 [nh, T, hd], eq [nh, T]; k8/v8 [nkv, L, hd], ek/ev [nkv, L].  Returns A [T, nh*hd]."""
        nh, T, hd = q8.shape
        rep = nh // k8.shape[0]
        k8, ek = k8.repeat_interleave(rep, 0), ek.repeat_interleave(rep, 0)
        v8, ev = v8.repeat_interleave(rep, 0), ev.repeat_interleave(rep, 0)
        L = k8.shape[1]
        dot = _exact_matmul(q8, k8.transpose(1, 2))  # [nh, T, L]
        allowed = torch.arange(L, device=dot.device)[None, :] <= (start + torch.arange(T, device=dot.device))[:, None]
        qp, ep, ev_max, inv = self.attention_probabilities(dot, eq, ek, ev, allowed)
        acc = _exact_matmul(qp, v8)  # [nh, T, hd]
        out = sat(rshift_round(acc * inv, nx.INV_SUM_SHIFT - ep.unsqueeze(-1) - ev_max - nx.FRAC_A), 32)
        return out.transpose(0, 1).reshape(T, nh * hd)

    def attention_probabilities(self, dot, eq, ek, ev, allowed):
        """The softmax of attention on integer scores ``dot`` [.., T, L] (Q.K^T), with the query
        exponents eq [.., T], the keys' and values' ek, ev [.., L] and the causal ``allowed``
        [T, L]: the INT8 probabilities qp with their exponent ep [.., T], ev_max [.., T, 1] (the
        values' exponents folded in) and inv = 2^40 // sum p [.., T, 1] for the P.V result."""
        shift = 15 - eq.unsqueeze(-1) - ek.unsqueeze(-2) - nx.FRAC_S
        x = rshift_round(dot * self.c_qk, shift)
        neg = torch.iinfo(torch.int64).min // 4
        x = torch.where(allowed, x, torch.full_like(x, neg))
        m = x.amax(-1, keepdim=True)
        dlt = m - x
        n = dlt >> nx.FRAC_S
        f = dlt & ((1 << nx.FRAC_S) - 1)
        p = torch.where((n <= 31) & allowed, self.exp2[f] >> n.clamp(max=31), torch.zeros_like(dlt))
        ev_b = torch.where(allowed, ev.unsqueeze(-2).expand_as(x), torch.full_like(x, -(1 << 20)))
        ev_max = ev_b.amax(-1, keepdim=True)
        p2 = rshift_round(p, ev_max - ev_b)
        total = p.sum(-1, keepdim=True)
        qp, ep = block_quantise(p2, 0)
        inv = torch.div(torch.full_like(total, 1 << nx.INV_SUM_SHIFT), total, rounding_mode="floor")
        return qp, ep, ev_max, inv

    def silu_mul(self, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = rshift_round(gate, nx.FRAC_A - nx.SIG_IN_FRAC).clamp(-nx.SIG_RANGE, nx.SIG_RANGE - 1)
        silu = rshift_round(gate * self.sig[i + nx.SIG_RANGE], nx.PROB_FRAC)
        return block_quantise(silu * up, 2 * nx.FRAC_A)


class IntegerReference(IntegerKernels):
    """Runs a :class:`CompressedModel` in integers on ``device`` (CUDA when present, else CPU)."""

    def __init__(self, model: CompressedModel, device: str | torch.device | None = None, max_positions: int = 8192):
        spec = model.spec
        if spec.arch != "llama":
            raise ValueError(f"the integer reference runs llama-architecture models, not {spec.arch!r}")
        super().__init__(spec, device, max_positions)
        self.model = model
        dev = self.device
        self.lin = {n: _DeviceLinear.build(c, dev) for n, c in model.linears.items()}
        self.embed = _DeviceLinear.build(model.embedding, dev, keep_rows=True)
        self.gain = {n: torch.from_numpy(nx.gain_q(t.numpy())).to(dev) for n, t in model.floats.items()
                     if n.endswith("norm")}

    def linear(self, name: str, q: torch.Tensor, e: torch.Tensor, frac: int) -> torch.Tensor:
        lin = self.lin[name]
        return self.requantise(_exact_matmul(q, lin.ws), lin.exp, e, frac, name)

    def embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.embed
        s = torch.repeat_interleave(emb.scale[tokens], emb.group_size, dim=1)
        return sat(rshift_round(emb.w8[tokens] * s, emb.exp - nx.FRAC_H), 32)

    # ------------------------------------------------------------------ the model
    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cache: IntKVCache | None = None,
                trace: Trace | None = None) -> torch.Tensor:
        """Integer logits [T, vocab] (FRAC_L) for ``tokens`` following ``cache`` (extended in place)."""
        s = self.spec
        dev = self.device
        tokens = tokens.to(dev)
        T = int(tokens.shape[0])
        cache = cache if cache is not None else IntKVCache()
        start = cache.length
        if start + T > self.max_positions:
            raise ValueError(f"position {start + T} exceeds the {self.max_positions} positions of the RoPE table")
        pos = torch.arange(start, start + T, device=dev)
        nh, nkv, hd = s.n_heads, s.n_kv_heads, s.head_dim
        h = self.embedding(tokens)
        if trace:
            trace(-1, "embed", h)
        for i in range(s.n_layers):
            p = f"layers.{i}."
            xq, xe = self.rmsnorm(h, self.gain[p + "attn_norm"])
            q = self.linear(p + "attn_q", xq, xe, nx.FRAC_A).view(T, nh, hd).transpose(0, 1)
            k = self.linear(p + "attn_k", xq, xe, nx.FRAC_A).view(T, nkv, hd).transpose(0, 1)
            v = self.linear(p + "attn_v", xq, xe, nx.FRAC_A).view(T, nkv, hd).transpose(0, 1)
            q8, eq = block_quantise(self.rope(q, pos), nx.FRAC_A)
            k8, ek = block_quantise(self.rope(k, pos), nx.FRAC_A)
            v8, ev = block_quantise(v, nx.FRAC_A)
            cache.append(i, k8, ek, v8, ev)
            o = self.attention(q8, eq, cache.k[i], cache.ek[i], cache.v[i], cache.ev[i], start)
            if trace:
                trace(i, "attention", o)
            oq, oe = block_quantise(o, nx.FRAC_A)
            h = sat(h + self.linear(p + "attn_o", oq, oe, nx.FRAC_H), 32)
            if trace:
                trace(i, "attn_residual", h)
            xq, xe = self.rmsnorm(h, self.gain[p + "ffn_norm"])
            gate = self.linear(p + "ffn_gate", xq, xe, nx.FRAC_A)
            up = self.linear(p + "ffn_up", xq, xe, nx.FRAC_A)
            aq, ae = self.silu_mul(gate, up)
            h = sat(h + self.linear(p + "ffn_down", aq, ae, nx.FRAC_H), 32)
            if trace:
                trace(i, "ffn_residual", h)
        xq, xe = self.rmsnorm(h, self.gain["final_norm"])
        logits = self.linear("lm_head", xq, xe, nx.FRAC_L)
        if trace:
            trace(s.n_layers, "logits", logits)
        return logits

    def logits_float(self, tokens: torch.Tensor, cache: IntKVCache | None = None) -> torch.Tensor:
        return self.forward(tokens, cache).to(torch.float64) / 2.0 ** nx.FRAC_L
