"""ShiftQuant GEMMs and the integer L1 norm: exact integer arithmetic, and the backward formula
against autograd of the float L1 norm."""
import pytest
import torch

from airfoil.host.integer_training import (L1_FRAC, MAX_GROUPS, ShiftQuantLinear, l1_norm_backward, l1_norm_forward,
                                           l1_batch_norm_backward, l1_batch_norm_forward, linear_l1_training_step,
                                           shift_gemm, shift_quantise, tensor_quantise, tile_tags)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_shift_gemm_is_exact_in_integers(bits):
    g = torch.Generator().manual_seed(bits)
    a = torch.randn(16, 96, generator=g) * torch.logspace(0, -2, 96)  # channels of falling range
    b = torch.randn(12, 96, generator=g)
    aq, bq = shift_quantise(a, bits), tensor_quantise(b, bits)
    assert aq.q.abs().max() <= (1 << (bits - 1)) - 1 and set(aq.group.unique().tolist()) <= set(range(MAX_GROUPS))
    y, scale, shift = shift_gemm(aq, bq)
    assert y.dtype == torch.int64
    # the accumulate-then-shift GEMM equals the dequantised product (to float64 rounding)
    want = aq.dequantise() @ bq.dequantise().T
    assert torch.allclose(y.double() * scale * 2.0 ** -shift, want, rtol=0, atol=1e-9 * want.abs().max())


def test_shiftquant_beats_one_tensor_scale_on_outlier_channels():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 128, generator=g)
    a[:, :8] *= 30  # a few wide channels, as gradients have
    b = torch.randn(16, 128, generator=g)
    exact = a.double() @ b.double().T

    def err(q):
        y, s, sh = shift_gemm(q, tensor_quantise(b, 8))  # a fine b: the error is a's
        return ((y.double() * s * 2.0 ** -sh) - exact).norm() / exact.norm()

    assert err(shift_quantise(a, 4)) < 0.8 * err(tensor_quantise(a, 4))


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_row_tiles_take_their_own_groups(bits):
    # with row factors every row's maximum is 1, so over many rows every channel lands in group 0;
    # per tile of rows the narrow channels get finer steps, and each tile is exactly what
    # ShiftQuant of that tile alone gives; the GEMM stays exact with a row's tags
    g = torch.Generator().manual_seed(bits)
    rows = 124  # 15 tiles of 8 and a short one
    a = torch.randn(rows, 64, generator=g, dtype=torch.float64) * 0.2
    a[torch.arange(rows), torch.arange(rows) % 64] = 3.0  # each token one wide channel, every channel wide somewhere
    b = torch.randn(12, 64, generator=g, dtype=torch.float64)
    whole, tiled = shift_quantise(a, bits, per_row=True), shift_quantise(a, bits, per_row=True, row_tile=8)
    assert whole.group.shape == (64,) and tiled.group.shape == (rows, 64)
    assert (whole.group > 0).sum() == 0 and (tiled.group > 0).float().mean() > 0.5
    for lo in range(0, rows, 8):
        alone = shift_quantise(a[lo:lo + 8], bits, per_row=True)
        assert torch.equal(tiled.q[lo:lo + 8], alone.q)
        assert all(torch.equal(tiled.row_group(i), alone.group) for i in range(lo, min(lo + 8, rows)))
    exact = a @ b.T
    y, scale, shift = shift_gemm(tiled, tensor_quantise(b, 8, per_row=True))
    want = tiled.dequantise() @ tensor_quantise(b, 8, per_row=True).dequantise().T
    assert torch.allclose(y.double() * scale * 2.0 ** -shift, want, rtol=0, atol=1e-9 * want.abs().max())
    assert (tiled.dequantise() - a).norm() < (whole.dequantise() - a).norm()
    assert (want - exact).norm() < (shift_gemm_value(whole, b) - exact).norm()


@pytest.mark.parametrize("b_groups", [MAX_GROUPS, 1])
def test_tile_tags_align_as_shift_gemm_does(b_groups):
    # the training tile (a's group picks one of G accumulators, b's shifts b's code left by
    # G - 1 - tag, then acc_g << (G - 1 - g)) gives shift_gemm's integers both for two ShiftQuant
    # operands (the forward: x and W) and for a per-tensor second operand (the backward GEMMs)
    g = torch.Generator().manual_seed(b_groups)
    a = torch.randn(10, 48, generator=g, dtype=torch.float64) * torch.logspace(0, -1.2, 48, dtype=torch.float64)
    b = torch.randn(6, 48, generator=g, dtype=torch.float64) * torch.logspace(-1.2, 0, 48, dtype=torch.float64)
    aq = shift_quantise(a, 6, per_row=True, row_tile=4)
    bq = shift_quantise(b, 6, per_row=True, row_tile=4, groups=b_groups)
    y, _, _ = shift_gemm(aq, bq)
    top = MAX_GROUPS - 1
    for i in range(10):
        for j in range(6):
            ta, tb = tile_tags(aq, bq, i, j, MAX_GROUPS, MAX_GROUPS)
            prods = aq.q[i] * (bq.q[j] << (top - tb))
            acc = [int(prods[ta == t].sum()) for t in range(MAX_GROUPS)]
            assert sum(acc[t] << (top - t) for t in range(MAX_GROUPS)) == int(y[i, j])
    if b_groups > 1:
        assert len(set(tile_tags(aq, bq, 0, 0, MAX_GROUPS, MAX_GROUPS)[1].tolist())) > 1
        with pytest.raises(ValueError, match="tile of at least"):
            tile_tags(aq, bq, 0, 0, MAX_GROUPS, 1)


