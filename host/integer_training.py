"""Sub-8-bit integer training: ShiftQuant GEMMs and L1 normalisation (docs/integer-training.md).

ShiftQuant quantises a GEMM operand to b-bit symmetric integers with one tensor scale and, per
channel along the GEMM's *reduction* dimension, a power-of-two factor chosen by the channel's
range.  The training layers also give each row along the *other* dimension its own factor
(``per_row``): it multiplies a whole row of the GEMM's result, after the integer sums, so the
integer GEMM does not change.  Channels with the same factor form a group; the GEMM accumulates each group's products
in its own accumulator (the group id is a per-channel tag, so no channel is moved) and adds the
group sums after shifting them into alignment.  Every step is integer and exact.

The training layers here (``ShiftQuantLinear``, ``L1LayerNorm``) are PyTorch autograd
functions whose forward, backward-data and backward-weight GEMMs are these integer GEMMs; the
RTL datapaths are checked bit for bit against the same functions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ShiftQuantized", "shift_quantise", "tensor_quantise", "shift_gemm", "tile_tags", "forward_operands",
           "gradient_quantise", "ShiftQuantLinear", "l1_norm_forward", "l1_norm_backward", "l1_batch_norm_forward",
           "l1_batch_norm_backward", "linear_l1_training_step", "norm_input", "gradient_value",
           "L1_FRAC", "MAX_GROUPS"]

MAX_GROUPS = 4  # power-of-two factors 2^0 .. 2^-3: a 2-bit group tag per channel
L1_FRAC = 12  # fraction bits of the L1 norm's fixed-point values


@dataclass
class ShiftQuantized:
    """``value ~= q * scale * 2^-group[k]`` along the reduction axis (the last one)."""

    q: torch.Tensor  # int64, |q| <= 2^(b-1) - 1
    scale: float  # tensor scale
    group: torch.Tensor  # int64 [K], or [M, K] where each tile of rows has its own (row_tile); 0 .. groups-1
    groups: int = MAX_GROUPS  # how many power-of-two factors the format has (1: per-tensor)
    row_scale: torch.Tensor | None = None  # [M] float64: each row's own factor (per_row), else None

    def row_group(self, i: int) -> torch.Tensor:
        """Row i's group tags [K]: the tags the GEMM tile takes with row i's operands."""
        return self.group[i] if self.group.dim() == 2 else self.group

    def dequantise(self) -> torch.Tensor:
        v = self.q.to(torch.float64) * self.scale * torch.pow(2.0, -self.group.to(torch.float64))
        return v if self.row_scale is None else v * self.row_scale[:, None]


def _round(x: torch.Tensor, stochastic: bool, gen: torch.Generator | None) -> torch.Tensor:
    if not stochastic:
        return torch.round(x)  # nearest, ties to even
    u = torch.rand(x.shape, generator=gen, dtype=torch.float64, device=x.device)
    return torch.floor(x + u)


def shift_quantise(x: torch.Tensor, bits: int, stochastic: bool = False, gen: torch.Generator | None = None,
                   groups: int = MAX_GROUPS, per_row: bool = False, row_tile: int | None = None) -> ShiftQuantized:
    """ShiftQuant of ``x`` [..., K] with channels along the last axis (the reduction axis).

    tensor scale ``s = max|x| / qmax``; channel k's range ``r_k = max |x[..., k]|``; its group
    ``g_k = min(groups-1, floor(log2(max_k r / r_k)))`` (0 for the widest channels, zero
    channels in the last group); ``q = round(x / (s * 2^-g_k))`` clipped to +-qmax.

    ``per_row`` (x [M, K]): first divide each row by its own ``max |x[m, :]|`` (1 for a zero
    row), kept as ``row_scale``; the tensor scale and the groups then see rows of equal range.

    ``row_tile`` (x [M, K]): each tile of ``row_tile`` consecutive rows takes its channel ranges,
    and so its groups, over its own rows (``group`` [M, K], each row its tile's tags).  With row
    factors every row's maximum is 1, so over many rows nearly every channel reaches the tensor's
    range somewhere and lands in group 0; over a tile of a few rows the narrow channels get their
    finer steps."""
    x = x.to(torch.float64)
    if per_row:
        r = x.abs().amax(-1)
        r = torch.where(r > 0, r, torch.ones_like(r))
        q = shift_quantise(x / r[:, None], bits, stochastic, gen, groups, row_tile=row_tile)
        q.row_scale = r
        return q
    qmax = (1 << (bits - 1)) - 1
    amax = float(x.abs().max())
    scale = amax / qmax if amax > 0 else 1.0
    if row_tile is None:
        r = x.abs().reshape(-1, x.shape[-1]).amax(0)
    else:  # each tile of row_tile rows its own channel ranges: r [tiles, K], expanded to [M, K] below
        pad = -x.shape[0] % row_tile
        r = torch.nn.functional.pad(x.abs(), (0, 0, 0, pad)).reshape(-1, row_tile, x.shape[-1]).amax(1)
    ratio = torch.where(r > 0, amax / r.clamp(min=1e-300), torch.full_like(r, 2.0 ** groups))
    group = torch.clamp(torch.floor(torch.log2(ratio)), 0, groups - 1).to(torch.int64)
    if row_tile is not None:
        group = group.repeat_interleave(row_tile, 0)[:x.shape[0]]
    step = scale * torch.pow(2.0, -group.to(torch.float64))
    q = torch.clamp(_round(x / step, stochastic, gen), -qmax, qmax).to(torch.int64)
    return ShiftQuantized(q, scale, group, groups)


def tensor_quantise(x: torch.Tensor, bits: int, stochastic: bool = False,
                    gen: torch.Generator | None = None, per_row: bool = False) -> ShiftQuantized:
    """Per-tensor symmetric quantisation (per row with ``per_row``): ShiftQuant with one group."""
    return shift_quantise(x, bits, stochastic, gen, groups=1, per_row=per_row)


def shift_gemm(a: ShiftQuantized, b: ShiftQuantized) -> tuple[torch.Tensor, float | torch.Tensor, int]:
    """``a.q`` [M, K] times ``b.q`` [N, K] transposed, both with groups along K (per row where a
    tile of rows has its own: ``row_group``).  Returns the
    integer ``Y`` [M, N], its scale and shift: ``value = Y * scale * 2^-shift``; the scale is
    [M, N] (an outer product) when either operand has row factors.

    Channel k's combined group ``g = ga[k] + gb[k]`` selects one of the accumulators; the sums
    are aligned by ``acc_g << (top - g)`` with ``top`` the largest combined group the formats
    allow (fixed, as in the hardware) and added."""
    top = (a.groups - 1) + (b.groups - 1)
    # sum_g acc_g << (top - g) == sum_k a[k] 2^(ga_max - ga[k]) * b[k] 2^(gb_max - gb[k]): one product
    # in float64, exact while every partial sum stays below 2^53 (checked)
    qa, qb = int(a.q.abs().max()) if a.q.numel() else 0, int(b.q.abs().max()) if b.q.numel() else 0
    if a.q.shape[1] * qa * qb << top >= 1 << 53:
        raise ValueError("shift_gemm: K too large for an exact float64 product")
    sa = torch.pow(2.0, (a.groups - 1 - a.group).to(torch.float64))
    sb = torch.pow(2.0, (b.groups - 1 - b.group).to(torch.float64))
    y = ((a.q.to(torch.float64) * sa) @ (b.q.to(torch.float64) * sb).T).round().to(torch.int64)
    scale = a.scale * b.scale
    if a.row_scale is not None or b.row_scale is not None:
        ra = a.row_scale if a.row_scale is not None else torch.ones(y.shape[0], dtype=torch.float64)
        rb = b.row_scale if b.row_scale is not None else torch.ones(y.shape[1], dtype=torch.float64)
        scale = scale * ra[:, None] * rb[None, :]
    return y, scale, top


def tile_tags(a: ShiftQuantized, b: ShiftQuantized, i: int, j: int, groups: int = MAX_GROUPS,
              b_groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The tags [K] a ``ShiftQuantDot`` of ``groups`` accumulators and ``b_groups`` shifts of
    the second operand takes for output (i, j) of ``shift_gemm(a, b)``: a's channel groups, and
    b's, each moved up by what the tile has beyond the format (``groups - a.groups``), so that the
    tile's ``(qa * (qb << (b_groups - 1 - tb))) << (groups - 1 - ta)`` is ``shift_gemm``'s
    ``qa * qb << (top - ga - gb)`` whatever the formats."""
    if a.groups > groups or b.groups > b_groups:
        raise ValueError(f"tile_tags: operands of {a.groups} and {b.groups} groups need a tile of at least as many "
                         f"(it has {groups} accumulators and {b_groups} shifts)")
    return a.row_group(i) + (groups - a.groups), b.row_group(j) + (b_groups - b.groups)


def _value(y: torch.Tensor, scale: float, shift: int) -> torch.Tensor:
    return y.to(torch.float64) * scale * 2.0 ** -shift


# rows that share a ShiftQuant operand's channel groups (tokens of x and dY, output channels of W
# and dY^T): 2-bit tags per channel per 8 rows, 0.25 bits an element (docs/integer-training.md)
SHIFT_ROW_TILE: int | None = 8


def forward_operands(x: torch.Tensor, w: torch.Tensor, bits: int) -> tuple[ShiftQuantized, ShiftQuantized]:
    """The forward GEMM ``X W^T``'s operands as the training layers quantise them: both ShiftQuant
    with groups along the inputs per tile of SHIFT_ROW_TILE rows, and a factor per row (tokens of
    x, output channels of W); nearest rounding."""
    return (shift_quantise(x, bits, per_row=True, row_tile=SHIFT_ROW_TILE),
            shift_quantise(w, bits, per_row=True, row_tile=SHIFT_ROW_TILE))


def gradient_quantise(g: torch.Tensor, bits: int, gen: torch.Generator) -> ShiftQuantized:
    """A backward GEMM's gradient operand (dY for backward data, dY^T for backward weight) as the
    training layers quantise it: ShiftQuant per tile of SHIFT_ROW_TILE rows with a factor per row,
    stochastic rounding from ``gen``."""
    return shift_quantise(g, bits, stochastic=True, gen=gen, per_row=True, row_tile=SHIFT_ROW_TILE)


class _ShiftQuantLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bits, gen):
        # both operands' input channels along K get shifts, per tile of 8 rows; tokens (rows of x)
        # and outputs (rows of w) their own factors
        xq, wq = forward_operands(x, w, bits)
        ctx.save_for_backward(x, w)
        ctx.bits, ctx.gen = bits, gen
        return _value(*shift_gemm(xq, wq)).to(x.dtype)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        bits, gen = ctx.bits, ctx.gen
        # backward data: dX = dY W, reduction over the outputs: dY's channels are its columns
        gq = gradient_quantise(gy, bits, gen)
        wq_t = tensor_quantise(w.T.contiguous(), bits, per_row=True)
        gx = _value(*shift_gemm(gq, wq_t)).to(x.dtype)
        # backward weight: dW = dY^T X, reduction over the tokens: dY^T's channels are tokens
        gq_t = gradient_quantise(gy.T.contiguous(), bits, gen)
        xq_t = tensor_quantise(x.T.contiguous(), bits, per_row=True)
        gw = _value(*shift_gemm(gq_t, xq_t)).to(w.dtype)
        return gx, gw, None, None


