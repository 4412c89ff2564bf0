"""Recovery after compression: distil the float model into the compressed one's scales.

Pruning and quantisation leave every kept code where SparseGPT/GPTQ put it; what recovery
learns is the continuous part of the storage format, so the result is still exactly the
hardware's format: each group scale (``S * 2^-E``, re-rounded to 16 bits at the end) and the
norm gains.  The loss is the KL divergence from the float model's next-token distribution to
the compressed model's (knowledge distillation), on the calibration tokens only, so the
compressed model is pulled towards the float model, not fitted to the evaluation text.

Both are multiplicative parameters (``scale = scale0 * exp(d)``), so one learning rate suits
layers whose scales differ by orders of magnitude.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from airfoil.compiler.compress import SCALE_BITS, CompressedLinear, RecoveryRecipe

__all__ = ["recover"]


def _requantise_scale(c: CompressedLinear, scale: torch.Tensor) -> CompressedLinear:
    """The learnt float scales as the storage format's 16-bit mantissas and one layer exponent."""
    s = scale.detach().to(torch.float64)
    smax = float(s.max())
    e = int(math.floor(math.log2(((1 << SCALE_BITS) - 1) / smax)))
    s_int = torch.clamp(torch.round(s * 2.0 ** e), 1, (1 << SCALE_BITS) - 1)
    return replace(c, scale=s_int.to(torch.int64).numpy().astype(np.uint16), scale_exp=e)


def recover(compressed, teacher_weights: dict[str, torch.Tensor], tokens: torch.Tensor, recipe: RecoveryRecipe,
            progress: Callable[[str], None] | None = None):
    """A copy of ``compressed`` (a CompressedModel) whose group scales and norm gains minimise
    KL(float model || compressed model) over ``tokens``, in ``recipe.steps`` Adam steps of one
    ``seq_len`` window each (windows taken in order, wrapping around)."""
    from airfoil.host.float_reference import FloatReference

    if recipe.steps <= 0:
        return compressed
    spec = compressed.spec
    teacher = FloatReference(spec, teacher_weights)
    student = FloatReference(spec, compressed.dequantised_weights())

    # fixed parts: the signed operands (codes - zero, masked) of every linear layer
    operands = {n: torch.from_numpy(c.operand().astype(np.float32)) for n, c in compressed.linears.items()}
    scale0 = {n: torch.from_numpy(c.scale.astype(np.float64) * 2.0 ** -c.scale_exp).float()
              for n, c in compressed.linears.items()}
    d_scale = {n: torch.zeros_like(s, requires_grad=True) for n, s in scale0.items()}
    gain0 = {n: g.detach().float().clone() for n, g in compressed.floats.items()}
    d_gain = {n: torch.zeros_like(g, requires_grad=True) for n, g in gain0.items()}
    opt = torch.optim.Adam([*d_scale.values(), *d_gain.values()], lr=recipe.lr)

    def build() -> None:
        for n, op in operands.items():
            gs = compressed.linears[n].group_size
            s = scale0[n] * torch.exp(d_scale[n])
            student.w[n] = op * torch.repeat_interleave(s, gs, dim=1)
        for n, g in gain0.items():
            student.w[n] = g * torch.exp(d_gain[n])

    def logits(ref: FloatReference, window: torch.Tensor) -> torch.Tensor:
        h = ref.w["embed"][window]
        for i in range(spec.n_layers):
            h = ref.layer(i, h, 0)
        return ref.head(h)

    n_windows = max(1, len(tokens) // recipe.seq_len)
    for step in range(recipe.steps):
        w0 = (step % n_windows) * recipe.seq_len
        window = tokens[w0:w0 + recipe.seq_len]
        with torch.no_grad():
            target = torch.log_softmax(logits(teacher, window), -1)
        build()
        out = torch.log_softmax(logits(student, window), -1)
        loss = torch.nn.functional.kl_div(out, target, log_target=True, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and (step % 8 == 0 or step == recipe.steps - 1):
            progress(f"recovery step {step + 1}/{recipe.steps}: KL {loss.item():.4f}")

    with torch.no_grad():
        linears = {n: _requantise_scale(c, scale0[n] * torch.exp(d_scale[n])) for n, c in compressed.linears.items()}
        floats = {n: (gain0[n] * torch.exp(d_gain[n])).detach() for n in gain0}
    meta = dict(compressed.metadata, recovery_steps=recipe.steps)
    return replace(compressed, linears=linears, floats=floats, metadata=meta)
