"""Rung 1: the float reference equals transformers' LlamaForCausalLM on the same GGUF."""
import pytest
import torch

from airfoil.host.evaluation import perplexity
from airfoil.host.float_reference import FloatKVCache, FloatReference
from airfoil.host.text import eval_tokens


@pytest.fixture(scope="module")
def hf(smollm2):
    from airfoil.host.hf_reference import load_hf_causal_lm

    return load_hf_causal_lm(smollm2)


@pytest.fixture(scope="module")
def ref(smollm2):
    return FloatReference(smollm2.spec, smollm2.weights)


def test_logits_match_transformers(ref, hf, tokenizer):
    x = eval_tokens(tokenizer, 300)
    with torch.no_grad():
        expected = hf(x[None]).logits[0]
    diff = (ref.forward(x) - expected).abs().max().item()
    assert diff <= 1e-3, diff


PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_matches_transformers(ref, hf, tokenizer, smollm2, prompt):
    ids = torch.tensor(tokenizer(prompt)["input_ids"])
    with torch.no_grad():
        expected = hf.generate(ids[None], max_new_tokens=32, do_sample=False, pad_token_id=2)[0, len(ids):]
    cache = FloatKVCache()
    got = []
    logits = ref.forward(ids, cache)
    for _ in range(32):
        t = int(logits[-1].argmax())
        got.append(t)
        if t == smollm2.metadata["eos_token_id"]:  # transformers stops at end-of-sequence too
            break
        logits = ref.forward(torch.tensor([t]), cache)
    assert got == expected.tolist()
    assert len(got) >= 8


def test_perplexity_matches_transformers(ref, hf, tokenizer):
    x = eval_tokens(tokenizer, 4096)
    with torch.no_grad():
        p_hf = perplexity(lambda t: hf(t[None]).logits[0], x)
    p_ref = perplexity(ref.forward, x)
    assert abs(p_ref / p_hf - 1) <= 0.005, (p_ref, p_hf)


def test_kv_cache_decode_equals_full_forward(ref, tokenizer):
    x = eval_tokens(tokenizer, 40)
    cache = FloatKVCache()
    ref.forward(x[:32], cache)
    step = ref.forward(x[32:33], cache)
    full = ref.forward(x[:33])
    assert torch.allclose(step[0], full[32], atol=1e-4)
