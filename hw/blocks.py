"""The generatable blocks, each built from the one config object."""
from airfoil.config import AirfoilConfig
from airfoil.hw.dsp_slice import DspSlice
from airfoil.hw.sparse_chain import MatrixProcessingEngine, SparseDspChain

__all__ = ["BLOCKS", "build_block", "block_dsp_slices"]

BLOCKS = {
    "dsp_slice": "one packed two-MAC DSP48E2 slice",
    "chain": "one sparse DSP chain (VPU): dsp_groups_per_chain groups of 2 slices",
    "mpe": "one core's matrix processing engine: chains_per_core chains",
}


def build_block(name: str, cfg: AirfoilConfig):
    if name == "dsp_slice":
        return DspSlice()
    if name == "chain":
        return SparseDspChain(cfg.dsp_groups_per_chain, mm=cfg.mm_token_pairs)
    if name == "mpe":
        return MatrixProcessingEngine(cfg.chains_per_core, cfg.dsp_groups_per_chain, mm=cfg.mm_token_pairs)
    raise KeyError(name)


def block_dsp_slices(name: str, cfg: AirfoilConfig) -> int:
    return {"dsp_slice": 1, "chain": cfg.dsp_per_chain, "mpe": cfg.chains_per_core * cfg.dsp_per_chain}[name]
