"""The xrt backend (``host/xrt_backend.py``).  On a board it needs XRT's ``pyxrt`` and an xclbin:
``test_on_a_real_board`` runs where both are (AIRFOIL_XCLBIN names the xclbin) and skips with the
reason elsewhere.  The host's side of the flow runs everywhere against ``tests/fake_pyxrt.py``, a
board emulated by fsim behind pyxrt's surface: the same tokens as fsim, the check passing, a
corrupted board byte named by its region, an error status reported, and the CLI's clear errors
before anything slow."""
import os

import pytest

from airfoil.cli import main
from airfoil.host.runtime import FsimBackend, ReferenceBackend, generate
from airfoil.host.xrt_backend import XrtBackend, pyxrt_available
from airfoil.isa import ErrorCode
from tests.fake_pyxrt import make_fake_pyxrt
from tests.test_runtime import PROMPT, tiny  # noqa: F401 - the tiny model fixture


@pytest.fixture
def xclbin(tmp_path):
    path = tmp_path / "airfoil.xclbin"
    path.write_bytes(b"stand-in")
    return path


def test_xrt_backend_gives_fsims_tokens_checked_byte_for_byte(tiny, xclbin):  # noqa: F811
    cm, program = tiny
    want = generate(FsimBackend(program(), cm), PROMPT, 6)
    prog = program()
    fake = make_fake_pyxrt(prog, cm)
    backend = XrtBackend(prog, cm, xclbin, pyxrt=fake)
    got = generate(backend, PROMPT, 6, checker=ReferenceBackend(cm, "cpu"))
    assert got.tokens == want.tokens and got.check == "passed"
    assert backend.mismatch is None and fake.state.runs == len(backend.runs) == 6
    assert [r["section"] for r in backend.runs] == ["prefill"] + ["decode"] * 5
    assert all(r["cycles"] > 0 for r in backend.runs)


def test_a_board_byte_that_differs_from_fsim_is_named(tiny, xclbin):  # noqa: F811
    cm, program = tiny
    prog = program()
    kv = 0  # the first byte of layer 0's KV cache region
    backend = XrtBackend(prog, cm, xclbin, pyxrt=make_fake_pyxrt(prog, cm, corrupt=(0, kv)))
    generate(backend, PROMPT, 2)
    m = backend.mismatch
    assert m is not None and m.step == 0 and m.layer == 0 and m.op.startswith("xrt vs fsim: kv_cache")


def test_an_error_status_stops_the_generation_naming_it(tiny, xclbin):  # noqa: F811
    cm, program = tiny
    prog = program()
    backend = XrtBackend(prog, cm, xclbin, check=False, pyxrt=make_fake_pyxrt(prog, cm, status=ErrorCode.ADDRESS))
    with pytest.raises(RuntimeError, match="prefill at position 0 stopped with ADDRESS"):
        generate(backend, PROMPT, 2)


def test_run_xrt_fails_clearly_before_anything_slow(tmp_path, xclbin, capsys):
    assert main(["run", "--backend", "xrt", "--prompt", "hi", "--out", str(tmp_path)]) == 2
    assert "--backend xrt: give --xclbin" in capsys.readouterr().err
    assert main(["run", "--backend", "xrt", "--prompt", "hi", "--xclbin", str(tmp_path / "no.xclbin")]) == 2
    assert "no such file" in capsys.readouterr().err
    if not pyxrt_available():
        assert main(["run", "--backend", "xrt", "--prompt", "hi", "--xclbin", str(xclbin), "--out", str(tmp_path)]) == 2
        assert "pyxrt is not importable" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.afc"))  # nothing compressed


@pytest.mark.skipif(not pyxrt_available(), reason="XRT's pyxrt is not importable here (no XRT installed)")
@pytest.mark.skipif(not os.environ.get("AIRFOIL_XCLBIN"), reason="AIRFOIL_XCLBIN does not name a board's xclbin")
def test_on_a_real_board(tmp_path, capsys):
    """``airfoil generate --block kernel`` -> Vivado/v++ -> AIRFOIL_XCLBIN: SmolLM2 on the board
    with --check, the answer equal to fsim's."""
    import json

    args = ["run", "--prompt", "What is the capital of France?", "--tokens", "8", "--json", "--check"]
    assert main([*args, "--backend", "xrt", "--xclbin", os.environ["AIRFOIL_XCLBIN"]]) == 0
    board = json.loads(capsys.readouterr().out)
    assert main([*args, "--backend", "fsim"]) == 0
    assert board["check"] == "passed" and board["tokens"] == json.loads(capsys.readouterr().out)["tokens"]
