"""Recovery: distillation into the group scales and norm gains, on a tiny random LLaMA."""
import numpy as np
import pytest
import torch

from airfoil.compiler.compress import CompressionPlan, PlanError, RecoveryRecipe
from airfoil.compiler.compressed_model import compress_model
from airfoil.compiler.recovery import recover
from airfoil.host.float_reference import FloatReference
from tests.tiny_model import TINY_SPEC, tiny_llama

SPEC = TINY_SPEC


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llama(0)
    g = torch.Generator().manual_seed(0)
    plan = CompressionPlan.from_dict({"group_size": 16, "smooth_alpha": 0,
                                      "default": {"bits": 3, "n": 8, "method": "magnitude"}}, "tiny")
    tokens = torch.randint(0, SPEC.vocab, (512,), generator=g)
    return model, compress_model(model, plan), tokens


def _kl(model, compressed, tokens) -> float:
    t = FloatReference(SPEC, model.weights).forward(tokens).log_softmax(-1)
    s = FloatReference(SPEC, compressed.dequantised_weights()).forward(tokens).log_softmax(-1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))


def test_recovery_reduces_the_divergence_and_keeps_the_format(tiny):
    model, cm, tokens = tiny
    rec = recover(cm, model.weights, tokens[:384], RecoveryRecipe(steps=30, seq_len=64, lr=1e-2))
    held_out = tokens[384:]
    assert _kl(model, rec, held_out) < 0.9 * _kl(model, cm, held_out)
    for name, c in cm.linears.items():
        r = rec.linears[name]
        assert np.array_equal(r.codes, c.codes) and np.array_equal(r.mask, c.mask) and np.array_equal(r.zero, c.zero)
        assert r.scale.dtype == np.uint16 and r.scale.min() >= 1
    assert rec.metadata["recovery_steps"] == 30


def test_zero_steps_is_the_identity(tiny):
    _, cm, tokens = tiny
    assert recover(cm, {}, tokens, RecoveryRecipe(steps=0)) is cm


@pytest.mark.parametrize("fields, message", [
    ({"steps": -1}, "recovery.steps"), ({"lr": 2.0}, "recovery.lr"), ({"seq_len": 1}, "recovery.seq_len"),
    ({"epochs": 3}, "unknown recovery field 'epochs'"),
])
def test_bad_recovery_fields(fields, message):
    with pytest.raises(PlanError, match=message):
        CompressionPlan.from_dict({"recovery": fields}, "plan.yaml")