class ShiftQuantLinear(torch.nn.Linear):
    """A linear layer whose three GEMMs are b-bit ShiftQuant integer GEMMs (bias in float32)."""

    def __init__(self, in_features: int, out_features: int, bits: int, bias: bool = True,
                 gen: torch.Generator | None = None):
        super().__init__(in_features, out_features, bias)
        self.bits, self.gen = bits, gen

    def forward(self, x):
        shape = x.shape
        y = _ShiftQuantLinearFn.apply(x.reshape(-1, shape[-1]), self.weight, self.bits, self.gen)
        y = y.reshape(*shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y


# ------------------------------------------------------------------ L1 normalisation
def _div_round(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Integer a / b rounded to nearest (ties away from zero), b > 0."""
    q = torch.div(2 * a.abs() + b, 2 * b, rounding_mode="floor")
    return torch.sign(a) * q


def l1_norm_forward(x: torch.Tensor, frac: int, eps: int = 1) -> tuple[torch.Tensor, dict]:
    """Integer L1 LayerNorm over the last axis of ``x`` (int64 with ``frac`` fraction bits):
    returns y with L1_FRAC fraction bits, y = (x - mu) / s, mu = round(mean x),
    s = round(mean |x - mu|) + eps.  Only adds, compares and divisions: no squares, no root."""
    n = x.shape[-1]
    mu = _div_round(x.sum(-1, keepdim=True), torch.full_like(x[..., :1], n))
    d = x - mu
    s = _div_round(d.abs().sum(-1, keepdim=True), torch.full_like(x[..., :1], n)) + eps
    y = _div_round(d << L1_FRAC, s)
    return y, {"y": y, "s": s, "sgn": torch.sign(d), "frac": frac}


def l1_norm_backward(g: torch.Tensor, saved: dict) -> torch.Tensor:
    """dL/dx (L1_FRAC fraction bits) from dL/dy (L1_FRAC fraction bits), in integers:
    dx = (g - mean g - mean(g*y) * (sgn(x - mu) - mean sgn(x - mu))) / s, with s in x's units."""
    y, s, sgn = saved["y"], saved["s"], saved["sgn"]
    n = g.shape[-1]
    nn = torch.full_like(g[..., :1], n)
    mg = _div_round(g.sum(-1, keepdim=True), nn)
    mgy = _div_round((g * y).sum(-1, keepdim=True), nn << L1_FRAC)  # L1_FRAC bits
    msgn = _div_round(sgn.sum(-1, keepdim=True) << L1_FRAC, nn)  # L1_FRAC bits
    t = _div_round(mgy * ((sgn << L1_FRAC) - msgn), torch.full_like(mgy, 1 << L1_FRAC))
    return _div_round((g - mg - t) << saved["frac"], s)



def l1_batch_norm_forward(x: torch.Tensor, frac: int, eps: int = 1) -> tuple[torch.Tensor, dict]:
    """The BatchNorm variant: x [B, C] normalised per channel over the batch, by the same
    integer arithmetic (the L1 norm unit streams a channel's batch as its row)."""
    y, saved = l1_norm_forward(x.T, frac, eps)
    return y.T, saved


def l1_batch_norm_backward(g: torch.Tensor, saved: dict) -> torch.Tensor:
    return l1_norm_backward(g.T, saved).T

# ------------------------------------------------------------------ one training step
COLUMN_FRAC = 15  # fraction bits of the per-output factors that bring z's columns to one unit


def norm_input(z: torch.Tensor, wq: ShiftQuantized) -> torch.Tensor:
    """The forward GEMM's integer z [M, N] as the L1 norm's input (fixed point, L1_FRAC bits).

    The norm normalises each token row, so the row factors of x drop out; the row factors of W
    are z's *columns* and must be one unit first: ``zn = rshift_round(z * C[n], 15)`` with
    ``C[n] = round(2^15 * r_n / max r)``, one integer multiply per output (host side here)."""
    c = torch.round(wq.row_scale / wq.row_scale.max() * 2 ** COLUMN_FRAC).to(torch.int64)
    return (z * c[None, :] + (1 << (COLUMN_FRAC - 1))) >> COLUMN_FRAC


def gradient_value(dz: torch.Tensor, xq: ShiftQuantized, wq: ShiftQuantized, z_shift: int) -> torch.Tensor:
    """dL/dz (float) from the norm's integer gradient ``dz`` (in 2^-2 L1_FRAC units of zn).

    zn[m, :] = z_value[m, :] / c_m with ``c_m = xq.scale * xq.row_scale[m] * wq.scale *
    max(wq.row_scale) * 2^-shift``, so dL/dz_value = dz * 2^-24 / c_m: a factor per token, which
    must be applied before the backward-weight GEMM sums over tokens."""
    c = xq.scale * xq.row_scale * wq.scale * float(wq.row_scale.max()) * 2.0 ** -z_shift
    return dz.to(torch.float64) * 2.0 ** (-2 * L1_FRAC) / c[:, None]


def linear_l1_training_step(x: torch.Tensor, w: torch.Tensor, gy: torch.Tensor, bits: int,
                            gen: torch.Generator) -> dict:
    """One training step of ``y = L1Norm(x W^T)`` in integers, every stage the RTL runs.

    x [M, K] and w [N, K] are float; gy = dL/dy [M, N].  The quantisers are those of
    ``ShiftQuantLinear``.  The host-side steps between the integer stages are the quantisers
    (scales, groups, rounding), ``norm_input`` (z's columns to one unit) and ``gradient_value``.

    Returns the integers of each stage (z, zn, y, sgn, s, g, dz, dx, dw) and the float gradients
    ``dx_value = dL/dx`` and ``dw_value = dL/dW``."""
    xq, wq = forward_operands(x, w, bits)
    z, _, z_shift = shift_gemm(xq, wq)  # forward: X W^T
    zn = norm_input(z, wq)
    y, saved = l1_norm_forward(zn, L1_FRAC)
    g = torch.round(gy.to(torch.float64) * 2 ** L1_FRAC).to(torch.int64)
    dz = l1_norm_backward(g, saved)  # dL/dzn in 2^-(2 L1_FRAC) units
    dzv = gradient_value(dz, xq, wq, z_shift)
    gq = gradient_quantise(dzv, bits, gen)
    wq_t = tensor_quantise(w.T.contiguous(), bits, per_row=True)
    dx, dx_scale, dx_shift = shift_gemm(gq, wq_t)  # backward data: dZ W
    gq_t = gradient_quantise(dzv.T.contiguous(), bits, gen)
    xq_t = tensor_quantise(x.T.contiguous(), bits, per_row=True)
    dw, dw_scale, dw_shift = shift_gemm(gq_t, xq_t)  # backward weight: dZ^T X
    return {"xq": xq, "wq": wq, "z": z, "zn": zn, "y": y, "sgn": saved["sgn"], "s": saved["s"], "g": g, "dz": dz,
            "gq": gq, "wq_t": wq_t, "dx": dx, "gq_t": gq_t, "xq_t": xq_t, "dw": dw,
            "dx_value": _value(dx, dx_scale, dx_shift), "dw_value": _value(dw, dw_scale, dw_shift)}
