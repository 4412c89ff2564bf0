import json

import numpy as np
import pytest
import torch

from airfoil.cli import main
from airfoil.compiler.model import ModelError, load_model, model_spec


def test_smollm2_shape(smollm2):
    s = smollm2.spec
    assert (s.n_layers, s.d_model, s.n_heads, s.n_kv_heads, s.d_ff, s.vocab) == (30, 576, 9, 3, 1536, 49152)
    assert s.tied_embeddings and s.head_dim == 64
    assert set(smollm2.metadata["quant_types"]) == {"F32", "Q4_1", "Q8_0"}


def test_shape_only_models():
    llama = model_spec("llama2-7b")
    assert llama.arch == "llama" and llama.d_model == 4096 and llama.d_ff == 11008
    opt = model_spec("opt-6.7b")
    assert opt.arch == "opt" and not opt.gated_ffn and "layers.0.ffn_gate" not in opt.linear_shapes()
    with pytest.raises(ModelError, match="shape-only"):
        load_model("llama2-7b")


def test_gguf_q4_1_dequantisation_by_hand(smollm2):
    """Decode one Q4_1 block ourselves (d, m fp16 then 32 nibbles) and compare with the loader."""
    import gguf

    r = gguf.GGUFReader(str(smollm2.source))
    t = next(t for t in r.tensors if t.name == "blk.0.ffn_down.weight")
    raw = np.asarray(t.data[0, :20])  # first block of row 0
    d, m = raw[:4].view(np.float16).astype(np.float32)
    nib = raw[4:20]
    q = np.concatenate([nib & 0x0F, nib >> 4]).astype(np.float32)
    assert np.array_equal(d * q + m, smollm2.weights["layers.0.ffn_down"][0, :32].numpy())


def test_hf_folder_round_trip(smollm2, tmp_path):
    """Write the model as a Hugging Face folder and read it back through the HF-folder loader."""
    from safetensors.torch import save_file

    from airfoil.compiler.model import LINEAR_KINDS, hf_linear_name

    s = smollm2.spec
    w = smollm2.weights
    tensors = {"model.embed_tokens.weight": w["embed"], "model.norm.weight": w["final_norm"]}
    for i in range(s.n_layers):
        tensors[f"model.layers.{i}.input_layernorm.weight"] = w[f"layers.{i}.attn_norm"]
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = w[f"layers.{i}.ffn_norm"]
        for k in LINEAR_KINDS:
            tensors[f"model.layers.{i}.{hf_linear_name(k)}.weight"] = w[f"layers.{i}.{k}"]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_hidden_layers": s.n_layers, "hidden_size": s.d_model,
        "num_attention_heads": s.n_heads, "num_key_value_heads": s.n_kv_heads, "intermediate_size": s.d_ff,
        "vocab_size": s.vocab, "max_position_embeddings": s.max_positions, "rope_theta": s.rope_theta,
        "rms_norm_eps": s.norm_eps, "tie_word_embeddings": True}))
    back = load_model(str(tmp_path))
    assert back.spec.to_dict() | {"name": ""} == s.to_dict() | {"name": ""}
    for k, v in w.items():
        assert torch.equal(back.weights[k], v), k


def _truncated(src, tmp_path):
    data = src.read_bytes()
    p = tmp_path / "trunc.gguf"
    p.write_bytes(data[: len(data) // 3])
    return p


def _gpt2_gguf(tmp_path):
    import gguf

    p = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(p), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p


def test_truncated_gguf(smollm2, tmp_path):
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_model(str(_truncated(smollm2.source, tmp_path)))


def test_unsupported_architecture(tmp_path):
    with pytest.raises(ModelError, match="unsupported architecture 'gpt2'"):
        load_model(str(_gpt2_gguf(tmp_path)))


@pytest.mark.parametrize("make, message", [(_truncated, "truncated or corrupt"), (None, "unsupported architecture")])
def test_cli_bad_model_exits_2(smollm2, tmp_path, capsys, make, message):
    path = make(smollm2.source, tmp_path) if make else _gpt2_gguf(tmp_path)
    out = tmp_path / "out.afc"
    assert main(["compress", "--model", str(path), "--plan", "w4-dense", "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
