"""The one configuration object that drives Airfoil.

Everything that has a size (the RTL generators, the compiler's tiling, the simulators, the
performance model, the docs) reads it from an :class:`AirfoilConfig`.  A config is a board
preset plus overrides; it is frozen, validated on construction, and round-trips through YAML.

Validation errors are :class:`ConfigError` and always name the field, the value and the limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from airfoil.errors import AirfoilError, read_yaml

__all__ = ["BoardSpec", "AirfoilConfig", "ConfigError", "BOARDS", "PRESETS", "preset", "load_config"]


class ConfigError(AirfoilError):
    """A configuration field is missing, of the wrong type or outside its limit."""


@dataclass(frozen=True)
class BoardSpec:
    """What a board offers: device capacity and the HBM memory system."""

    name: str
    part: str
    dsp: int  # DSP48E2 (UltraScale+) or DSP58 (Versal, a superset used in DSP48E2 mode)
    bram36: int
    uram: int
    lut: int
    ff: int
    hbm_channels: int  # pseudo-channels
    hbm_channel_gbps: float  # peak GB/s per pseudo-channel
    hbm_gib: int
    slrs: int
    source: str  # where the capacity numbers come from


BOARDS: dict[str, BoardSpec] = {
    "u280": BoardSpec(
        name="u280", part="xcu280-fsvh2892-2L-e", dsp=9024, bram36=2016, uram=960,
        lut=1_303_680, ff=2_607_360, hbm_channels=32, hbm_channel_gbps=14.375, hbm_gib=8, slrs=3,
        source="AMD DS963 (XCU280); HBM 32 PCs x 14.375 GB/s = 460 GB/s (UG1314)"),
    "vhk158": BoardSpec(
        name="vhk158", part="xcvh1782-lsva4737-2MP-e-S", dsp=7392, bram36=3741, uram=1301,
        lut=1_754_000, ff=3_508_000, hbm_channels=64, hbm_channel_gbps=12.8, hbm_gib=32, slrs=4,
        source="AMD VH1782 product table (DSP58 count); HBM2e 819 GB/s over 64 PCs"),
    # A deliberately tiny board for simulation and tests: any real part holds it.
    "sim": BoardSpec(
        name="sim", part="xcu280-fsvh2892-2L-e", dsp=9024, bram36=2016, uram=960,
        lut=1_303_680, ff=2_607_360, hbm_channels=4, hbm_channel_gbps=14.375, hbm_gib=1, slrs=1,
        source="the U280 part, with only 4 HBM pseudo-channels modelled"),
}

SPARSE_M = 16  # N:M sparsity always uses M = 16 (the sparse MUX takes a 4-bit index per kept weight)


def position_bits_per_block(n: int) -> int:
    """Bits the weight image spends on where a 16-block's n kept weights sit: n 4-bit indices,
    or a 16-bit mask where that is smaller (n > 4); dense blocks need none.  The weight decoder
    turns a mask into the MUX indices (a prefix count over 16 bits)."""
    if n >= SPARSE_M:
        return 0
    return min(4 * n, SPARSE_M)

LEGAL_SPARSE_N = (2, 4, 8, 16)
LEGAL_WEIGHT_BITS = (2, 3, 4, 8)
LEGAL_AXI_BITS = (64, 128, 256, 512)
# LUTs per DSP slice of the sparse DSP chain (sparse MUXes, mode selection, reduction nodes),
# rounded up from the measured synthesis baseline (reports/synth_baseline.json: chain@u280 141
# with MM's mode, 73 without it as the U280 preset now builds it; mpe@sim 162) since the slices
# are DSP48E2 instances that hold the operand packing, the pipeline registers and the cascade
# sum (167 and 172 when Yosys inferred them, for it packs none of that into a DSP48E2); a test
# keeps this at or above the measurement.
LUT_PER_DSP = 165
# LUTs (and LUTRAM sites) of a core's units other than the MV unit: controller, fetch, LD/ST, SFU,
# AXI bridges, registers, rounded up from the sim kernel's synthesis (reports/synth_top.json:
# 60,859 + 2,202); a test keeps this at or above the measurement.  The weight path (decoders,
# requantisers) is not in it: as built it does not fit the boards' cores yet
# (docs/accelerator.md, the device fit).
LUT_PER_CORE = 64_000


@dataclass(frozen=True)
class AirfoilConfig:
    """A resolved accelerator configuration.  Build one with :func:`preset` or :func:`load_config`."""

    board: str
    clock_mhz: float = 225.0
    cores: int = 1  # one computing core per SLR
    chains_per_core: int = 4  # VPUs (sparse DSP chains) per core
    dsp_groups_per_chain: int = 2  # each DSP group = 2 DSP slices
    sparse_n: tuple[int, ...] = LEGAL_SPARSE_N  # supported N of N:16 (16 = dense)
    weight_bits: tuple[int, ...] = LEGAL_WEIGHT_BITS
    quant_group_size: int = 32  # weights per scale/zero group (along K)
    act_bits: int = 8
    kv_bits: int = 8
    act_buffer_kib: int = 64  # INT8 operand rows (BRAM)
    global_buffer_kib: int = 64  # INT32 results and the residual stream (URAM)
    weight_buffer_kib: int = 32  # per core, per half of the double buffer (URAM)
    kv_buffer_kib: int = 64  # K/V staging for attention (URAM)
    instr_queue_depth: int = 512
    hbm_channels: int = 4
    hbm_channel_gbps: float = 14.375
    hbm_latency_cycles: int = 64
    axi_data_bits: int = 512
    sfu_lanes: int = 16  # SFU elements per cycle per core
    # MM's two tokens a pass where rows cannot pair (N:16 sparse weights): the chains' MM mode, a
    # second sparse MUX a DSP slice.  False: chains without that mode (about 60% fewer LUTs a
    # chain, docs/accelerator.md), such MMs one token a pass
    mm_token_pairs: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived totals
    @property
    def board_spec(self) -> BoardSpec:
        return BOARDS[self.board]

    @property
    def dsp_per_chain(self) -> int:
        return 2 * self.dsp_groups_per_chain

    @property
    def dsp_slices(self) -> int:
        return self.cores * self.chains_per_core * self.dsp_per_chain

    @property
    def macs_per_cycle(self) -> int:
        # two INT8 MACs per DSP slice per cycle (two activations share one weight)
        return 2 * self.dsp_slices

    @property
    def weight_half_bytes(self) -> int:
        """One half of the weight double buffer across the MPE: a tile's rows are split over
        the cores, each core holding its share in its own buffer, so a tile may fill them all."""
        return self.cores * self.weight_buffer_kib * 1024

    @property
    def hbm_peak_gbps(self) -> float:
        return self.hbm_channels * self.hbm_channel_gbps

    @property
    def hbm_bytes_per_cycle(self) -> float:
        return self.hbm_peak_gbps * 1e9 / (self.clock_mhz * 1e6)

    @property
    def axi_bytes_per_cycle(self) -> int:
        return self.axi_data_bits // 8

    @property
    def bram36_estimate(self) -> int:
        """The activation buffer and the instruction queue in 36 Kib block RAMs (4.5 KiB of data
        each, ignoring parity bits)."""
        per_core = math.ceil(self.act_buffer_kib * 1024 * 8 / 36864) + math.ceil(self.instr_queue_depth * 64 * 8 / 36864)
        return self.cores * per_core

    @property
    def uram_estimate(self) -> int:
        """The global and KV buffers and the weight double buffer in 288 Kib UltraRAMs (36 KiB
        each): a tile must hold as many rows as the MPE takes per beat, which BRAM cannot."""
        return self.cores * math.ceil((self.global_buffer_kib + self.kv_buffer_kib + 2 * self.weight_buffer_kib) / 36)

    @property
    def lut_estimate(self) -> int:
        """LUTs of the design the projections assume: the measured cost per DSP slice plus each core's
        other units as measured (``LUT_PER_CORE``); no weight path (see ``LUT_PER_CORE``)."""
        return self.dsp_slices * LUT_PER_DSP + self.cores * LUT_PER_CORE

    def derived(self) -> dict[str, Any]:
        return {
            "dsp_slices": self.dsp_slices,
            "macs_per_cycle": self.macs_per_cycle,
            "hbm_bytes_per_cycle": round(self.hbm_bytes_per_cycle, 3),
            "hbm_peak_gbps": round(self.hbm_peak_gbps, 3),
            "clock_mhz": self.clock_mhz,
            "bram36_estimate": self.bram36_estimate,
            "uram_estimate": self.uram_estimate,
            "lut_estimate": self.lut_estimate,
            "peak_tops_int8": round(2 * self.macs_per_cycle * self.clock_mhz * 1e6 / 1e12, 3),
        }

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if self.board not in BOARDS:
            raise ConfigError(f"config field 'board': unknown board {self.board!r}; expected one of {sorted(BOARDS)}")
        spec = BOARDS[self.board]
        ints = ("cores", "chains_per_core", "dsp_groups_per_chain", "quant_group_size", "act_buffer_kib",
                "global_buffer_kib", "weight_buffer_kib", "kv_buffer_kib", "instr_queue_depth", "hbm_channels",
                "hbm_latency_cycles", "axi_data_bits", "act_bits", "kv_bits", "sfu_lanes")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"config field {name!r}: expected a positive integer, got {value!r}")
        if not isinstance(self.mm_token_pairs, bool):
            raise ConfigError(f"config field 'mm_token_pairs': expected true or false, got {self.mm_token_pairs!r}")
        for name in ("clock_mhz", "hbm_channel_gbps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name!r}: expected a positive number, got {value!r}")
        if not 50 <= self.clock_mhz <= 500:
            raise ConfigError(f"config field 'clock_mhz': {self.clock_mhz} outside 50..500 MHz")
        if not self.sparse_n or any(n not in LEGAL_SPARSE_N for n in self.sparse_n) or 16 not in self.sparse_n:
            raise ConfigError(f"config field 'sparse_n': {list(self.sparse_n)} must be a subset of "
                              f"{list(LEGAL_SPARSE_N)} that contains 16 (dense)")
        if not self.weight_bits or any(b not in LEGAL_WEIGHT_BITS for b in self.weight_bits):
            raise ConfigError(f"config field 'weight_bits': {list(self.weight_bits)} must be a subset of "
                              f"{list(LEGAL_WEIGHT_BITS)}")
        if self.quant_group_size % SPARSE_M:
            raise ConfigError(f"config field 'quant_group_size': {self.quant_group_size} must be a multiple of "
                              f"{SPARSE_M} (a group spans whole N:16 blocks)")
        if self.act_bits != 8 or self.kv_bits not in (4, 8):
            raise ConfigError(f"config fields 'act_bits'/'kv_bits': act_bits must be 8 and kv_bits 4 or 8, "
                              f"got {self.act_bits}/{self.kv_bits}")
        if self.axi_data_bits not in LEGAL_AXI_BITS:
            raise ConfigError(f"config field 'axi_data_bits': {self.axi_data_bits} not in {list(LEGAL_AXI_BITS)}")
        if self.cores > spec.slrs:
            raise ConfigError(f"config field 'cores': {self.cores} exceeds the {spec.slrs} SLRs of board "
                              f"{self.board!r} (one core per SLR)")
        if self.hbm_channels > spec.hbm_channels:
            raise ConfigError(f"config field 'hbm_channels': {self.hbm_channels} exceeds the "
                              f"{spec.hbm_channels} HBM pseudo-channels of board {self.board!r}")
        if self.hbm_channel_gbps > spec.hbm_channel_gbps:
            raise ConfigError(f"config field 'hbm_channel_gbps': {self.hbm_channel_gbps} exceeds the "
                              f"{spec.hbm_channel_gbps} GB/s of a {self.board!r} pseudo-channel")
        port_gbps = self.axi_bytes_per_cycle * self.clock_mhz * 1e6 / 1e9
        if port_gbps + 1e-9 < self.hbm_channel_gbps:
            raise ConfigError(f"config field 'axi_data_bits': a {self.axi_data_bits}-bit port at "
                              f"{self.clock_mhz} MHz carries {port_gbps:.2f} GB/s, less than one "
                              f"pseudo-channel's {self.hbm_channel_gbps} GB/s")
        for name, used, limit in (("DSP", self.dsp_slices, spec.dsp),
                                  ("BRAM36", self.bram36_estimate, spec.bram36),
                                  ("URAM", self.uram_estimate, spec.uram),
                                  ("LUT", self.lut_estimate, spec.lut)):
            if used > limit:
                raise ConfigError(f"config: {name} demand {used} exceeds board {self.board!r} capacity {limit} "
                                  f"(fields cores x chains_per_core x dsp_groups_per_chain and buffer sizes)")

    # ------------------------------------------------------------------ YAML
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    def replace(self, **overrides: Any) -> "AirfoilConfig":
        return _build(self.to_dict() | overrides, origin="override")


_PRESET_OVERRIDES: dict[str, dict[str, Any]] = {
    # FlightLLM's U280 build: 3 cores (one per SLR), 6,345 DSPs. Ours: 3 x 72 chains x 16 DSPs =
    # 3,456, limited by LUTs (each chain's sparse MUXes and its share of the slice decoders), and
    # chains without MM's mode (mm_token_pairs false: 1,161 LUT a chain, not 2,249), so that the
    # kernel as built fits the XCU280 (90.3% of its LUTs by Yosys' count, the whole MV unit counted;
    # 122% at 80 chains with MM's mode and the MV unit's own logic left out).  Decode
    # is HBM-bound from 72 chains a core up (LLaMA2-7B FlightLLM-like: 129.1 tok/s, 85.2% of HBM;
    # 129.4 and 85.6% at 80, 129.2 and 85.6% at 100) and MV never uses MM's mode: what the fit
    # costs is prefill (128 tokens: 678 ms, 435 at 80 chains with MM's mode, 377 at 100;
    # docs/accelerator.md, the device fit).
    # Buffers (2026-12-07): GLOBAL holds the norm gains, the logits and a prefill chunk of 4 tokens
    # of LLaMA2-7B (16 with the 4 MiB before; prefill stays compute-bound, 2 to 5% longer), ACT
    # that chunk's INT8 rows (1 MiB before), so that the kernel as built, whose buffers are
    # copies and banks of these, fits the block RAM and UltraRAM more nearly.
    "u280": dict(board="u280", clock_mhz=225.0, cores=3, chains_per_core=72, dsp_groups_per_chain=8,
                 act_buffer_kib=256, global_buffer_kib=2048, weight_buffer_kib=1024, kv_buffer_kib=2112,
                 instr_queue_depth=4096, hbm_channels=32, hbm_channel_gbps=14.375, hbm_latency_cycles=64,
                 axi_data_bits=512, mm_token_pairs=False),
    # FlightLLM's released VHK158 profile: 4 SLRs at 225 MHz, MV parallelism 64x16. Ours: 4 x 100
    # chains x 16 DSPs = 6,400 (78% of the VH1782's LUTs at the measured cost per DSP): enough
    # that decode of 2-bit dense weights keeps up with the HBM share of each core.
    "vhk158": dict(board="vhk158", clock_mhz=225.0, cores=4, chains_per_core=100, dsp_groups_per_chain=8,
                   act_buffer_kib=256, global_buffer_kib=2048, weight_buffer_kib=1024, kv_buffer_kib=2112,
                   instr_queue_depth=4096, hbm_channels=64, hbm_channel_gbps=12.8, hbm_latency_cycles=64,
                   axi_data_bits=512),
    # Small enough to simulate a whole SmolLM2 token in Verilator on two cores.
    "sim": dict(board="sim", clock_mhz=225.0, cores=1, chains_per_core=4, dsp_groups_per_chain=2,
                act_buffer_kib=128, global_buffer_kib=1024, weight_buffer_kib=64, kv_buffer_kib=160,
                instr_queue_depth=512,
                hbm_channels=4, hbm_channel_gbps=14.375, hbm_latency_cycles=64, axi_data_bits=512),
}
PRESETS = tuple(_PRESET_OVERRIDES)


def _build(data: Mapping[str, Any], origin: str) -> AirfoilConfig:
    known = {f.name for f in fields(AirfoilConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{origin}: unknown config field {unknown[0]!r}; known fields: {sorted(known)}")
    if "board" not in data:
        raise ConfigError(f"{origin}: config field 'board' is required")
    kwargs = dict(data)
    for name in ("sparse_n", "weight_bits"):
        if name in kwargs:
            v = kwargs[name]
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"{origin}: config field {name!r}: expected a list, got {v!r}")
            kwargs[name] = tuple(v)
    return AirfoilConfig(**kwargs)


def preset(name: str, **overrides: Any) -> AirfoilConfig:
    """The named board preset (``u280``, ``vhk158``, ``sim``) with optional field overrides."""
    if name not in _PRESET_OVERRIDES:
        raise ConfigError(f"unknown board preset {name!r}; expected one of {list(PRESETS)}")
    return _build(_PRESET_OVERRIDES[name] | overrides, origin=f"preset {name!r}")


def load_config(path: str | Path) -> AirfoilConfig:
    """Load a YAML config.  A file may give ``preset: NAME`` and override only some fields."""
    path = Path(path)
    data = read_yaml(path, ConfigError, "config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of config fields")
    base = data.pop("preset", None)
    try:
        if base is not None:
            return preset(base, **data)
        return _build(data, origin=str(path))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None
