"""Length-adaptive lowering: a compressed model's graph to one instruction program per config.

The pipeline is a list of named passes over a small graph IR, each a function that can be
run and tested on its own:

1. ``build_graph``: the model as ops on tensors (shape, dtype, placement), fused as the
   hardware runs it: RoPE into Q/K, score + softmax + P.V into one ATTENTION, SiLU with the
   gate multiply, the residual adds into the SFU.
2. ``tile_linears``: each linear layer in tiles of whole rows that fit half the weight
   double buffer (a lowering failure names the layer).
3. ``place_hbm``: the weight image striped over all pseudo-channels (double-buffered prefetch:
   one LD per tile reads all channels at once), the KV cache per (layer, KV head) spread over the
   channels, the input and logits regions.
4. ``allocate_buffers``: on-chip regions for one *chunk* of tokens.  A chunk's activations stay
   on chip through all layers (in decode, a chunk is the one new token: always-on-chip decode:
   only weights and KV move); the chunk size is the largest power of two that fits.
5. ``LengthAdaptiveLowering``: the instruction stream.  The host sets R0 (tokens) and R1 (first
   position); the program loops over ceil(R0 / chunk) chunks with exact token counts (no
   padding), so one program serves every prompt length and decode position.

Register use: R0 tokens, R1 first position, R2 chunks, R3 chunk index, R4 tokens in the
chunk, R5 the chunk's first position, R6 attention length, R7 last row of the chunk, R8 1 in
the last chunk, R9 tile index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from airfoil import numerics as nx
from airfoil.config import BOARDS, SPARSE_M, AirfoilConfig
from airfoil.errors import AirfoilError
from airfoil.isa import (INSTR_BYTES, Affine, Buffer, Instruction, Opcode, Queue, SfuFunc, SparsePattern,
                         WeightWidth, encode_program)
from airfoil.compiler.compress import LayerRecipe
from airfoil.compiler.model import ModelSpec
from airfoil.compiler.weight_image import (AXI_BEAT, core_sub_tile_bytes, core_weight_bank_bytes, lane_interleave,
                                           pack_tile)

__all__ = ["LoweringError", "GraphOp", "Graph", "build_graph", "tile_linears", "place_hbm", "allocate_buffers",
           "LengthAdaptiveLowering", "Program", "compile_model", "PASSES", "program_stats", "exact_macs", "dispatched"]

L_, C_, S_, T_ = Queue.LOAD, Queue.COMPUTE, Queue.SFU, Queue.STORE


class LoweringError(AirfoilError):
    """The model cannot be lowered onto the config; the message names the op and why."""


# ------------------------------------------------------------------ graph IR
@dataclass
class GraphOp:
    kind: str  # linear | rmsnorm | layernorm | rope | attention | silu_mul | relu | add | requant
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict)


@dataclass
class Graph:
    spec: ModelSpec
    recipes: dict[str, LayerRecipe]
    group_size: int
    ops: list[GraphOp]
    tensors: dict[str, dict]  # name -> {shape, dtype, layout, placement}
    tiles: dict[str, int] = field(default_factory=dict)  # linear -> rows per tile
    scale_exp: dict[str, int] = field(default_factory=dict)  # linear -> E of its group scales
    hbm: dict = field(default_factory=dict)
    buffers: dict = field(default_factory=dict)


def build_graph(spec: ModelSpec, recipes: dict[str, LayerRecipe], group_size: int) -> Graph:
    """One block's ops per layer plus the head, already fused the way the SFU runs them."""
    ops: list[GraphOp] = []
    tensors: dict[str, dict] = {}
    d, hd, nh, nkv, ff = spec.d_model, spec.head_dim, spec.n_heads, spec.n_kv_heads, spec.d_ff

    def t(name, width, dtype, placement="on-chip"):
        # layout: rows of one token, row-major; an INT8 row is followed by its exponent element
        layout = "rows+exponent" if dtype == "int8" else "rows"
        tensors[name] = {"shape": ("T", width), "dtype": dtype, "layout": layout, "placement": placement}
        return name

    norm = "rmsnorm" if spec.arch == "llama" else "layernorm"
    t("h", d, "int32")
    for i in range(spec.n_layers):
        p = f"layers.{i}."
        ops.append(GraphOp(norm, p + "attn_norm", ("h",), (t(p + "x", d, "int8"),)))
        for kind, width in (("attn_q", nh * hd), ("attn_k", nkv * hd), ("attn_v", nkv * hd)):
            ops.append(GraphOp("linear", p + kind, (p + "x",), (t(p + kind[-1], width, "int32"),)))
        if spec.arch == "llama":
            ops.append(GraphOp("rope", p + "rope", (p + "q", p + "k"), (p + "q", p + "k")))
        t(p + "kv_cache", 2 * nkv * hd, "int8", "hbm")
        ops.append(GraphOp("attention", p + "attention", (p + "q", p + "k", p + "v"), (t(p + "o", nh * hd, "int32"),),
                           {"fused": "score+causal softmax+P.V", "kv": p + "kv_cache"}))
        ops.append(GraphOp("linear", p + "attn_o", (p + "o",), (t(p + "delta", d, "int32"),)))
        ops.append(GraphOp("add", p + "attn_residual", ("h", p + "delta"), ("h",)))
        ops.append(GraphOp(norm, p + "ffn_norm", ("h",), (p + "x",)))
        if spec.gated_ffn:
            ops.append(GraphOp("linear", p + "ffn_gate", (p + "x",), (t(p + "gate", ff, "int32"),)))
            ops.append(GraphOp("linear", p + "ffn_up", (p + "x",), (t(p + "up", ff, "int32"),)))
            ops.append(GraphOp("silu_mul", p + "silu_mul", (p + "gate", p + "up"), (t(p + "a", ff, "int8"),)))
        else:
            ops.append(GraphOp("linear", p + "ffn_up", (p + "x",), (t(p + "up", ff, "int32"),)))
            ops.append(GraphOp("relu", p + "relu", (p + "up",), (t(p + "a", ff, "int8"),)))
        ops.append(GraphOp("linear", p + "ffn_down", (p + "a",), (p + "delta",)))
        ops.append(GraphOp("add", p + "ffn_residual", ("h", p + "delta"), ("h",)))
    ops.append(GraphOp(norm, "final_norm", ("h",), (t("xf", d, "int8"),)))
    ops.append(GraphOp("linear", "lm_head", ("xf",), (t("logits", spec.vocab, "int32", "hbm"),), {"last_token": True}))
    return Graph(spec, recipes, group_size, ops, tensors)


