"""``sim.rtl_top.RtlTop``'s builds, without verilating: a multi-threaded model is a build of its
own (its directory and source key apart from the one-thread build's) verilated with
``--threads N`` and the top's gcc flags.  The runs themselves are in test_top_verilator.py and
test_smollm2_rtl.py (slow) and in `make demo`."""
from airfoil.sim import rtl_top
from airfoil.sim.rtl_top import TOP_CFLAGS, RtlTop
from tests.hw.decode_case import tiny64_prefill_case


def test_threads_build_apart_with_verilators_threads_flag(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(rtl_top, "build_component",
                        lambda component, name, build_dir, args, source_key: calls.append((build_dir, args, source_key)))
    prog = tiny64_prefill_case().prog
    one, two = RtlTop(prog, build_root=tmp_path), RtlTop(prog, build_root=tmp_path, threads=2)
    one.build(), two.build()
    (dir1, args1, key1), (dir2, args2, key2) = calls
    assert args1 == list(TOP_CFLAGS) and "--threads" not in args1
    assert args2 == ["--threads", "2", *TOP_CFLAGS]
    assert dir2 != dir1 and dir2.name == f"{dir1.name}-t2" and dir1.parent == dir2.parent == tmp_path
    assert key1 != key2
