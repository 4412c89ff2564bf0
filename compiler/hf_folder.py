"""Read LLaMA-architecture models from a Hugging Face folder (config.json + *.safetensors)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from airfoil.compiler.model import LINEAR_KINDS, LoadedModel, ModelError, ModelSpec, check_shapes, hf_linear_name

__all__ = ["load_hf_folder"]


def load_hf_folder(folder: str | Path) -> LoadedModel:
    from safetensors import safe_open

    folder = Path(folder)
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except OSError:
        raise ModelError(f"{folder}: no config.json (a Hugging Face model folder needs one)") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg_path}: not valid JSON ({e})") from None
    if cfg.get("model_type") != "llama":
        raise ModelError(f"{cfg_path}: unsupported model_type {cfg.get('model_type')!r}; expected 'llama'")
    try:
        n_heads = int(cfg["num_attention_heads"])
        spec = ModelSpec(
            name=folder.name, arch="llama", n_layers=int(cfg["num_hidden_layers"]), d_model=int(cfg["hidden_size"]),
            n_heads=n_heads, n_kv_heads=int(cfg.get("num_key_value_heads", n_heads)),
            d_ff=int(cfg["intermediate_size"]), vocab=int(cfg["vocab_size"]),
            max_positions=int(cfg.get("max_position_embeddings", 2048)),
            rope_theta=float(cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), tied_embeddings=bool(cfg.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise ModelError(f"{cfg_path}: field {e.args[0]!r} missing") from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no *.safetensors files")
    raw: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    raw[k] = st.get_tensor(k).to(torch.float32)
        except Exception as e:
            raise ModelError(f"{f}: cannot read safetensors ({e})") from None

    def take(name: str) -> torch.Tensor:
        if name not in raw:
            raise ModelError(f"{folder}: tensor {name!r} missing")
        return raw[name]

    w = {"embed": take("model.embed_tokens.weight"), "final_norm": take("model.norm.weight")}
    if not spec.tied_embeddings:
        w["lm_head"] = take("lm_head.weight")
    for i in range(spec.n_layers):
        w[f"layers.{i}.attn_norm"] = take(f"model.layers.{i}.input_layernorm.weight")
        w[f"layers.{i}.ffn_norm"] = take(f"model.layers.{i}.post_attention_layernorm.weight")
        for kind in LINEAR_KINDS:
            w[f"layers.{i}.{kind}"] = take(f"model.layers.{i}.{hf_linear_name(kind)}.weight")
    check_shapes(spec, w, str(folder))
    return LoadedModel(spec=spec, weights=w, source=folder, metadata={})
