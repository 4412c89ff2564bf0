"""Read LLaMA-architecture models from GGUF files (every quantisation type ``gguf`` can dequantise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from airfoil.compiler.model import LINEAR_KINDS, LoadedModel, ModelError, ModelSpec, check_shapes, gguf_linear_name

__all__ = ["load_gguf", "read_gguf_metadata"]

SUPPORTED_ARCHS = ("llama",)


def _open(path: Path):
    import gguf

    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/IndexError/struct.error on truncation
        raise ModelError(f"{path}: truncated or corrupt GGUF ({type(e).__name__}: {e})") from None


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def read_gguf_metadata(path: Path) -> dict:
    reader = _open(path)
    return {k: _field(reader, k) for k in reader.fields
            if not k.startswith("tokenizer.ggml.") or k.endswith(("_id", ".model", ".pre"))}


def _unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's interleaving of Q/K rows (GGUF pairs rotary dims as (2i, 2i+1);
    Hugging Face and Airfoil use rotate-half order (i, i + head_dim/2))."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str | Path) -> LoadedModel:
    import gguf

    path = Path(path)
    reader = _open(path)
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ModelError(f"{path}: unsupported architecture {arch!r}; Airfoil loads {list(SUPPORTED_ARCHS)} from GGUF")

    def need(key: str):
        v = _field(reader, f"{arch}.{key}")
        if v is None:
            raise ModelError(f"{path}: metadata key {arch}.{key!r} missing")
        return v

    n_heads = int(need("attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv", n_heads))
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ModelError(f"{path}: tensor 'token_embd.weight' missing")
    vocab = int(tensors["token_embd.weight"].shape[1])
    spec = ModelSpec(
        name=path.stem, arch="llama", n_layers=int(need("block_count")), d_model=int(need("embedding_length")),
        n_heads=n_heads, n_kv_heads=n_kv, d_ff=int(need("feed_forward_length")), vocab=vocab,
        max_positions=int(need("context_length")),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        tied_embeddings="output.weight" not in tensors)

    def tensor(name: str) -> torch.Tensor:
        t = tensors.get(name)
        if t is None:
            raise ModelError(f"{path}: tensor {name!r} missing")
        try:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise ModelError(f"{path}: tensor {name!r} of type {t.tensor_type.name}: cannot dequantise ({e})") from None
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists dims fastest-first
        return torch.from_numpy(np.array(data, dtype=np.float32, copy=True).reshape(shape))

    w: dict[str, torch.Tensor] = {"embed": tensor("token_embd.weight"), "final_norm": tensor("output_norm.weight")}
    if not spec.tied_embeddings:
        w["lm_head"] = tensor("output.weight")
    for i in range(spec.n_layers):
        w[f"layers.{i}.attn_norm"] = tensor(f"blk.{i}.attn_norm.weight")
        w[f"layers.{i}.ffn_norm"] = tensor(f"blk.{i}.ffn_norm.weight")
        for kind in LINEAR_KINDS:
            t = tensor(f"blk.{i}.{gguf_linear_name(kind)}.weight")
            if kind == "attn_q":
                t = torch.from_numpy(_unpermute_rope_rows(t.numpy(), n_heads))
            elif kind == "attn_k":
                t = torch.from_numpy(_unpermute_rope_rows(t.numpy(), n_kv))
            w[f"layers.{i}.{kind}"] = t
    check_shapes(spec, w, str(path))
    meta = {"chat_template": _field(reader, "tokenizer.chat_template"),
            "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
            "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
            "quant_types": sorted({t.tensor_type.name for t in reader.tensors})}
    return LoadedModel(spec=spec, weights=w, source=path, metadata=meta)
