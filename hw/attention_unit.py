"""The fused ATTENTION of one head behind the SFU queue (fsim's ``_sfu`` ATTENTION,
``IntegerKernels.attention``): for each query row t of ``rows`` (position pos + t),

    Q.K   dot[tau] = sum_j q8[t, j] k8[tau, j]         tau = 0 .. pos + t (the causal mask)
    soft  AttentionSoftmax: (qp[tau], ep), ev_max, inv = 2^40 // sum p
    P.V   acc[j] = sum_tau qp[tau] v8[tau, j]
    out   GLOBAL[dst + stride_d t + j] = sat(rshift_round(acc[j] inv, 40 - ep - ev_max - FRAC_A), 32)

Q rows (INT8, then the row's exponent) come from ACT at ``src0 + stride0 t``; K and V rows from
KV at ``src1 + stride1 tau`` and ``src2 + stride1 tau``.  Rows are 16-byte chunks read at any
byte alignment through a window of two consecutive buffer words (two read ports per buffer):
one chunk per cycle, 16 MACs per cycle for Q.K and for P.V.  Masked positions contribute
nothing to the reference (p = 0, and they are not in either maximum), so they are not streamed.

The parent (``SfuUnit``) checks the addresses and the shape before ``start``: ``width`` a
multiple of 16 up to ``max_width``, ``pos + rows`` positions up to ``max_positions``.  An
output shift outside [-16, 127] stops it with UNSUPPORTED (fault) before the row is written.
Cycles per query row with L allowed positions and nc = width / 16 chunks: about
(nc + 2) L + nc L + width + the softmax's 2 L + 45.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from airfoil import numerics as nx
from airfoil.hw.attention_softmax import AttentionSoftmax
from airfoil.hw.block_quantiser import rshift_round
from airfoil.hw.hbm_model import BEAT_BYTES, write_request_layout
from airfoil.isa import ISSUED_LAYOUTS, ErrorCode, Opcode

__all__ = ["AttentionUnit", "CHUNK"]

CHUNK = 16  # bytes per read, MACs per cycle
_ACC_BITS = 34  # |qp v| <= 2^14 per position, up to 2^19 positions
_MIN_SHIFT, _MAX_SHIFT = -16, 127


def _sat32(v):
    return Mux(v > (1 << 31) - 1, (1 << 31) - 1, Mux(v < -(1 << 31), -(1 << 31), v))


class ChunkWindow:
    """A 16-byte read at any byte address of a buffer of 64-byte words, through two read ports
    (words a // 64 and a // 64 + 1): ``issue(m, addr)`` this cycle, ``data`` the next."""

    def __init__(self, en, addr, rdata, name: str):
        self.en, self.addr, self.rdata = en, addr, rdata
        self.offset = Signal(6, name=f"{name}_offset")
        self.data = Signal(8 * CHUNK, name=f"{name}_data")

    def connect(self, m: Module, issue, addr) -> None:
        word = addr >> 6
        m.d.comb += [self.en.eq(Mux(issue, 0b11, 0)), self.addr[0].eq(word), self.addr[1].eq(word + 1)]
        with m.If(issue):
            m.d.sync += self.offset.eq(addr[:6])
        m.d.comb += self.data.eq(Cat(self.rdata[0], self.rdata[1]).bit_select(self.offset * 8, 8 * CHUNK))


class AttentionUnit(wiring.Component):
    def __init__(self, max_width: int, max_positions: int):
        assert max_width % CHUNK == 0
        self.max_width, self.max_positions = max_width, max_positions
        self.chunks = max_width // CHUNK
        super().__init__({
            "start": In(1), "ins": In(ISSUED_LAYOUTS[Opcode.SFU]), "c_qk": In(unsigned(16)),
            "done": Out(1), "fault": Out(ErrorCode),
            "act_rd_en": Out(2), "act_rd_addr": Out(unsigned(32)).array(2),
            "act_rd_data": In(unsigned(8 * BEAT_BYTES)).array(2),
            "kv_rd_en": Out(2), "kv_rd_addr": Out(unsigned(32)).array(2),
            "kv_rd_data": In(unsigned(8 * BEAT_BYTES)).array(2),
            "g_wr_valid": Out(1), "g_wr": Out(write_request_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        ins = self.ins
        NC = self.chunks
        m.submodules.softmax = soft = AttentionSoftmax(self.max_positions)
        m.submodules.probs = probs = Memory(shape=signed(8), depth=self.max_positions, init=[])
        p_wr, p_rd = probs.write_port(), probs.read_port()
        act = ChunkWindow(self.act_rd_en, self.act_rd_addr, self.act_rd_data, "act")
        kv = ChunkWindow(self.kv_rd_en, self.kv_rd_addr, self.kv_rd_data, "kv")

        nc = Signal(range(NC + 1))
        m.d.comb += nc.eq(ins.width >> 4)
        t = Signal(24)  # query row
        q_row, d_row = Signal(signed(48)), Signal(signed(48))
        n_pos = Signal(range(self.max_positions + 1))  # allowed positions of this row
        q_chunks = [Signal(8 * CHUNK, name=f"q_chunk{c}") for c in range(NC)]
        eq = Signal(signed(8))
        acc = [[Signal(signed(_ACC_BITS), name=f"acc{c}_{i}") for i in range(CHUNK)] for c in range(NC)]

        # ---- one read sequence per phase: (tau, c) issued now, processed a cycle later
        tau, c = Signal(range(self.max_positions + 1)), Signal(range(NC + 3))
        k_row, v_row = Signal(signed(48)), Signal(signed(48))
        issuing = Signal()
        p_valid, p_c, p_last = Signal(), Signal(range(NC + 3)), Signal()
        fire = Signal()  # a read issued this cycle
        m.d.sync += p_valid.eq(fire)
        steps = Signal(range(NC + 3))  # reads per position in this phase

        def advance():
            """The next (tau, c) of a phase of ``steps`` reads per position, n_pos positions."""
            m.d.sync += [p_c.eq(c), p_last.eq((c + 1 == steps) & (tau + 1 == n_pos)), c.eq(c + 1)]
            with m.If(c + 1 == steps):
                m.d.sync += [c.eq(0), tau.eq(tau + 1), k_row.eq(k_row + ins.stride1), v_row.eq(v_row + ins.stride1)]
                with m.If(tau + 1 == n_pos):
                    m.d.sync += issuing.eq(0)

        def start_phase(n_steps):
            m.d.sync += [tau.eq(0), c.eq(0), k_row.eq(ins.src1), v_row.eq(ins.src2), issuing.eq(1),
                         steps.eq(n_steps)]

        lane = lambda word, i: word[8 * i:8 * i + 8].as_signed()  # noqa: E731

        # Q.K: the dot of q with the chunk just read
        q_sel = Signal(8 * CHUNK)
        with m.Switch(p_c):
            for ci in range(NC):
                with m.Case(ci):
                    m.d.comb += q_sel.eq(q_chunks[ci])
        dot16 = Signal(signed(20))
        m.d.comb += dot16.eq(sum(lane(q_sel, i) * lane(kv.data, i) for i in range(CHUNK)))
        dot, ek = Signal(signed(32)), Signal(signed(8))
        m.d.comb += [soft.dot.eq(dot), soft.ek.eq(ek), soft.ev.eq(lane(kv.data, 0)), soft.allowed.eq(1),
                     soft.eq.eq(eq), soft.c_qk.eq(self.c_qk), soft.in_last.eq(p_last)]

        # the softmax's probabilities into their row, its statistics
        n_probs = Signal(range(self.max_positions + 1))
        ep, ev_max, inv = Signal(signed(8)), Signal(signed(8)), Signal(unsigned(nx.INV_SUM_SHIFT + 1))
        got_probs, got_stats = Signal(), Signal()
        m.d.comb += [p_wr.addr.eq(n_probs), p_wr.data.eq(soft.q), p_wr.en.eq(soft.out_valid)]
        with m.If(soft.out_valid):
            m.d.sync += n_probs.eq(n_probs + 1)
            with m.If(soft.out_last):
                m.d.sync += [got_probs.eq(1), ep.eq(soft.exponent)]
        with m.If(soft.stats_valid):
            m.d.sync += [got_stats.eq(1), ev_max.eq(soft.ev_max), inv.eq(soft.inv)]

        # P.V: 16 MACs on the chunk just read
        m.d.comb += p_rd.addr.eq(tau)

        # ---- out: acc[j] inv, rounded and saturated, one element per cycle
        shift = Signal(signed(11))
        m.d.comb += shift.eq(nx.INV_SUM_SHIFT - ep - ev_max - nx.FRAC_A)
        j = Signal(range(self.max_width + 1))
        acc_j = Signal(signed(_ACC_BITS))
        with m.Switch(j):
            for ci in range(NC):
                for i in range(CHUNK):
                    with m.Case(ci * CHUNK + i):
                        m.d.comb += acc_j.eq(acc[ci][i])
        prod = Signal(signed(_ACC_BITS + nx.INV_SUM_SHIFT + 2))
        w_valid, w_elem = Signal(), Signal(signed(48))
        result = Signal(signed(32))
        m.d.comb += result.eq(_sat32(rshift_round(prod, shift, 7)))
        m.d.comb += [self.g_wr.addr.eq(w_elem >> 4), self.g_wr.space.eq(0),
                     self.g_wr.data.eq(result.replicate(BEAT_BYTES // 4)),
                     self.g_wr.mask.eq(Const(0xF, BEAT_BYTES) << Cat(Const(0, 2), w_elem[:4])), self.g_wr_valid.eq(w_valid)]
        m.d.sync += [w_valid.eq(0), self.done.eq(0)]

        with m.FSM(name="attention"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [t.eq(0), q_row.eq(ins.src0), d_row.eq(ins.dst), self.fault.eq(ErrorCode.NONE)]
                    m.next = "ROW"
            with m.State("ROW"):
                with m.If(t == ins.rows):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [n_pos.eq(ins.pos + t + 1), n_probs.eq(0), got_probs.eq(0), got_stats.eq(0),
                                 c.eq(0), issuing.eq(1)]
                    m.d.sync += [a.eq(0) for row_acc in acc for a in row_acc]
                    m.next = "Q"
            with m.State("Q"):  # the query row's chunks, then its exponent
                q_issue = issuing & (c <= nc)
                act.connect(m, q_issue, q_row + Mux(c == nc, ins.width, c << 4))
                m.d.comb += fire.eq(q_issue)
                with m.If(q_issue):
                    m.d.sync += [c.eq(c + 1), p_c.eq(c)]
                    with m.If(c == nc):
                        m.d.sync += issuing.eq(0)
                with m.If(p_valid):
                    with m.Switch(p_c):
                        for ci in range(NC):
                            with m.Case(ci):
                                m.d.sync += q_chunks[ci].eq(act.data)
                    with m.If(p_c == nc):
                        m.d.sync += eq.eq(lane(act.data, 0))
                        start_phase(nc + 2)
                        m.next = "QK"
            with m.State("QK"):  # per position: K's chunks, K's exponent, V's exponent
                k_addr = Mux(c < nc, k_row + (c << 4), Mux(c == nc, k_row + ins.width, v_row + ins.width))
                kv.connect(m, issuing & soft.in_ready, k_addr)
                m.d.comb += fire.eq(issuing & soft.in_ready)
                with m.If(issuing & soft.in_ready):
                    advance()
                with m.If(p_valid):
                    with m.If(p_c == 0):
                        m.d.sync += dot.eq(dot16)
                    with m.Elif(p_c < nc):
                        m.d.sync += dot.eq(dot + dot16)
                    with m.Elif(p_c == nc):
                        m.d.sync += ek.eq(lane(kv.data, 0))
                    with m.Else():
                        m.d.comb += soft.in_valid.eq(1)
                        with m.If(p_last):
                            m.next = "SOFTMAX"
            with m.State("SOFTMAX"):
                with m.If(got_probs & got_stats):
                    start_phase(nc)
                    m.next = "PV"
            with m.State("PV"):  # per position: V's chunks times its probability
                kv.connect(m, issuing, v_row + (c << 4))
                m.d.comb += fire.eq(issuing)
                with m.If(issuing):
                    advance()
                with m.If(p_valid):
                    with m.Switch(p_c):
                        for ci in range(NC):
                            with m.Case(ci):
                                m.d.sync += [acc[ci][i].eq(acc[ci][i] + p_rd.data * lane(kv.data, i))
                                             for i in range(CHUNK)]
                    with m.If(p_last):
                        m.d.sync += j.eq(0)
                        m.next = "CHECK_SHIFT"
            with m.State("CHECK_SHIFT"):
                with m.If((shift < _MIN_SHIFT) | (shift > _MAX_SHIFT)):
                    m.d.sync += [self.fault.eq(ErrorCode.UNSUPPORTED), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.next = "OUT"
            with m.State("OUT"):
                with m.If(j < ins.width):
                    m.d.sync += [prod.eq(acc_j * inv), w_valid.eq(1), w_elem.eq(d_row + j), j.eq(j + 1)]
                with m.Elif(~w_valid):
                    m.d.sync += [t.eq(t + 1), q_row.eq(q_row + ins.stride0), d_row.eq(d_row + ins.stride_d)]
                    m.next = "ROW"
        return m
