"""A compressed model: every linear layer in the hardware's storage format, plus the float
parameters (norm gains) that the integer reference turns into fixed point.

File format (``.afc``): a NumPy ``.npz`` archive holding ``manifest`` (UTF-8 JSON: format
version, model spec, plan, per-layer bits/n/group/scale exponent) and, per layer ``NAME``,
the arrays ``NAME.codes``, ``NAME.mask`` (bit-packed), ``NAME.zero``, ``NAME.scale``; float
tensors as ``float.NAME``.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from airfoil.compiler.compress import CompressedLinear, CompressionPlan, LayerRecipe, compress_linear
from airfoil.compiler.model import LoadedModel, ModelSpec
from airfoil.errors import AirfoilError

__all__ = ["CompressedModel", "CompressedModelError", "compress_model", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class CompressedModelError(AirfoilError):
    """A compressed-model file is missing, corrupt or of another format version."""


@dataclass
class CompressedModel:
    spec: ModelSpec
    plan: CompressionPlan
    linears: dict[str, CompressedLinear]  # canonical name -> compressed weight (incl. lm_head)
    floats: dict[str, torch.Tensor]  # norm gains
    embedding: CompressedLinear  # token embedding table, 8-bit dense
    metadata: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- summaries
    def effective_bits_per_weight(self) -> float:
        bits = sum(c.storage_bits() for c in self.linears.values())
        return bits / sum(c.codes.size for c in self.linears.values())

    def sparsity(self) -> float:
        """Fraction of linear-layer weights pruned by N:16."""
        kept = sum(int(c.mask.sum()) for c in self.linears.values())
        return 1.0 - kept / sum(c.codes.size for c in self.linears.values())

    def dequantised_weights(self) -> dict[str, torch.Tensor]:
        """Float weights equal to what the compressed model computes with (the float simulation)."""
        w = {name: c.dequantise() for name, c in self.linears.items()}
        w.update(self.floats)
        w["embed"] = self.embedding.dequantise()
        return w

    def layer_table(self) -> list[dict]:
        return [{"layer": n, "bits": c.bits, "n": c.n, "method": c.method, "shape": list(c.shape),
                 "bits_per_weight": round(c.storage_bits() / c.codes.size, 4)} for n, c in self.linears.items()]

    # ---------------------------------------------------------------- file I/O
    def save(self, path: str | Path, deflate: bool = False) -> None:
        """Write atomically: a failure leaves no partial file behind.  ``deflate`` zips the arrays
        (about 45% smaller, slower to write); ``load`` reads either kind."""
        path = Path(path)
        manifest = {"format": "airfoil-compressed", "version": FORMAT_VERSION, "spec": self.spec.to_dict(),
                    "plan": self.plan.to_dict(), "metadata": self.metadata,
                    "linears": {n: {"bits": c.bits, "n": c.n, "group_size": c.group_size, "scale_exp": c.scale_exp,
                                    "method": c.method, "shape": list(c.shape)} for n, c in self.linears.items()}}
        manifest["embedding"] = {"bits": self.embedding.bits, "n": self.embedding.n,
                                 "group_size": self.embedding.group_size, "scale_exp": self.embedding.scale_exp,
                                 "method": self.embedding.method, "shape": list(self.embedding.shape)}
        arrays: dict[str, np.ndarray] = {"manifest": np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)}
        for n, c in [*self.linears.items(), ("embedding", self.embedding)]:
            arrays[f"{n}.codes"] = c.codes
            arrays[f"{n}.mask"] = np.packbits(c.mask, axis=1)
            arrays[f"{n}.zero"] = c.zero
            arrays[f"{n}.scale"] = c.scale
        for n, t in self.floats.items():
            arrays[f"float.{n}"] = t.numpy()
        tmp = path.with_name(path.name + ".partial")
        try:
            with open(tmp, "wb") as f:
                (np.savez_compressed if deflate else np.savez)(f, **arrays)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def load(path: str | Path) -> "CompressedModel":
        path = Path(path)
        if not path.is_file():
            raise CompressedModelError(f"{path}: no such compressed-model file")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            manifest = json.loads(arrays.pop("manifest").tobytes().decode())
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as e:
            raise CompressedModelError(f"{path}: corrupt compressed-model file ({type(e).__name__}: {e})") from None
        if manifest.get("format") != "airfoil-compressed" or manifest.get("version") != FORMAT_VERSION:
            raise CompressedModelError(f"{path}: not an Airfoil compressed model of format version {FORMAT_VERSION}")
        try:
            spec = ModelSpec(**manifest["spec"])
            plan = CompressionPlan.from_dict(manifest["plan"], str(path))
            linears = {}
            for n, m in [*manifest["linears"].items(), ("embedding", manifest["embedding"])]:
                o, k = m["shape"]
                codes = arrays[f"{n}.codes"]
                mask = np.unpackbits(arrays[f"{n}.mask"], axis=1, count=k).astype(bool)
                c = CompressedLinear(bits=m["bits"], n=m["n"], group_size=m["group_size"], codes=codes, mask=mask,
                                     zero=arrays[f"{n}.zero"], scale=arrays[f"{n}.scale"], scale_exp=m["scale_exp"],
                                     method=m["method"])
                g = k // c.group_size
                if codes.shape != (o, k) or c.zero.shape != (o, g) or c.scale.shape != (o, g):
                    raise CompressedModelError(f"{path}: layer {n!r}: array shapes do not match the manifest")
                if int(codes.max(initial=0)) >= (1 << c.bits) or c.scale.dtype != np.uint16:
                    raise CompressedModelError(f"{path}: layer {n!r}: codes or scales out of range for {c.bits} bits")
                linears[n] = c
            floats = {k[len("float."):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("float.")}
        except KeyError as e:
            raise CompressedModelError(f"{path}: corrupt compressed-model file (missing {e.args[0]!r})") from None
        embedding = linears.pop("embedding")
        expected = set(spec.linear_shapes())
        if set(linears) != expected:
            missing = sorted(expected - set(linears))
            raise CompressedModelError(f"{path}: layers missing: {missing[:3]}")
        return CompressedModel(spec=spec, plan=plan, linears=linears, floats=floats, embedding=embedding,
                               metadata=manifest["metadata"])


@dataclass
class Calibration:
    """Statistics of the float model's linear-layer inputs on calibration text."""

    hessian: dict[str, torch.Tensor]  # 2 X^T X / n per layer (shared by layers that read the same input)
    absmax: dict[str, torch.Tensor]  # per input channel max |x|


