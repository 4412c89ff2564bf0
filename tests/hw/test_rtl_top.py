"""``sim.rtl_top.RtlTop``'s builds, without verilating: a multi-threaded model is a build of its
own (its directory and source key apart from the one-thread build's) verilated with
``--threads N`` and the top's gcc flags; so is the build that dumps FST waves.  The runs themselves are in test_top_verilator.py and
test_smollm2_rtl.py (slow) and in `make demo`."""
from airfoil.sim import rtl_top
from airfoil.sim.rtl_top import TOP_CFLAGS, RtlTop
from tests.hw.decode_case import tiny64_prefill_case


def test_threads_build_apart_with_verilators_threads_flag(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(rtl_top, "build_component",
                        lambda component, name, build_dir, args, source_key, hdl_clock, waves:
                        calls.append((build_dir, args, source_key, hdl_clock, waves)) or build_dir)
    prog = tiny64_prefill_case().prog
    one, two = RtlTop(prog, build_root=tmp_path), RtlTop(prog, build_root=tmp_path, threads=2)
    one.build(), two.build()
    (dir1, args1, key1, clock1, waves1), (dir2, args2, key2, clock2, waves2) = calls
    assert clock1 and clock2  # both clock themselves (sim.verilator.clocked_toplevel)
    assert not waves1 and not waves2
    assert args1 == list(TOP_CFLAGS) and "--threads" not in args1
    assert args2 == ["--threads", "2", *TOP_CFLAGS]
    assert dir2 != dir1 and dir2.name == f"{dir1.name}-t2" and dir1.parent == dir2.parent == tmp_path
    assert key1 != key2


def test_the_waves_build_is_a_folder_of_its_own(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(rtl_top, "build_component",
                        lambda component, name, build_dir, args, source_key, hdl_clock, waves:
                        calls.append((build_dir, waves)) or build_dir)
    top = RtlTop(tiny64_prefill_case().prog, build_root=tmp_path)
    assert top.build() == top.build() == top.build_dir  # built once
    fst = top.build(waves=True)
    assert top.build(waves=True) == fst and len(calls) == 2
    assert calls == [(top.build_dir, False), (top.build_dir.with_name(top.build_dir.name + "-fst"), True)]
    assert top.folder(True) == calls[1][0] and top.folder() == top.build_dir
