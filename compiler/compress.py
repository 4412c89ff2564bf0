"""Compression: N:16 weight sparsity and mixed-precision group-wise weight quantisation.

Per linear layer a plan gives the kept count N of every 16 consecutive input weights
(N in {2,4,8,16}; 16 = dense), the code width b in {2,3,4,8}, and the method:

* ``magnitude``: keep the N largest |w| of each 16-block, round each group to nearest.
* ``sparsegpt``: the SparseGPT/OBS procedure (Frantar & Alistarh, 2023) with joint GPTQ
  quantisation: columns are visited left to right; each 16-block keeps the N weights of
  least saliency w^2 / [H^-1]_jj^2 loss, and the error of every pruned or rounded weight is
  spread over the not-yet-visited columns through the inverse Hessian of the layer input
  (H = 2 X^T X from calibration text, dampened by 1% of its mean diagonal).

The storage format (see docs/numerics.md, "Weights") is exactly what the hardware decodes:
``codes`` (b-bit, unsigned), ``zero`` per group (b-bit), ``scale`` per group as an unsigned
16-bit integer S with a per-layer exponent E, and a keep mask whose 4-bit positions are the
N:16 indices.  The weight value is  w = S * 2^-E * (code - zero)  where kept, else 0.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from airfoil.compiler.model import ModelSpec
from airfoil.config import LEGAL_SPARSE_N, LEGAL_WEIGHT_BITS, SPARSE_M, position_bits_per_block
from airfoil.errors import AirfoilError, read_yaml

__all__ = ["PlanError", "LayerRecipe", "CompressionPlan", "CompressedLinear", "compress_linear",
           "quantise_groups", "SCALE_BITS", "METHODS"]

SCALE_BITS = 16  # group scale mantissa S is an unsigned 16-bit integer
METHODS = ("magnitude", "sparsegpt")


class PlanError(AirfoilError):
    """A compression plan names a layer that does not exist or an unsupported setting."""


@dataclass(frozen=True)
class LayerRecipe:
    bits: int = 4
    n: int = 16  # kept weights per 16 (16 = dense)
    method: str = "sparsegpt"

    def check(self, where: str) -> None:
        if self.bits not in LEGAL_WEIGHT_BITS:
            raise PlanError(f"{where}: unsupported bit width {self.bits}; expected one of {list(LEGAL_WEIGHT_BITS)}")
        if self.n not in LEGAL_SPARSE_N:
            raise PlanError(f"{where}: unsupported N:16 pattern n={self.n}; expected one of {list(LEGAL_SPARSE_N)}")
        if self.method not in METHODS:
            raise PlanError(f"{where}: unknown method {self.method!r}; expected one of {list(METHODS)}")


@dataclass(frozen=True)
class RecoveryRecipe:
    """Distillation after compression (``compiler.recovery``): Adam steps over windows of the
    calibration tokens, learning group scales and norm gains; 0 steps = off."""

    steps: int = 0
    seq_len: int = 256
    lr: float = 1e-3

    @staticmethod
    def from_dict(data: Any, origin: str) -> "RecoveryRecipe":
        if not isinstance(data, dict):
            raise PlanError(f"{origin}: recovery must be a mapping of steps/seq_len/lr")
        unknown = set(data) - {"steps", "seq_len", "lr"}
        if unknown:
            raise PlanError(f"{origin}: unknown recovery field {sorted(unknown)[0]!r}; expected steps, seq_len, lr")
        r = RecoveryRecipe(**data)
        if not isinstance(r.steps, int) or r.steps < 0:
            raise PlanError(f"{origin}: recovery.steps {r.steps!r} must be a non-negative integer")
        if not isinstance(r.seq_len, int) or r.seq_len < 2:
            raise PlanError(f"{origin}: recovery.seq_len {r.seq_len!r} must be an integer >= 2")
        if not isinstance(r.lr, (int, float)) or not 0 < r.lr < 1:
            raise PlanError(f"{origin}: recovery.lr {r.lr!r} must be a number in (0, 1)")
        return r


@dataclass(frozen=True)
class CompressionPlan:
    """What each linear layer gets.  ``layers`` maps an exact name or a glob (``layers.*.ffn_up``)
    to recipe fields; later entries override earlier ones."""

    name: str = "default"
    group_size: int = 64
    default: LayerRecipe = LayerRecipe()
    layers: tuple[tuple[str, dict], ...] = ()
    calibration_tokens: int = 2048
    smooth_alpha: float = 0.5  # SmoothQuant migration strength; 0 = off
    sequential: bool = True  # calibrate block i on the outputs of compressed blocks 0..i-1
    recovery: RecoveryRecipe = RecoveryRecipe()

    @staticmethod
    def from_dict(data: Any, origin: str) -> "CompressionPlan":
        if not isinstance(data, dict):
            raise PlanError(f"{origin}: a plan is a YAML mapping")
        known = {"name", "group_size", "default", "layers", "calibration_tokens", "smooth_alpha", "sequential",
                 "recovery"}
        for k in data:
            if k not in known:
                raise PlanError(f"{origin}: unknown plan field {k!r}; expected {sorted(known)}")
        default = _recipe(data.get("default") or {}, LayerRecipe(), f"{origin}: default")
        layers = data.get("layers") or {}
        if not isinstance(layers, dict):
            raise PlanError(f"{origin}: field 'layers' must map layer names to recipes")
        entries = []
        for pat, fields_ in layers.items():
            if not isinstance(fields_, dict):
                raise PlanError(f"{origin}: layers[{pat!r}] must be a mapping of bits/n/method")
            _recipe(fields_, default, f"{origin}: layers[{pat!r}]")  # validate early
            entries.append((str(pat), dict(fields_)))
        gs = data.get("group_size", 64)
        if not isinstance(gs, int) or gs < SPARSE_M or gs % SPARSE_M:
            raise PlanError(f"{origin}: group_size {gs!r} must be a positive multiple of {SPARSE_M}")
        return CompressionPlan(name=str(data.get("name", Path(origin).stem)), group_size=gs, default=default,
                               layers=tuple(entries), calibration_tokens=int(data.get("calibration_tokens", 2048)),
                               smooth_alpha=_alpha(data.get("smooth_alpha", 0.5), origin),
                               sequential=bool(data.get("sequential", True)),
                               recovery=RecoveryRecipe.from_dict(data.get("recovery") or {}, origin))

    @staticmethod
    def load(path: str | Path) -> "CompressionPlan":
        return CompressionPlan.from_dict(read_yaml(path, PlanError, "plan"), str(path))

    def to_dict(self) -> dict:
        return {"name": self.name, "group_size": self.group_size, "calibration_tokens": self.calibration_tokens,
                "smooth_alpha": self.smooth_alpha, "sequential": self.sequential,
                "recovery": {"steps": self.recovery.steps, "seq_len": self.recovery.seq_len, "lr": self.recovery.lr},
                "default": {"bits": self.default.bits, "n": self.default.n, "method": self.default.method},
                "layers": {p: f for p, f in self.layers}}

    def needs_calibration(self, spec: ModelSpec) -> bool:
        return self.smooth_alpha > 0 or self.recovery.steps > 0 or any(r.method == "sparsegpt" for r in self.resolve(spec).values())

    def resolve(self, spec: ModelSpec) -> dict[str, LayerRecipe]:
        """The recipe of every linear layer of ``spec``; a pattern that matches nothing is an error."""
        names = list(spec.linear_shapes())
        out = {n: self.default for n in names}
        for pat, fields_ in self.layers:
            hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise PlanError(f"plan {self.name!r}: layer {pat!r} does not exist in model {spec.name!r} "
                                f"(layers are named like 'layers.0.attn_q', 'layers.3.ffn_down', 'lm_head')")
            for n in hits:
                out[n] = _recipe(fields_, out[n], f"plan {self.name!r}: layers[{pat!r}]")
        for n, (o, k) in spec.linear_shapes().items():
            if k % self.group_size:
                raise PlanError(f"plan {self.name!r}: layer {n!r} has {k} inputs, not a multiple of "
                                f"group_size {self.group_size}")
        return out


def _alpha(v: Any, origin: str) -> float:
    if not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise PlanError(f"{origin}: smooth_alpha {v!r} must be a number in [0, 1)")
    return float(v)


def _recipe(fields_: dict, base: LayerRecipe, where: str) -> LayerRecipe:
    if not isinstance(fields_, dict):
        raise PlanError(f"{where}: expected a mapping of bits/n/method")
    unknown = set(fields_) - {"bits", "n", "method"}
    if unknown:
        raise PlanError(f"{where}: unknown recipe field {sorted(unknown)[0]!r}; expected bits, n, method")
    r = LayerRecipe(bits=fields_.get("bits", base.bits), n=fields_.get("n", base.n),
                    method=fields_.get("method", base.method))
    r.check(where)
    return r


@dataclass
class CompressedLinear:
    """One compressed weight matrix [out, in], in the hardware's storage format."""

    bits: int
    n: int
    group_size: int
    codes: np.ndarray  # uint8 [O, K]; meaningful where mask
    mask: np.ndarray  # bool [O, K]; exactly n True per 16-block
    zero: np.ndarray  # uint8 [O, K/group]
    scale: np.ndarray  # uint16 [O, K/group]: S
    scale_exp: int  # E: group scale = S * 2^-E
    method: str = "magnitude"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def operand(self) -> np.ndarray:
        """The signed integer the weight decoder feeds the DSP chain: (code - zero) where kept, else 0."""
        z = np.repeat(self.zero.astype(np.int16), self.group_size, axis=1)
        return np.where(self.mask, self.codes.astype(np.int16) - z, 0).astype(np.int16)

    def dequantise(self) -> torch.Tensor:
        s = np.repeat(self.scale.astype(np.float64), self.group_size, axis=1) * 2.0 ** -self.scale_exp
        return torch.from_numpy((self.operand() * s).astype(np.float32))

    def storage_bits(self) -> int:
        """Bits the weight image holds: codes of kept weights, N:16 positions (indices or masks),
        scales and zeros."""
        o, k = self.shape
        kept = o * k * self.n // SPARSE_M
        position_bits = o * (k // SPARSE_M) * position_bits_per_block(self.n)
        groups = o * (k // self.group_size)
        return kept * self.bits + position_bits + groups * (SCALE_BITS + self.bits)


def quantise_groups(w: torch.Tensor, mask: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float scale and integer zero for each row of ``w`` [O, G] over the kept entries (asymmetric;
    8-bit codes are offset binary: zero fixed at 128, symmetric scale)."""
    qmax = (1 << bits) - 1
    big = torch.finfo(w.dtype).max
    if bits == 8:
        amax = torch.where(mask, w.abs(), torch.zeros_like(w)).amax(1)
        scale = torch.clamp(amax / 127.0, min=1e-12)
        return scale, torch.full_like(scale, 128.0)
    lo = torch.where(mask, w, torch.full_like(w, big)).amin(1).clamp(max=0.0)
    hi = torch.where(mask, w, torch.full_like(w, -big)).amax(1).clamp(min=0.0)
    scale = torch.clamp((hi - lo) / qmax, min=1e-12)
    zero = torch.clamp(torch.round(-lo / scale), 0, qmax)
    return scale, zero


def _n16_mask(saliency: torch.Tensor, n: int) -> torch.Tensor:
    """Keep the n most salient of each 16 consecutive columns (ties: the lower index)."""
    o, k = saliency.shape
    blocks = saliency.reshape(o, k // SPARSE_M, SPARSE_M)
    order = torch.argsort(blocks, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(blocks, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(o, k)


def compress_linear(w: torch.Tensor, recipe: LayerRecipe, group_size: int,
                    hessian: torch.Tensor | None = None, block: int = 128) -> CompressedLinear:
    """Compress one float weight [O, K].  ``hessian`` [K, K] is needed for ``sparsegpt``."""
    w = w.detach().to(torch.float64).clone()
    o, k = w.shape
    bits, n, gs = recipe.bits, recipe.n, group_size
    qmax = (1 << bits) - 1
    n_groups = k // gs
    scales = torch.zeros(o, n_groups, dtype=torch.float64)
    zeros = torch.zeros(o, n_groups, dtype=torch.float64)
    codes = torch.zeros(o, k, dtype=torch.float64)
    mask = torch.ones(o, k, dtype=torch.bool)

    use_obs = recipe.method == "sparsegpt" and hessian is not None
    if use_obs:
        h = hessian.to(torch.float64).clone()
        dead = torch.diag(h) == 0
        h[dead, dead] = 1.0
        w[:, dead] = 0.0
        damp = 0.01 * torch.mean(torch.diag(h))
        h += damp * torch.eye(k, dtype=torch.float64)
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    elif recipe.method == "sparsegpt":
        raise ValueError("sparsegpt needs a calibration Hessian")

    block = max(gs, (block // gs) * gs)
    for b0 in range(0, k, block):
        b1 = min(k, b0 + block)
        wb = w[:, b0:b1].clone()
        err = torch.zeros_like(wb)
        hb = hinv[b0:b1, b0:b1] if use_obs else None
        for j in range(b1 - b0):
            col = b0 + j
            if col % gs == 0:
                g = col // gs
                seg = wb[:, j:j + gs]
                if use_obs:
                    d = torch.diag(hb)[j:j + gs]
                    sal = seg ** 2 / d[None, :] ** 2
                else:
                    sal = seg.abs()
                m = _n16_mask(sal, n) if n < SPARSE_M else torch.ones_like(seg, dtype=torch.bool)
                mask[:, col:col + gs] = m
                s, z = quantise_groups(seg, m, bits)
                scales[:, g], zeros[:, g] = s, z
            g = col // gs
            x = wb[:, j]
            c = torch.clamp(torch.round(x / scales[:, g]) + zeros[:, g], 0, qmax)
            q = torch.where(mask[:, col], (c - zeros[:, g]) * scales[:, g], torch.zeros_like(x))
            codes[:, col] = c
            if use_obs:
                e = (x - q) / hb[j, j]
                wb[:, j:] -= e[:, None] * hb[j, j:][None, :]
                err[:, j] = e
        if use_obs and b1 < k:
            w[:, b1:] -= err @ hinv[b0:b1, b1:]

    # Integer scale: S = round(s * 2^E) with the largest E that keeps every S within 16 bits.
    smax = float(scales.max())
    e = int(math.floor(math.log2(((1 << SCALE_BITS) - 1) / smax))) if smax > 0 else 0
    s_int = torch.clamp(torch.round(scales * 2.0 ** e), 1, (1 << SCALE_BITS) - 1)
    # Codes were chosen against the float scale; re-round against the stored integer scale so the
    # stored codes are the nearest for what the hardware will actually multiply by.
    s_eff = torch.repeat_interleave(s_int * 2.0 ** -e, gs, dim=1)
    z_full = torch.repeat_interleave(zeros, gs, dim=1)
    target = torch.where(mask, (codes - z_full) * torch.repeat_interleave(scales, gs, dim=1), torch.zeros_like(codes))
    codes = torch.clamp(torch.round(target / s_eff) + z_full, 0, qmax)
    codes = torch.where(mask, codes, torch.zeros_like(codes))
    return CompressedLinear(bits=bits, n=n, group_size=gs, codes=codes.to(torch.uint8).numpy(),
                            mask=mask.numpy(), zero=zeros.to(torch.uint8).numpy(),
                            scale=s_int.to(torch.int64).numpy().astype(np.uint16), scale_exp=e,
                            method=recipe.method if use_obs else "magnitude")
