"""Integer-training runs: the same model, seed and schedule in FP32 and with b-bit ShiftQuant
GEMMs plus the integer L1 norm (``host/integer_training.py``).

* ``digits``: an MLP on scikit-learn's bundled 8x8 digits (test accuracy, in points).
* ``charlm``: a small character-level Transformer on Python's ``pydoc_data.topics`` text
  (held-out next-character accuracy, the delta relative; held-out bits per character are
  reported beside it).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from airfoil.errors import AirfoilError
from airfoil.host.integer_training import (ShiftQuantLinear, forward_operands, l1_norm_backward, l1_norm_forward,
                                          shift_gemm)

__all__ = ["TASKS", "TrainResult", "run_task", "L1Norm", "quantised_linear", "linear_forwards", "charlm_forward_study"]

X_FRAC = 12  # fixed point of the L1 norm's input


class _IntL1NormFn(torch.autograd.Function):
    """y = (x - mean) / mean|x - mean| in integers; the gradient is scaled per call so its
    largest element uses 15 bits (a block scale, like the tensor scale of ShiftQuant)."""

    @staticmethod
    def forward(ctx, x):
        shape = x.shape
        xi = torch.round(x.reshape(-1, shape[-1]).to(torch.float64) * 2 ** X_FRAC).to(torch.int64)
        y, saved = l1_norm_forward(xi, X_FRAC)
        ctx.saved = saved
        return (y.to(torch.float64) / 2 ** 12).to(x.dtype).reshape(shape)

    @staticmethod
    def backward(ctx, g):
        shape = g.shape
        g2 = g.reshape(-1, shape[-1]).to(torch.float64)
        gs = float(g2.abs().max()) / 2 ** 15 or 1.0
        dx = l1_norm_backward(torch.round(g2 / gs).to(torch.int64), ctx.saved).to(torch.float64) * gs
        return dx.to(g.dtype).reshape(shape)


class L1Norm(nn.Module):
    """L1 LayerNorm with a float affine; ``integer`` selects the integer forward/backward."""

    def __init__(self, n: int, integer: bool):
        super().__init__()
        self.integer = integer
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        if self.integer:
            y = _IntL1NormFn.apply(x)
        else:
            d = x - x.mean(-1, keepdim=True)
            y = d / (d.abs().mean(-1, keepdim=True) + 2.0 ** -X_FRAC)
        return y * self.weight + self.bias


def _linear(i, o, bits, gen):
    return ShiftQuantLinear(i, o, bits, gen=gen) if bits else nn.Linear(i, o)


@dataclass
class TrainResult:
    task: str
    bits: int
    metric: str
    fp32_metric: float
    int_metric: float
    delta: float
    delta_kind: str
    steps: int
    seconds: float
    curves: dict = field(default_factory=dict)
    per_seed: list = field(default_factory=list)
    secondary: dict = field(default_factory=dict)  # other figures of the same runs (means over seeds)


@dataclass
class _Run:
    fp32: float
    int_: float
    curves: dict
    secondary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Task:
    run: object
    steps: int
    metric: str
    delta_kind: str

    def delta(self, fp: float, it: float) -> float:
        """How much worse the integer run is (positive: worse)."""
        return fp - it if self.delta_kind == "points" else (fp - it) / fp * 100


# ------------------------------------------------------------------ digits
class _DigitsMLP(nn.Module):
    def __init__(self, bits, gen):
        super().__init__()
        self.fc1 = _linear(64, 128, bits, gen)
        self.norm = L1Norm(128, integer=bool(bits))
        self.fc2 = _linear(128, 10, bits, gen)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def _digits(bits: int, seed: int, steps: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    tr, te = perm[:1347], perm[1347:]

    def run(b):
        torch.manual_seed(seed)
        model = _DigitsMLP(b, torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        g = torch.Generator().manual_seed(seed)
        curve = []
        for step in range(steps):
            idx = tr[torch.randint(0, len(tr), (64,), generator=g)]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            curve.append(loss.item())
        with torch.no_grad():
            acc = (model(x[te]).argmax(-1) == y[te]).float().mean().item() * 100
        return acc, curve

    fp, cf = run(0)
    it, ci = run(bits)
    return _Run(fp, it, {"fp32_loss": cf, "int_loss": ci})


# ------------------------------------------------------------------ char LM
class _Block(nn.Module):
    def __init__(self, d, heads, bits, gen):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = L1Norm(d, bool(bits)), L1Norm(d, bool(bits))
        self.qkv, self.proj = _linear(d, 3 * d, bits, gen), _linear(d, d, bits, gen)
        self.up, self.down = _linear(d, 4 * d, bits, gen), _linear(4 * d, d, bits, gen)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.n1(x)).split(D, -1)
        sh = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        a = nn.functional.scaled_dot_product_attention(sh(q), sh(k), sh(v), is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.down(torch.relu(self.up(self.n2(x))))


class _CharLM(nn.Module):
    def __init__(self, vocab, bits, gen, d=64, heads=4, layers=2, ctx=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(ctx, d) * 0.02)
        self.blocks = nn.ModuleList(_Block(d, heads, bits, gen) for _ in range(layers))
        self.norm = L1Norm(d, bool(bits))
        self.head = _linear(d, vocab, bits, gen)

    def forward(self, idx):
        x = self.emb(idx) + self.pos[: idx.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def _charlm_data():
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))[:400_000]
    chars = sorted(set(text))
    code = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([code[c] for c in text])
    split = int(0.9 * len(data))
    return chars, data[:split], data[split:]


def _charlm_fit(bits: int, seed: int, steps: int) -> tuple[nn.Module, list[float]]:
    """Train one char LM (``bits`` 0: FP32); returns the model and its training curve (bits per
    character)."""
    chars, train, _ = _charlm_data()
    ctx, batch = 64, 32
    torch.manual_seed(seed)
    model = _CharLM(len(chars), bits, torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        s = torch.randint(0, len(train) - ctx - 1, (batch,), generator=g)
        xb = torch.stack([train[i:i + ctx] for i in s])
        yb = torch.stack([train[i + 1:i + ctx + 1] for i in s])
        loss = nn.functional.cross_entropy(model(xb).reshape(-1, len(chars)), yb.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        curve.append(loss.item() / math.log(2))
    return model, curve


def _charlm_train(bits: int, seed: int, steps: int) -> tuple[float, float, list[float]]:
    """Train one char LM (``bits`` 0: FP32); returns held-out bpc, accuracy and the training curve."""
    model, curve = _charlm_fit(bits, seed, steps)
    return (*_charlm_eval(model, _charlm_data()[2], 64), curve)


def _charlm_eval(model, held: torch.Tensor, ctx: int) -> tuple[float, float]:
    """Bits per character and next-character accuracy over the whole held-out text, in
    non-overlapping windows (40,000 characters: a few hundred tokens' worth of evaluation noise
    would hide the differences we measure)."""
    n = (len(held) - 1) // ctx
    bits = correct = 0.0
    with torch.no_grad():
        for lo in range(0, n, 64):
            idx = torch.arange(lo, min(n, lo + 64)) * ctx
            xb = torch.stack([held[i:i + ctx] for i in idx])
            yb = torch.stack([held[i + 1:i + ctx + 1] for i in idx])
            logits = model(xb).reshape(-1, model.head.out_features)
            bits += nn.functional.cross_entropy(logits, yb.reshape(-1), reduction="sum").item() / math.log(2)
            correct += (logits.argmax(-1) == yb.reshape(-1)).sum().item()
    return bits / (n * ctx), correct / (n * ctx)


def _charlm(bits: int, seed: int, steps: int):
    fp_bpc, fp_acc, cf = _charlm_train(0, seed, steps)
    it_bpc, it_acc, ci = _charlm_train(bits, seed, steps)
    return _Run(100 * fp_acc, 100 * it_acc, {"fp32_bpc": cf, "int_bpc": ci},
                {"fp32_bpc": fp_bpc, "int_bpc": it_bpc, "bpc_delta_pct": (it_bpc - fp_bpc) / fp_bpc * 100})


# ------------------------------------------------------------------ where the char LM's gap comes from
def quantised_linear(lin: nn.Linear, x: torch.Tensor, bits: int, operands: str) -> torch.Tensor:
    """``lin(x)`` with the forward GEMM's operands named in ``operands`` (``"x"``, ``"w"``, both or
    neither) quantised as ``ShiftQuantLinear``'s forward quantises them (ShiftQuant with a factor
    per row and groups per tile of rows: x's rows are tokens, W's outputs), the others float.  With both
    it is the integer GEMM of ``ShiftQuantLinear`` itself, value for value."""
    xq, wq = forward_operands(x.reshape(-1, x.shape[-1]), lin.weight.detach(), bits)
    if "x" in operands and "w" in operands:
        y, scale, shift = shift_gemm(xq, wq)
        y = (y.to(torch.float64) * scale * 2.0 ** -shift).to(x.dtype)
    else:
        xv = xq.dequantise().to(x.dtype) if "x" in operands else x.reshape(-1, x.shape[-1])
        wv = wq.dequantise().to(x.dtype) if "w" in operands else lin.weight.detach()
        y = xv @ wv.T
    y = y.reshape(*x.shape[:-1], lin.out_features)
    return y + lin.bias if lin.bias is not None else y


@contextmanager
def linear_forwards(model: nn.Module, forward):
    """Within the block every ``nn.Linear`` of ``model`` (``ShiftQuantLinear`` too) computes
    ``forward(name, layer, x)`` instead of its own forward."""
    layers = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    for name, mod in layers:
        mod.forward = lambda x, name=name, mod=mod: forward(name, mod, x)
    try:
        yield [name for name, _ in layers]
    finally:
        for _, mod in layers:
            del mod.forward


def charlm_forward_study(bits: int, seeds: int = 3, steps: int = 800, integer_runs: bool = True,
                         progress=print) -> dict:
    """Where the char LM's gap comes from, measured on the held-out text without training noise:

    * ``fp32_forward_cost``: FP32-trained models evaluated with their forward GEMMs quantised as
      the integer layers quantise them (both operands, the activations x only, the weights only,
      and one layer at a time): the part of the gap a model pays at evaluation alone;
    * ``finer_group_fraction``: per layer, the share of x's channels that ShiftQuant puts in a
      group finer than the first (after the per-token factors);
    * ``integer_runs``: each integer-trained model evaluated as trained and with float linear
      layers: what its training cost apart from its own forward's rounding.

    Costs are relative, in % (bits per character up, accuracy down), per seed and averaged."""
    held = _charlm_data()[2]

    def cost(base, r):
        return {"bpc_pct": (r[0] - base[0]) / base[0] * 100, "accuracy_pct": (base[1] - r[1]) / base[1] * 100}

    def mean(rows):
        return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}

    per_seed, groups = [], {}

    def counting(name, lin, x):
        q = forward_operands(x.reshape(-1, x.shape[-1]), lin.weight.detach(), bits)[0]
        groups.setdefault(name, []).append(float((q.group > 0).double().mean()))
        return quantised_linear(lin, x, bits, "xw")

    for seed in range(seeds):
        progress(f"char LM seed {seed}: FP32")
        model, _ = _charlm_fit(0, seed, steps)
        base = _charlm_eval(model, held, 64)
        row = {"seed": seed, "fp32_bpc": base[0], "fp32_accuracy": base[1] * 100, "fp32_forward_cost": {}}
        for operands in ("xw", "x", "w"):
            with linear_forwards(model, lambda n, lin, x, o=operands: quantised_linear(lin, x, bits, o)):
                row["fp32_forward_cost"][operands] = cost(base, _charlm_eval(model, held, 64))
        with linear_forwards(model, counting) as names:
            _charlm_eval(model, held, 64)
        for name in names:
            with linear_forwards(model, lambda n, lin, x, one=name: quantised_linear(lin, x, bits, "xw" if n == one else "")):
                row["fp32_forward_cost"][f"layer {name}"] = cost(base, _charlm_eval(model, held, 64))
        if integer_runs:
            progress(f"char LM seed {seed}: {bits}-bit")
            imodel, _ = _charlm_fit(bits, seed, steps)
            as_trained = _charlm_eval(imodel, held, 64)
            with linear_forwards(imodel, lambda n, lin, x: quantised_linear(lin, x, bits, "")):
                float_linears = _charlm_eval(imodel, held, 64)
            row["integer"] = {"as_trained": cost(base, as_trained), "float_linears": cost(base, float_linears)}
        per_seed.append(row)
    out = {"bits": bits, "seeds": seeds, "steps": steps,
           "fp32_forward_cost": {k: mean([r["fp32_forward_cost"][k] for r in per_seed]) for k in per_seed[0]["fp32_forward_cost"]},
           "finer_group_fraction": {k: sum(v) / len(v) for k, v in groups.items()}, "per_seed": per_seed}
    if integer_runs:
        out["integer"] = {k: mean([r["integer"][k] for r in per_seed]) for k in per_seed[0]["integer"]}
    return out


TASKS = {
    "digits": _Task(_digits, 600, "test accuracy (%)", "points"),
    "charlm": _Task(_charlm, 800, "held-out next-character accuracy (%)", "% (relative, accuracy)"),
}


def run_task(task: str, bits: int, seed: int = 0, steps: int | None = None, seeds: int = 1) -> TrainResult:
    """FP32 and integer runs for ``seeds`` consecutive seeds from ``seed``; the metrics are the
    means over the seeds (a single run of the char LM moves by about 1.5% from seed to seed),
    the curves are the first seed's, ``per_seed`` holds every pair."""
    if task not in TASKS:
        raise AirfoilError(f"--task {task!r}: expected one of {sorted(TASKS)}")
    if bits not in (4, 6, 8):
        raise AirfoilError(f"--bits {bits}: ShiftQuant training supports 4, 6 or 8 bits")
    if seeds < 1:
        raise AirfoilError(f"--seeds {seeds}: expected at least 1")
    spec = TASKS[task]
    steps = steps or spec.steps
    t = time.time()
    runs = [spec.run(bits, s, steps) for s in range(seed, seed + seeds)]
    fp = sum(r.fp32 for r in runs) / seeds
    it = sum(r.int_ for r in runs) / seeds
    result = TrainResult(task, bits, spec.metric, fp, it, spec.delta(fp, it), spec.delta_kind, steps,
                         time.time() - t, runs[0].curves)
    result.per_seed = [{"seed": s, "fp32": r.fp32, "int": r.int_, "delta": spec.delta(r.fp32, r.int_), **r.secondary}
                       for s, r in zip(range(seed, seed + seeds), runs)]
    result.secondary = {k: sum(r.secondary[k] for r in runs) / seeds for k in runs[0].secondary}
    return result