def _linear_shape(g: Graph, name: str) -> tuple[int, int]:
    return g.spec.linear_shapes()[name]


@dataclass(frozen=True)
class SubTileStripe:
    """Consecutive sub-tiles of a tile striped alike (``tile_stripes``): slices ``first`` ..
    ``first + count - 1``, each in chunks of ``chunk`` bytes, one a channel."""

    first: int
    count: int
    chunk: int


def tile_stripes(rows: int, k: int, r: LayerRecipe, group_size: int, cfg: AirfoilConfig) -> list[SubTileStripe]:
    """How a tile lies in HBM (weight_image's module docstring): each sub-tile striped over the
    channels on its own, in equal chunks of whole AXI beats, its chunks after the previous
    sub-tile's in every channel; runs of sub-tiles of one chunk size (two at most: those with a
    row of the tile's last group and those without) are one stripe, one LD.  A tile not cut in
    slices is one stripe of one."""
    C = cfg.hbm_channels
    out: list[SubTileStripe] = []
    for s, size in enumerate(core_sub_tile_bytes(rows, k, r.bits, r.n, group_size, cfg)):
        if not size:
            continue
        chunk = _align(-(-size // C))
        if out and out[-1].chunk == chunk and out[-1].first + out[-1].count == s:
            out[-1] = SubTileStripe(out[-1].first, out[-1].count + 1, chunk)
        else:
            out.append(SubTileStripe(s, 1, chunk))
    return out


def striped_bytes(rows: int, k: int, r: LayerRecipe, group_size: int, cfg: AirfoilConfig) -> int:
    """A tile's bytes once striped (``tile_stripes``), padding included."""
    return cfg.hbm_channels * sum(st.count * st.chunk for st in tile_stripes(rows, k, r, group_size, cfg))


def tile_fits(rows: int, k: int, r: LayerRecipe, group_size: int, cfg: AirfoilConfig) -> bool:
    """Whether a tile fits its place in a half of the weight buffer: a tile cut in slices each
    sub-tile in its slice's bank (``core_weight_bank_bytes``), any other the half."""
    stripes = tile_stripes(rows, k, r, group_size, cfg)
    if len(core_sub_tile_bytes(rows, k, r.bits, r.n, group_size, cfg)) == 1:  # one piece
        return cfg.hbm_channels * sum(st.chunk for st in stripes) <= cfg.weight_half_bytes
    return all(cfg.hbm_channels * st.chunk <= core_weight_bank_bytes(cfg) for st in stripes)


def tile_linears(g: Graph, cfg: AirfoilConfig) -> Graph:
    """Rows per weight tile.  A tile fits half the weight buffer (``tile_fits``: its sub-tiles
    their banks); among the sizes that do, the one with the least decode time, counting each tile
    as the longer of its HBM load (its stripes, padding included) and its MV on the MPE (whole
    beats of ``rows_per_beat`` rows: 2 per chain dense, 1 per chain N:16 sparse)."""
    half = cfg.weight_half_bytes
    chains = cfg.cores * cfg.chains_per_core

    def fits(rows, k, r):
        return tile_fits(rows, k, r, g.group_size, cfg)

    for op in g.ops:
        if op.kind != "linear":
            continue
        o, k = _linear_shape(g, op.name)
        r = g.recipes[op.name]
        if k % SPARSE_M or k % g.group_size:
            raise LoweringError(f"{op.name}: {k} inputs are not a multiple of 16 and of the group size "
                                f"{g.group_size}; the MPE cannot tile it")
        if not fits(1, k, r):
            raise LoweringError(f"{op.name}: one row of {k} inputs ({striped_bytes(1, k, r, g.group_size, cfg)} "
                                f"bytes striped) exceeds half the weight buffer ({half} bytes) or a decoder "
                                f"slice's bank of it ({core_weight_bank_bytes(cfg)} bytes)")
        lo, hi = 1, o  # the most rows that fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid, k, r) else (lo, mid - 1)
        most = lo
        per_beat = chains * (2 if r.n == SPARSE_M else 1)
        beats_per_row = -(-k * r.n // SPARSE_M // cfg.dsp_per_chain)

        def cost(rows):
            load = striped_bytes(rows, k, r, g.group_size, cfg) / cfg.hbm_bytes_per_cycle
            return -(-o // rows) * max(load, -(-rows // per_beat) * beats_per_row)

        first = -(-o // most)
        candidates = {min(most, -(-o // n)) for n in range(first, first + 4)}  # balanced tiles
        candidates |= {m * per_beat for m in range(1, most // per_beat + 1)}  # whole beats
        g.tiles[op.name] = min(sorted(candidates), key=lambda rows: (cost(rows), -rows))
    return g


def _align(x: int, a: int = AXI_BEAT) -> int:
    return -(-x // a) * a


def place_hbm(g: Graph, cfg: AirfoilConfig, max_len: int) -> Graph:
    """Addresses in HBM (bytes, per pseudo-channel).  Every region is striped over all channels at
    the same offset in each: the weight image tile by tile, the gains, and the KV cache of each
    (layer, kv head), position p of K (and of V) in channel p mod C, so that one LD reads a
    head's whole cache, and one ST appends a token, at the bandwidth of every channel."""
    spec = g.spec
    C = cfg.hbm_channels
    hd = spec.head_dim
    if max_len > spec.max_positions:
        raise LoweringError(f"max length {max_len} exceeds the model's {spec.max_positions} positions")
    kv_rows = _align(-(-max_len // C) * (hd + 1))  # one channel's share of a head's K (or V) rows
    kv_region = 2 * kv_rows
    n_kv = spec.n_layers * spec.n_kv_heads
    off = n_kv * kv_region  # KV first, then the striped weight image
    weights = {}
    for op in g.ops:
        if op.kind != "linear":
            continue
        o, k = _linear_shape(g, op.name)
        r = g.recipes[op.name]
        rows = g.tiles[op.name]
        n_tiles = -(-o // rows)
        chunk = striped_bytes(rows, k, r, g.group_size, cfg) // C  # the tile's bytes in each channel
        weights[op.name] = {"offset": off, "chunk": chunk, "tiles": n_tiles, "rows": rows}
        off += n_tiles * chunk
    d = spec.d_model
    n_norms = 2 * spec.n_layers + 1
    gains = {"offset": off, "chunk": _align(-(-n_norms * d * 4 // C))}
    off += gains["chunk"]
    inputs = {"channel": 0, "offset": off, "bytes": _align(max_len * d * 4)}
    logits = {"channel": 1 % C, "offset": off + inputs["bytes"], "bytes": _align(spec.vocab * 4)}
    top = logits["offset"] + logits["bytes"]
    board_bytes = BOARDS[cfg.board].hbm_gib * 2**30 // BOARDS[cfg.board].hbm_channels
    if top > board_bytes:
        raise LoweringError(f"the weight image and KV cache need {top} bytes per pseudo-channel, more than the "
                            f"{board_bytes} bytes of each of the {C} channels (max length {max_len})")
    g.hbm = {"kv_region": kv_region, "kv_rows": kv_rows, "weights": weights, "gains": gains, "inputs": inputs,
             "logits": logits, "bytes_per_channel": top, "max_len": max_len}
    return g


def _block(n: int) -> int:
    """``n`` rounded up to a multiple of SPARSE_M (16) bytes."""
    return -(-n // SPARSE_M) * SPARSE_M


def operand_row(k: int) -> int:
    """ACT bytes between the tokens' rows of an MM operand: k codes and the row's exponent,
    padded to whole 16-byte blocks so that every token's row starts on a block (the MPE reads
    operand rows in aligned blocks)."""
    return _block(k + 1)


def allocate_buffers(g: Graph, cfg: AirfoilConfig) -> Graph:
    """On-chip regions for a chunk of tokens; the chunk is the largest power of two (<= 64) that
    fits (a chunk of 1 is decode: all of a layer's activations on chip)."""
    spec = g.spec
    d, hd, nh, nkv, ff, V = spec.d_model, spec.head_dim, spec.n_heads, spec.n_kv_heads, spec.d_ff, spec.vocab
    glob_cap = cfg.global_buffer_kib * 1024 // 4
    act_cap = cfg.act_buffer_kib * 1024
    kv_cap = cfg.kv_buffer_kib * 1024
    max_len = g.hbm["max_len"]
    if 2 * max_len * (hd + 1) > kv_cap:
        raise LoweringError(f"attention: K and V of {max_len} positions ({2 * max_len * (hd + 1)} bytes per head) "
                            f"exceed the KV buffer ({kv_cap} bytes); lower --max-len")
    n_norms = 2 * spec.n_layers + 1

    def plan(tc: int):
        G = {"gains": 0}
        top = n_norms * d
        G["logits"], top = top, top + V
        for name, width in (("h", d), ("delta", d)):
            G[name], top = top, top + tc * width
        shared = top  # attention temporaries and the FFN's gate/up never live at once
        G["q"] = shared
        G["k"] = G["q"] + tc * nh * hd
        G["v"] = G["k"] + tc * nkv * hd
        G["o"] = G["v"] + tc * nkv * hd
        G["gate"] = shared
        G["up"] = G["gate"] + tc * ff
        top = max(G["o"] + tc * nh * hd, G["up"] + tc * ff)
        # activation regions start on 16-byte blocks: the MPE reads an operand row in blocks of 16
        A = {"x": 0}
        atop = tc * operand_row(d)
        A["q"], atop = atop, _block(atop + tc * nh * (hd + 1))
        A["k"], atop = atop, _block(atop + tc * nkv * (hd + 1))
        A["v"], atop = atop, _block(atop + tc * nkv * (hd + 1))
        A["o"], atop = atop, atop + tc * operand_row(nh * hd)
        A["a"] = A["q"]  # the FFN's quantised activation reuses the attention rows
        atop = max(atop, A["a"] + tc * operand_row(ff))
        return G, top, A, atop

    chunk = 0
    for tc in (64, 32, 16, 8, 4, 2, 1):
        G, gtop, A, atop = plan(tc)
        if gtop <= glob_cap and atop <= act_cap:
            chunk = tc
            break
    if not chunk:
        G, gtop, A, atop = plan(1)
        what = "global" if gtop > glob_cap else "activation"
        raise LoweringError(f"decode: one token's activations need {gtop * 4} bytes of global and {atop} of "
                            f"activation buffer; the {what} buffer is too small for always-on-chip decode")
    # K/V staging: two slots when they fit, so that one KV head's loads overlap the previous
    # head's attention; one slot otherwise
    head = max_len * (hd + 1)
    slots = 2 if 4 * head <= kv_cap and nkv > 1 else 1
    g.buffers = {"chunk": chunk, "global": G, "act": A,
                 "kv": {"k": 0, "v": head, "slots": slots, "slot": 2 * head},
                 "global_used": gtop, "act_used": atop}
    return g


PASSES = ("build_graph", "tile_linears", "place_hbm", "allocate_buffers", "LengthAdaptiveLowering")


# ------------------------------------------------------------------ lowering
def _setr(rd, rs=None, mul=1, rt=None, mul_t=1, add=0, shift=0, lo=-(1 << 35), hi=(1 << 35) - 1) -> Instruction:
    return Instruction(Opcode.SETR, {"rd": rd, "rs": rs or 0, "use_rs": int(rs is not None),
                                     "mul": mul if rs is not None else 0, "rt": rt or 0,
                                     "use_rt": int(rt is not None), "mul_t": mul_t if rt is not None else 0,
                                     "add": add, "shift": shift, "lo": lo, "hi": hi})


def _loop(count: Affine, body: list, reg: int) -> list:
    return [Instruction(Opcode.LOOP, {"count": count, "body": len(body), "reg": reg}), *body]


def _ld(buffer, channel, channels, hbm, buf, rows, row_bytes, hbm_stride=0, buf_stride=0, elem_bytes=1,
        wait=(), release=(), op=Opcode.LD, phase=Affine(0), buf_group_stride=0) -> Instruction:
    return Instruction(op, {"channel": channel, "channels": channels, "phase": phase, "buffer": buffer, "hbm": hbm,
                            "buf": buf,
                            "rows": rows, "row_bytes": row_bytes, "hbm_stride": hbm_stride, "buf_stride": buf_stride,
                            "elem_bytes": elem_bytes, "buf_group_stride": buf_group_stride}, wait, release)


def _sfu(func, src0=Affine(0), stride0=0, src1=Affine(0), stride1=0, src2=Affine(0), dst=Affine(0), stride_d=0,
         width=0, rows=Affine(0), pos=Affine(0), param=0, frac=0, wait=(), release=()) -> Instruction:
    return Instruction(Opcode.SFU, {"func": func, "src0": src0, "stride0": stride0, "src1": src1, "stride1": stride1,
                                    "src2": src2, "dst": dst, "stride_d": stride_d, "width": width, "rows": rows,
                                    "pos": pos, "param": param, "frac": frac}, wait, release)


R_T, R_POS, R_CHUNKS, R_J, R_TJ, R_POS0, R_LEN, R_LAST_ROW, R_IS_LAST, R_TILE = range(10)


@dataclass
class Program:
    """A compiled program: the prefill and decode sections, the weight image per channel and
    everything the host needs to run it."""

    spec: ModelSpec
    cfg: AirfoilConfig
    sections: dict[str, list[Instruction]]
    hbm: dict
    buffers: dict
    graph: Graph
    images: list[bytearray] | None = None  # weight image + gains per channel (None: shapes only)

    def instruction_bytes(self) -> int:
        return sum(len(s) for s in self.sections.values()) * INSTR_BYTES

    def encoded(self) -> dict[str, bytes]:
        return {k: encode_program(v, self.cfg.hbm_channels) for k, v in self.sections.items()}

    def weight_image_bytes(self) -> int:
        w = self.hbm["weights"]
        return sum(x["tiles"] * x["chunk"] for x in w.values()) * self.cfg.hbm_channels


class LengthAdaptiveLowering:
    """Emits the instruction stream of a graph that went through the placement passes."""

    def __init__(self, g: Graph, cfg: AirfoilConfig):
        self.g, self.cfg, self.spec = g, cfg, g.spec

    def lower(self, decode: bool) -> list[Instruction]:
        spec, g = self.spec, self.g
        self._next_half = 0
        tc = 1 if decode else g.buffers["chunk"]
        log2 = int(math.log2(tc))
        hb = g.hbm
        C = self.cfg.hbm_channels
        d = spec.d_model
        out = [
            _setr(R_CHUNKS, rs=R_T, add=tc - 1, shift=log2, lo=0),
            # all norm gains stay on chip for the whole pass; the SFU takes the LOAD token
            _ld(Buffer.GLOBAL, 0, C, Affine(hb["gains"]["offset"]), Affine(g.buffers["global"]["gains"]), Affine(C),
                hb["gains"]["chunk"], 0, hb["gains"]["chunk"] // 4, 4, release=(S_,)),
            # seeds the SFU -> LOAD token that each chunk's input load waits for
            _sfu(SfuFunc.ADD, rows=Affine(0), wait=(L_,), release=(L_,)),
        ]
        body = [
            _setr(R_TJ, rs=R_T, rt=R_J, mul_t=-tc, lo=0, hi=tc),
            _setr(R_POS0, rs=R_POS, rt=R_J, mul_t=tc),
            _setr(R_LEN, rs=R_POS0, rt=R_TJ),
            _setr(R_LAST_ROW, rs=R_TJ, add=-1),
            _setr(R_IS_LAST, rs=R_J, rt=R_CHUNKS, mul_t=-1, add=2, lo=0, hi=1),
        ]
        inp = hb["inputs"]
        body.append(_ld(Buffer.GLOBAL, inp["channel"], 1, Affine(inp["offset"], R_J, tc * d * 4),
                        Affine(g.buffers["global"]["h"]), Affine(0, R_TJ, 1), d * 4, d * 4, d, 4,
                        wait=(S_,), release=(S_,)))
        head_start = next(i for i, op in enumerate(g.ops) if op.name == "final_norm")
        kv_stage_at = None  # where the last attention's first K/V staging load sits in the body
        for i, op in enumerate(g.ops[:head_start]):
            prev = g.ops[i - 1].kind if i else "load"
            nxt = g.ops[i + 1].kind if i + 1 < len(g.ops) else None
            insts = self._with_tokens(op, prev, nxt, decode, tc)
            if op.kind == "linear" and prev == "attention" and kv_stage_at is not None:
                # the output projection's first weight loads (a tile's stripes) go before the K/V
                # staging loads, so the HBM streams them while the attention waits for the new K/V
                # rows' stores
                n_lds = next(j for j, ins in enumerate(insts) if ins.opcode != Opcode.LD)
                body[kv_stage_at:kv_stage_at] = insts[:n_lds]
                insts = insts[n_lds:]
                kv_stage_at = None
            if op.kind == "attention":
                kv_stage_at = len(body) + next(j for j, ins in enumerate(insts) if ins.opcode == Opcode.LD
                                               and ins["buffer"] == Buffer.KV)
            body += insts
        final_norm = self._op(g.ops[head_start], decode, tc)
        body += self._tokens(final_norm, set(), {L_})  # frees h for the next chunk's input load
        # the LM head runs once, in the last chunk, on the last token's row
        head = [_sfu(SfuFunc.ADD, rows=Affine(0), release=(C_,))]  # hands the normalised row over
        head += self._linear(g.ops[head_start + 1], decode, first_wait=True, last_release=T_)
        lg = g.hbm["logits"]
        head.append(_ld(Buffer.GLOBAL, lg["channel"], 1, Affine(lg["offset"]), Affine(g.buffers["global"]["logits"]),
                        Affine(1), spec.vocab * 4, 0, 0, 4, wait=(C_,), op=Opcode.ST))
        body += _loop(Affine(0, R_IS_LAST, 1), head, R_TILE + 1)
        out += _loop(Affine(0, R_CHUNKS, 1), body, R_J)
        # consume the last chunk's SFU -> LOAD token
        out.append(_ld(Buffer.GLOBAL, 0, 1, Affine(0), Affine(0), Affine(0), 4, elem_bytes=4, wait=(S_,)))
        out += [Instruction(Opcode.BARRIER, {}), Instruction(Opcode.END, {})]
        return out

    @staticmethod
    def _tokens(insts: list[Instruction], wait: set, release: set) -> list[Instruction]:
        """Add dependency tokens to the first (wait) and last (release) instruction of an op."""
        first, last = insts[0], insts[-1]
        insts = list(insts)
        insts[0] = Instruction(first.opcode, first.fields, first.wait | wait, first.release)
        last = insts[-1]
        insts[-1] = Instruction(last.opcode, last.fields, last.wait, last.release | release)
        return insts

    def _with_tokens(self, op: GraphOp, prev: str, nxt: str | None, decode: bool, tc: int) -> list[Instruction]:
        """An SFU op waits for the MM that produced its input and hands its output to the next MM;
        the first MM of a linear waits for the SFU, the last one hands over to the SFU."""
        if op.kind == "linear":
            return self._linear(op, decode, first_wait=prev != "linear", last_release=S_ if nxt != "linear" else None)
        wait = {C_} if prev == "linear" else ({L_} if prev == "load" else set())
        release = {C_} if nxt == "linear" else set()
        return self._tokens(self._op(op, decode, tc), wait, release)

    # one graph op -> instructions
    def _op(self, op: GraphOp, decode: bool, tc: int) -> list[Instruction]:
        spec, g = self.spec, self.g
        G, A = g.buffers["global"], g.buffers["act"]
        d, hd, nh, nkv, ff = spec.d_model, spec.head_dim, spec.n_heads, spec.n_kv_heads, spec.d_ff
        rows = Affine(0, R_TJ, 1)
        layer = int(op.name.split(".")[1]) if op.name.startswith("layers.") else spec.n_layers
        kind = op.name.rsplit(".", 1)[-1]
        if op.kind in ("rmsnorm", "layernorm"):
            norm_index = 2 * layer + (1 if kind == "ffn_norm" else 0) if layer < spec.n_layers else 2 * spec.n_layers
            dst = A["x"]
            func = SfuFunc.RMSNORM if op.kind == "rmsnorm" else SfuFunc.LAYERNORM
            return [_sfu(func, src0=Affine(G["h"]), stride0=d, dst=Affine(dst), stride_d=operand_row(d), width=d, rows=rows,
                         param=G["gains"] + norm_index * d)]
        if op.kind == "rope":
            return [_sfu(SfuFunc.ROPE, src0=Affine(G["q"]), stride0=nh * hd, dst=Affine(G["q"]), stride_d=nh * hd,
                         width=nh * hd, rows=rows, pos=Affine(0, R_POS0, 1), param=hd),
                    _sfu(SfuFunc.ROPE, src0=Affine(G["k"]), stride0=nkv * hd, dst=Affine(G["k"]), stride_d=nkv * hd,
                         width=nkv * hd, rows=rows, pos=Affine(0, R_POS0, 1), param=hd)]
        if op.kind == "attention":
            return self._attention(layer, tc)
        if op.kind == "add":
            return [_sfu(SfuFunc.ADD, src0=Affine(G["h"]), stride0=d, src1=Affine(G["delta"]), stride1=d,
                         dst=Affine(G["h"]), stride_d=d, width=d, rows=rows)]
        if op.kind == "silu_mul":
            return [_sfu(SfuFunc.SILU_MUL, src0=Affine(G["gate"]), stride0=ff, src1=Affine(G["up"]), stride1=ff,
                         dst=Affine(A["a"]), stride_d=operand_row(ff), width=ff, rows=rows, frac=2 * nx.FRAC_A)]
        if op.kind == "relu":
            return [_sfu(SfuFunc.RELU, src0=Affine(G["up"]), stride0=ff, dst=Affine(A["a"]), stride_d=operand_row(ff),
                         width=ff, rows=rows, frac=nx.FRAC_A)]
        raise LoweringError(f"{op.name}: no lowering for op kind {op.kind!r}")

    def _linear(self, op: GraphOp, decode: bool, first_wait: bool, last_release: Queue | None) -> list[Instruction]:
        g = self.g
        G, A = g.buffers["global"], g.buffers["act"]
        o, k = _linear_shape(g, op.name)
        r = g.recipes[op.name]
        w = g.hbm["weights"][op.name]
        C = self.cfg.hbm_channels
        half = self.cfg.weight_half_bytes
        kind = op.name.rsplit(".", 1)[-1]
        src = {"attn_q": "x", "attn_k": "x", "attn_v": "x", "attn_o": "o", "ffn_gate": "x", "ffn_up": "x",
               "ffn_down": "a", "lm_head": "x"}[kind]
        dst = {"attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_o": "delta", "ffn_gate": "gate", "ffn_up": "up",
               "ffn_down": "delta", "lm_head": "logits"}[kind]
        frac = {"attn_o": nx.FRAC_H, "ffn_down": nx.FRAC_H, "lm_head": nx.FRAC_L}.get(kind, nx.FRAC_A)
        last_token = kind == "lm_head"
        tokens = Affine(1) if decode or last_token else Affine(0, R_TJ, 1)
        act = Affine(A[src], R_LAST_ROW, operand_row(k)) if last_token and not decode else Affine(A[src])
        out_stride = o if not last_token else 0
        rows_t, n_tiles = w["rows"], w["tiles"]
        opcode = Opcode.MV if decode or last_token else Opcode.MM

        bank = core_weight_bank_bytes(self.cfg)
        h0 = self._next_half  # tile t in half (h0 + t) mod 2

        def tile(t_aff: Affine, t_half: int, n_rows: int, first: bool, last: bool) -> list:
            t_half ^= h0
            # one LD a stripe (weight_image's module docstring): row s C + c is sub-tile s's chunk
            # in channel c, at s chunks into the tile there, and lands at bank s, chunk c
            at = (Affine(w["offset"], t_aff.reg, w["chunk"] * t_aff.scale) + w["chunk"] * t_aff.base
                  if t_aff.reg is not None else Affine(w["offset"] + w["chunk"] * t_aff.base))
            lds = []
            stripes = tile_stripes(n_rows, k, r, g.group_size, self.cfg)
            for j, st in enumerate(stripes):
                banked = st.count > 1
                lds.append(_ld(Buffer.WEIGHT, 0, C, at, Affine(t_half * half + st.first * bank), Affine(st.count * C),
                               st.chunk, st.chunk if banked else 0, st.chunk,
                               release=(C_,) if j == len(stripes) - 1 else (),
                               buf_group_stride=bank - C * st.chunk if banked else 0))
                at = at + st.count * st.chunk
            out_aff = (Affine(G[dst], t_aff.reg, rows_t * t_aff.scale) + rows_t * t_aff.base
                       if t_aff.reg is not None else Affine(G[dst] + rows_t * t_aff.base))
            wait = {L_} | ({S_} if first and first_wait else set())
            release = {last_release} if last and last_release is not None else set()
            mm = Instruction(opcode, {
                "pattern": SparsePattern.of(r.n), "width": WeightWidth.of(r.bits), "act": act, "act_stride": operand_row(k),
                "weight": Affine(t_half * half), "out": out_aff, "out_stride": out_stride, "rows": n_rows, "k": k,
                "tokens": tokens, "accumulate": 0, "requantise": 1, "out_frac": frac,
                "scale_exp": g.scale_exp.get(op.name, 0), "group_size": g.group_size}, wait, release)
            return [*lds, mm]

        # tile 0 and the last tile are unrolled (they carry the SFU tokens); the rest loop in pairs
        insts: list[Instruction] = []
        last_rows = o - rows_t * (n_tiles - 1)
        if n_tiles == 1:
            insts += tile(Affine(0), 0, last_rows, True, True)
        else:
            insts += tile(Affine(0), 0, rows_t, True, False)
            middle = n_tiles - 2  # tiles 1 .. n-2
            pairs = middle // 2
            if pairs:
                body = tile(Affine(1, R_TILE, 2), 1, rows_t, False, False) + \
                       tile(Affine(2, R_TILE, 2), 0, rows_t, False, False)
                insts += _loop(Affine(pairs), body, R_TILE)
            t = 1 + 2 * pairs
            if t < n_tiles - 1:
                insts += tile(Affine(t), t % 2, rows_t, False, False)
                t += 1
            insts += tile(Affine(t), t % 2, last_rows, False, True)
        # the next linear's first tile goes into the other half than this one's last, so that it
        # loads while this last tile's MV runs
        self._next_half = h0 ^ (n_tiles % 2)
        return insts

    def _attention(self, layer: int, tc: int) -> list[Instruction]:
        spec, g = self.spec, self.g
        G, A, K = g.buffers["global"], g.buffers["act"], g.buffers["kv"]
        hd, nh, nkv = spec.head_dim, spec.n_heads, spec.n_kv_heads
        rep = nh // nkv
        C = self.cfg.hbm_channels
        hb = g.hbm
        rows = Affine(0, R_TJ, 1)
        row = hd + 1
        out = [
            # Q, K, V to INT8 rows (one exponent per head and token)
            _sfu(SfuFunc.REQUANT, src0=Affine(G["q"]), stride0=hd, dst=Affine(A["q"]), stride_d=row, width=hd,
                 rows=Affine(0, R_TJ, nh), frac=nx.FRAC_A),
            _sfu(SfuFunc.REQUANT, src0=Affine(G["k"]), stride0=hd, dst=Affine(A["k"]), stride_d=row, width=hd,
                 rows=Affine(0, R_TJ, nkv), frac=nx.FRAC_A),
            _sfu(SfuFunc.REQUANT, src0=Affine(G["v"]), stride0=hd, dst=Affine(A["v"]), stride_d=row, width=hd,
                 rows=Affine(0, R_TJ, nkv), frac=nx.FRAC_A, release=(T_,)),
        ]
        pos0 = Affine(0, R_POS0, 1)
        for h in range(nkv):
            base = (layer * nkv + h) * hb["kv_region"]
            k_hbm, v_hbm = base, base + hb["kv_rows"]
            # append this chunk's K and V rows to the cache: position p is row p of the striped region
            out.append(_ld(Buffer.ACT, 0, C, Affine(k_hbm), Affine(A["k"] + h * row), rows, row, row,
                           nkv * row, 1, wait=(S_,) if h == 0 else (), op=Opcode.ST, phase=pos0))
            out.append(_ld(Buffer.ACT, 0, C, Affine(v_hbm), Affine(A["v"] + h * row), rows, row, row,
                           nkv * row, 1, release=(L_,), op=Opcode.ST, phase=pos0))
            # stage all R6 positions of K and V in slot h mod slots; a slot is reused once the
            # attention of the head before (slots heads back) has released it
            slots, kslot = K["slots"], K["slot"] * (h % K["slots"])
            wait_ld = (T_, S_) if h >= slots else (T_,)
            out.append(_ld(Buffer.KV, 0, C, Affine(k_hbm), Affine(K["k"] + kslot), Affine(0, R_LEN, 1), row, row,
                           row, 1, wait=wait_ld))
            out.append(_ld(Buffer.KV, 0, C, Affine(v_hbm), Affine(K["v"] + kslot), Affine(0, R_LEN, 1), row, row,
                           row, 1, release=(S_,)))
            for r in range(rep):
                q = h * rep + r
                frees = r == rep - 1 and h + slots < nkv
                out.append(_sfu(SfuFunc.ATTENTION, src0=Affine(A["q"] + q * row), stride0=nh * row,
                                src1=Affine(K["k"] + kslot), stride1=row, src2=Affine(K["v"] + kslot),
                                dst=Affine(G["o"] + q * hd), stride_d=nh * hd, width=hd, rows=rows,
                                pos=Affine(0, R_POS0, 1), wait=(L_,) if r == 0 else (),
                                release=(L_,) if frees else ()))
        out.append(_sfu(SfuFunc.REQUANT, src0=Affine(G["o"]), stride0=nh * hd, dst=Affine(A["o"]),
                        stride_d=operand_row(nh * hd), width=nh * hd, rows=rows, frac=nx.FRAC_A))
        return out


def compile_model(spec: ModelSpec, recipes: dict[str, LayerRecipe], group_size: int, cfg: AirfoilConfig,
                  max_len: int, compressed=None) -> Program:
    """Run the passes; with a CompressedModel, also build the weight image."""
    if spec.head_dim % 2 or spec.n_heads % spec.n_kv_heads:
        raise LoweringError(f"{spec.name}: heads {spec.n_heads}/{spec.n_kv_heads} of dim {spec.head_dim} do not tile")
    if spec.d_model % SPARSE_M or spec.d_ff % SPARSE_M:
        raise LoweringError(f"{spec.name}: d_model {spec.d_model} and d_ff {spec.d_ff} must be multiples of 16 to tile")
    g = build_graph(spec, recipes, group_size)
    tile_linears(g, cfg)
    place_hbm(g, cfg, max_len)
    allocate_buffers(g, cfg)
    g.scale_exp = {n: c.scale_exp for n, c in compressed.linears.items()} if compressed is not None else {}
    low = LengthAdaptiveLowering(g, cfg)
    prog = Program(spec, cfg, {"prefill": low.lower(False), "decode": low.lower(True)}, g.hbm, g.buffers, g)
    encoded = prog.encoded()  # every instruction must encode (field ranges, channels)
    place_programs(prog, encoded)
    if compressed is not None:
        prog.images = build_images(prog, compressed, encoded)
    return prog


def place_programs(prog: Program, encoded: dict[str, bytes]) -> None:
    """The sections' instruction words in HBM, where the controller's instruction fetch reads
    them: channel 0, after the other regions, each section on a 64-byte boundary (the host sets
    ``PROGRAM`` to the channel's base plus the section's offset, and ``PROGRAM_WORDS``).  Every channel's image grows to match."""
    off = prog.hbm["bytes_per_channel"]
    sections = {}
    for name, words in encoded.items():
        sections[name] = {"offset": off, "words": len(words) // INSTR_BYTES}
        off = _align(off + len(words))
    cfg = prog.cfg
    board_bytes = BOARDS[cfg.board].hbm_gib * 2**30 // BOARDS[cfg.board].hbm_channels
    if off > board_bytes:
        raise LoweringError(f"the weight image, KV cache and program need {off} bytes per pseudo-channel, more than "
                            f"the {board_bytes} bytes of each of the {cfg.hbm_channels} channels")
    prog.hbm["program"] = {"channel": 0, "sections": sections}
    prog.hbm["bytes_per_channel"] = off


def build_images(prog: Program, compressed, encoded: dict[str, bytes]) -> list[bytearray]:
    """The bytes of every pseudo-channel: weight tiles striped over the channels, the gains, and
    the program's sections (``place_programs``)."""
    from airfoil.numerics import gain_q

    g, C = prog.graph, prog.cfg.hbm_channels
    images = [bytearray(prog.hbm["bytes_per_channel"]) for _ in range(C)]
    for name, w in prog.hbm["weights"].items():
        c = compressed.linears[name]
        o, k = c.shape
        rows = w["rows"]
        interleave = lane_interleave(prog.cfg.chains_per_core, prog.cfg.dsp_per_chain, c.n, c.group_size,
                                     prog.cfg.axi_data_bits)
        for t in range(w["tiles"]):
            r0, r1 = t * rows, min(o, (t + 1) * rows)
            blob = pack_tile(c.codes[r0:r1], c.mask[r0:r1], c.scale[r0:r1], c.zero[r0:r1], c.bits, c.n, c.group_size,
                             *interleave)
            sizes = core_sub_tile_bytes(r1 - r0, k, c.bits, c.n, c.group_size, prog.cfg)
            starts = np.concatenate([[0], np.cumsum(sizes)])
            off = w["offset"] + t * w["chunk"]  # each sub-tile striped on its own (tile_stripes)
            for st in tile_stripes(r1 - r0, k, prog.graph.recipes[name], c.group_size, prog.cfg):
                for s in range(st.first, st.first + st.count):
                    sub = blob[starts[s]:starts[s + 1]]
                    sub += bytes(C * st.chunk - len(sub))
                    for ch in range(C):
                        images[ch][off:off + st.chunk] = sub[ch * st.chunk:(ch + 1) * st.chunk]
                    off += st.chunk
    spec = g.spec
    names = [f"layers.{i}.{n}" for i in range(spec.n_layers) for n in ("attn_norm", "ffn_norm")] + ["final_norm"]
    gains = np.concatenate([gain_q(compressed.floats[n].numpy()).astype(np.int32) for n in names]).tobytes()
    gains += bytes(C * prog.hbm["gains"]["chunk"] - len(gains))
    gc = prog.hbm["gains"]["chunk"]
    for ch in range(C):
        off = prog.hbm["gains"]["offset"]
        images[ch][off:off + gc] = gains[ch * gc:(ch + 1) * gc]
    program = prog.hbm["program"]
    for name, sec in program["sections"].items():
        words = encoded[name]
        images[program["channel"]][sec["offset"]:sec["offset"] + len(words)] = words
    return images


# ------------------------------------------------------------------ statistics
def dispatched(section: list[Instruction], tokens: int, position: int = 0):
    """The instructions a dispatcher hands to the queues for R0 = tokens, R1 = position (with
    affine fields evaluated): the unrolled stream a fixed-length compiler would emit."""
    from airfoil.sim.fsim import dispatch

    regs = [0] * 16
    regs[0], regs[1] = tokens, position
    return dispatch(section, regs)


def _executed_macs(section: list[Instruction], tokens: int) -> int:
    macs = 0
    for ins, f in dispatched(section, tokens):
        if ins.opcode in (Opcode.MM, Opcode.MV):
            macs += f["tokens"] * f["rows"] * f["k"] * f["pattern"].n // SPARSE_M
        elif ins.opcode == Opcode.SFU and f["func"] == SfuFunc.ATTENTION:
            macs += 2 * f["rows"] * (f["pos"] + f["rows"]) * f["width"]
    return macs


def exact_macs(g: Graph, tokens: int) -> int:
    """MACs of an exact-length prefill of ``tokens`` tokens: every linear on every token (the LM
    head on the last only), attention over the causal prefix."""
    spec = g.spec
    macs = 0
    for name, (o, k) in spec.linear_shapes().items():
        rows = 1 if name == "lm_head" else tokens
        macs += rows * o * k * g.recipes[name].n // SPARSE_M
    macs += spec.n_layers * spec.n_heads * spec.head_dim * tokens * (tokens + 1)
    return macs


def program_stats(prog: Program, sample_lengths: list[int] | None = None) -> dict:
    """Instruction bytes of this program against one unrolled stream per length, and the work it
    does over exact-length code (padding) on a sample of lengths."""
    tc, max_len = prog.buffers["chunk"], prog.hbm["max_len"]
    pre = prog.sections["prefill"]

    def count(n):
        return sum(1 for _ in dispatched(pre, n))

    one, two = count(1), count(min(max_len, tc + 1))
    per_chunk = two - one
    fixed = one - per_chunk
    probe = min(max_len, 2 * tc + 1)
    if count(probe) != fixed + -(-probe // tc) * per_chunk:
        raise LoweringError("internal: the prefill stream is not linear in the number of chunks")
    naive = sum(fixed + -(-n // tc) * per_chunk for n in range(1, max_len + 1)) * INSTR_BYTES
    lengths = sample_lengths or sorted({1, 2, 3, tc - 1, tc, tc + 1, 2 * tc + 3, min(max_len, 5 * tc - 1)})
    overhead = max((_executed_macs(pre, n) - exact_macs(prog.graph, n)) / exact_macs(prog.graph, n)
                   for n in lengths if 1 <= n <= max_len)
    return {"instr_bytes_total": prog.instruction_bytes(), "instr_bytes_naive_all_lengths": naive,
            "instructions": {k: len(v) for k, v in prog.sections.items()}, "chunk_tokens": tc,
            "max_padding_overhead": overhead, "padding_lengths_checked": lengths,
            "weight_image_bytes": prog.weight_image_bytes(), "hbm_bytes_per_channel": prog.hbm["bytes_per_channel"]}