def shift_gemm_value(aq, b):
    y, scale, shift = shift_gemm(aq, tensor_quantise(b, 8, per_row=True))
    return y.double() * scale * 2.0 ** -shift


def test_stochastic_rounding_is_unbiased_and_seeded():
    x = torch.full((4000, 16), 0.3)
    x[0, 0] = 7.0  # sets the scale: 0.3 sits between two steps
    q1 = shift_quantise(x, 4, stochastic=True, gen=torch.Generator().manual_seed(5))
    q2 = shift_quantise(x, 4, stochastic=True, gen=torch.Generator().manual_seed(5))
    assert torch.equal(q1.q, q2.q)
    mean = q1.dequantise()[1:, 1:].mean().item()
    assert abs(mean - 0.3) < 0.01


def test_l1_norm_forward_and_backward_match_autograd_of_the_float_version():
    g = torch.Generator().manual_seed(1)
    frac = 10
    x = torch.randn(6, 64, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1, 3, 10, 0.2, 2])[:, None] + 1
    xi = torch.round(x * 2 ** frac).to(torch.int64)
    y, saved = l1_norm_forward(xi, frac)
    xr = (xi.double() / 2 ** frac).requires_grad_(True)
    d = xr - xr.mean(-1, keepdim=True)
    yr = d / d.abs().mean(-1, keepdim=True)
    # error of the integer mean/deviation (and eps = 1) relative to the row's deviation, plus rounding
    bound = (yr.abs() + 1) * 1.5 / saved["s"].double() + 2 / 2 ** L1_FRAC
    assert ((y.double() / 2 ** L1_FRAC - yr).abs() <= bound).all()
    gy = torch.round(torch.randn(6, 64, generator=g, dtype=torch.float64) * 2 ** L1_FRAC).to(torch.int64)
    (yr * gy.double() / 2 ** L1_FRAC).sum().backward()
    dx = l1_norm_backward(gy, saved).double() / 2 ** L1_FRAC
    assert ((dx - xr.grad).norm() / xr.grad.norm()).item() < 1e-2  # eps = 1 and integer rounding of s


def test_shiftquant_linear_gradients_track_float():
    torch.manual_seed(0)
    layer = ShiftQuantLinear(48, 24, bits=8, gen=torch.Generator().manual_seed(0))
    ref = torch.nn.Linear(48, 24)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(32, 48, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    layer(x).pow(2).sum().backward()
    ref(x2).pow(2).sum().backward()
    for a, b in ((x.grad, x2.grad), (layer.weight.grad, ref.weight.grad)):
        assert ((a - b).norm() / b.norm()).item() < 0.05


def test_training_step_in_integers_tracks_float_autograd():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 32, generator=g, dtype=torch.float64)
    w = torch.randn(16, 32, generator=g, dtype=torch.float64) * 0.3
    gy = torch.randn(8, 16, generator=g, dtype=torch.float64)
    step = linear_l1_training_step(x, w, gy, 8, torch.Generator().manual_seed(0))
    for key in ("z", "y", "dz", "dx", "dw"):
        assert step[key].dtype == torch.int64, key
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    z = xr @ wr.T
    d = z - z.mean(-1, keepdim=True)
    (d / d.abs().mean(-1, keepdim=True) * gy).sum().backward()
    assert torch.allclose(step["y"].double() / 2 ** L1_FRAC, (d / d.abs().mean(-1, keepdim=True)).detach(), atol=0.06)
    for got, want in ((step["dx_value"], xr.grad), (step["dw_value"], wr.grad)):
        assert ((got - want).norm() / want.norm()).item() < 0.06


def test_l1_batch_norm_forward_and_backward_match_autograd_of_the_float_version():
    g = torch.Generator().manual_seed(2)
    frac = 10
    # [batch 48, channels 5]: channels of different scale and offset
    x = torch.randn(48, 5, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1, 3, 10, 2]) + 1
    xi = torch.round(x * 2 ** frac).to(torch.int64)
    y, saved = l1_batch_norm_forward(xi, frac)
    xr = (xi.double() / 2 ** frac).requires_grad_(True)
    d = xr - xr.mean(0, keepdim=True)
    yr = d / d.abs().mean(0, keepdim=True)
    assert (y.double() / 2 ** L1_FRAC - yr).abs().max().item() < 0.01
    gy = torch.round(torch.randn(48, 5, generator=g, dtype=torch.float64) * 2 ** L1_FRAC).to(torch.int64)
    (yr * gy.double() / 2 ** L1_FRAC).sum().backward()
    dx = l1_batch_norm_backward(gy, saved).double() / 2 ** L1_FRAC
    assert dx.shape == xi.shape
    assert ((dx - xr.grad).norm() / xr.grad.norm()).item() < 1e-2