def calibrate(model: LoadedModel, tokens: torch.Tensor, window: int = 512, hessians: bool = True) -> Calibration:
    """Run the float model on ``tokens`` (independent windows) and collect input statistics.
    ``hessians=False`` collects only the ranges, which is all smoothing needs when the Hessians
    come from sequential compression: it skips the float64 ``X^T X`` products (half of this
    pass's time) and the LM head."""
    from airfoil.host.float_reference import FloatReference

    ref = FloatReference(model.spec, model.weights)
    acc: dict[str, torch.Tensor] = {}
    amax: dict[str, torch.Tensor] = {}
    count: dict[str, int] = {}

    def observe(name: str, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        if hessians:
            acc[name] = acc.get(name, 0) + 2.0 * x.T @ x
        amax[name] = torch.maximum(amax.get(name, torch.zeros(x.shape[1], dtype=torch.float64)), x.abs().amax(0))
        count[name] = count.get(name, 0) + x.shape[0]

    with torch.no_grad():
        for s in range(0, len(tokens), window):
            h = ref.w["embed"][tokens[s:s + window].to(ref.device)]
            for i in range(model.spec.n_layers):
                h = ref.layer(i, h, 0, observe=observe)
            if hessians:
                ref.head(h, observe)
    h = {n: acc[n] / count[n] for n in acc}
    for i in range(model.spec.n_layers):
        p = f"layers.{i}."
        for src, dst in (("attn_q", ("attn_k", "attn_v")), ("ffn_gate", ("ffn_up",))):
            for d in dst:
                if hessians:
                    h[p + d] = h[p + src]
                amax[p + d] = amax[p + src]
    return Calibration(hessian=h, absmax=amax)


def smooth(model: LoadedModel, cal: Calibration, alpha: float) -> tuple[dict[str, torch.Tensor], Calibration]:
    """SmoothQuant-style migration of activation outliers into weights (Xiao et al., 2023).

    For every linear input with per-channel range a_j and weight column range w_j, the channel
    is divided by s_j = a_j^alpha / w_j^(1-alpha) and the weight columns multiplied by it.  The
    division folds exactly (in float) into the producer: the RMSNorm gain for q/k/v and
    gate/up, the rows of ffn_up for ffn_down (silu(g) * u / s == silu(g) * (u / s)).
    Returns the transformed float weights and the calibration statistics of the new inputs."""
    w = dict(model.weights)
    h, amax = dict(cal.hessian), dict(cal.absmax)
    spec = model.spec

    def factor(act_max: torch.Tensor, cols: list[torch.Tensor]) -> torch.Tensor:
        wmax = torch.stack([c.abs().amax(0).to(torch.float64) for c in cols]).amax(0)
        s = act_max.clamp(min=1e-5) ** alpha / wmax.clamp(min=1e-5) ** (1 - alpha)
        return s.clamp(min=1e-3, max=1e3)

    for i in range(spec.n_layers):
        p = f"layers.{i}."
        groups = ((("attn_q", "attn_k", "attn_v"), lambda s: _scale(w, p + "attn_norm", 1 / s)),
                  (("ffn_gate", "ffn_up"), lambda s: _scale(w, p + "ffn_norm", 1 / s)),
                  (("ffn_down",), lambda s: _scale_rows(w, p + "ffn_up", 1 / s)))
        for names, fold in groups:
            first = p + names[0]
            s = factor(amax[first], [w[p + n] for n in names])
            fold(s)
            for n in names:
                w[p + n] = (w[p + n].to(torch.float64) * s[None, :]).to(torch.float32)
            for n in names:
                amax[p + n] = amax[first] / s
            if first in h:  # the Hessians of the new inputs, where calibrate collected them
                hs = h[first] / s[:, None] / s[None, :]
                for n in names:
                    h[p + n] = hs
    return w, Calibration(hessian=h, absmax=amax)


def _scale(w: dict, name: str, s: torch.Tensor) -> None:
    w[name] = (w[name].to(torch.float64) * s).to(torch.float32)


def _scale_rows(w: dict, name: str, s: torch.Tensor) -> None:
    w[name] = (w[name].to(torch.float64) * s[:, None]).to(torch.float32)


def _compress_sequentially(spec: ModelSpec, weights: dict[str, torch.Tensor], tokens: torch.Tensor,
                           compress: Callable[[str, torch.Tensor | None], None],
                           linears: dict[str, CompressedLinear], window: int = 512) -> None:
    """Block by block, as in SparseGPT/GPTQ: the Hessians of block i come from running block i
    (still float) on the outputs of the already-compressed blocks 0..i-1."""
    from airfoil.host.float_reference import FloatReference

    ref = FloatReference(spec, weights)
    hidden = [ref.w["embed"][tokens[s:s + window]] for s in range(0, len(tokens), window)]
    shares = {"attn_q": ("attn_q", "attn_k", "attn_v"), "ffn_gate": ("ffn_gate", "ffn_up")}

    def stats(run) -> dict[str, torch.Tensor]:
        acc: dict[str, torch.Tensor] = {}
        count: dict[str, int] = {}

        def observe(name: str, x: torch.Tensor) -> None:
            x = x.to(torch.float64)
            acc[name] = acc.get(name, 0) + 2.0 * x.T @ x
            count[name] = count.get(name, 0) + x.shape[0]

        for h in hidden:
            run(h, observe)
        out = {}
        for name, a in acc.items():
            prefix, _, kind = name.rpartition(".")
            for k in shares.get(kind, (kind,)):
                out[f"{prefix}.{k}" if prefix else k] = a / count[name]
        return out

    for i in range(spec.n_layers):
        for name, h in stats(lambda h, obs: ref.layer(i, h, 0, observe=obs)).items():
            compress(name, h)
            ref.w[name] = linears[name].dequantise()
        hidden = [ref.layer(i, h, 0) for h in hidden]
    for name, h in stats(lambda h, obs: ref.head(h, observe=obs)).items():
        compress(name, h)


def compress_model(model: LoadedModel, plan: CompressionPlan, calibration: torch.Tensor | None = None,
                   progress: Callable[[str], None] | None = None) -> CompressedModel:
    """Compress every linear layer by ``plan``.  With calibration tokens, activation outliers
    are first smoothed into the weights (``plan.smooth_alpha``; 0 turns it off), then
    ``sparsegpt`` layers use the Hessians of their (smoothed) float inputs: of the float model
    in one pass, or with ``plan.sequential`` block by block, each block's inputs coming from the
    blocks already compressed."""
    spec = model.spec
    recipes = plan.resolve(spec)
    weights = model.weights
    hessians: dict[str, torch.Tensor] = {}
    if any(r.method == "sparsegpt" for r in recipes.values()) and calibration is None:
        raise ValueError("the plan uses sparsegpt: calibration tokens are required")
    if calibration is not None:
        if progress:
            progress(f"calibrate on {len(calibration)} tokens")
        if not (plan.sequential and plan.smooth_alpha == 0):  # sequential compression measures its own Hessians
            cal = calibrate(model, calibration, hessians=not plan.sequential)
            if plan.smooth_alpha > 0:
                weights, cal = smooth(model, cal, plan.smooth_alpha)
            hessians = cal.hessian
    linears: dict[str, CompressedLinear] = {}

    def compress(name: str, hessian: torch.Tensor | None) -> None:
        r = recipes[name]
        if progress:
            progress(f"compress {name} ({len(linears) + 1}/{len(recipes)}): {r.bits}-bit, {r.n}:16, {r.method}")
        linears[name] = compress_linear(weights[name] if name in weights else weights["embed"], r, plan.group_size,
                                        hessian if r.method == "sparsegpt" else None)

    if calibration is not None and plan.sequential:
        _compress_sequentially(spec, weights, calibration, compress, linears)
    else:
        for name in recipes:
            compress(name, hessians.get(name))
    linears = {n: linears[n] for n in recipes}
    # The embedding is a lookup table (one row read per token), not a GEMM weight: it is kept
    # at 8 bits, dense, in the same storage format, and is not counted in the linear-layer figures.
    embedding = compress_linear(model.weights["embed"], LayerRecipe(bits=8, n=16, method="magnitude"),
                                plan.group_size)
    floats = {k: v for k, v in weights.items() if k.endswith("norm")}
    meta = {"source": str(model.source), "calibration_tokens": 0 if calibration is None else int(len(calibration))}
    out = CompressedModel(spec=spec, plan=plan, linears=linears, floats=floats, embedding=embedding, metadata=meta)
    if plan.recovery.steps > 0:
        if calibration is None:
            raise ValueError("the plan asks for recovery: calibration tokens are required")
        from airfoil.compiler.recovery import recover

        out = recover(out, model.weights, calibration, plan.recovery, progress)
    return out
