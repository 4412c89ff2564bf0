"""The CUDA == CPU device check: the model cut into parts and joined again, and the check itself
(on the CPU here: the same code compares CUDA with the CPU where a GPU is present)."""
import numpy as np
import pytest

from airfoil.compiler.compress import CompressionPlan
from airfoil.compiler.compressed_model import CompressedModel, compress_model
from airfoil.host.device_check import check, join_parts, main, prepare, split_file
from tests.tiny_model import tiny_llama

PROMPT = [5, 17, 3, 88, 41, 9, 60, 2]


@pytest.fixture(scope="module")
def tiny():
    plan = CompressionPlan.from_dict({"group_size": 32, "smooth_alpha": 0, "default": {"bits": 4, "method": "magnitude"}},
                                     "tiny")
    return compress_model(tiny_llama(5), plan)


def test_parts_join_to_the_same_bytes_and_a_missing_part_is_named(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    (tmp_path / "m.bin").write_bytes(data)
    folders = split_file(tmp_path / "m.bin", tmp_path / "out", part_bytes=3_000)
    assert len(folders) == 4
    assert join_parts(folders, "m.bin", tmp_path / "joined").read_bytes() == data
    with pytest.raises(ValueError, match="m.bin: parts"):
        join_parts(folders[1:], "m.bin", tmp_path / "joined2")


def test_check_with_a_part_missing_exits_2_naming_the_parts(tmp_path, capsys):
    (tmp_path / "model.afc").write_bytes(bytes(5_000))
    folders = split_file(tmp_path / "model.afc", tmp_path / "out", part_bytes=2_000)
    assert main(["check", str(folders[0]), str(folders[2]), "--work", str(tmp_path / "work")]) == 2
    assert "model.afc: parts ['model.afc.000', 'model.afc.002'] are not .000 .. .001" in capsys.readouterr().err


def test_the_check_passes_on_the_model_carried_in_parts_and_fails_on_other_logits(tiny, tmp_path):
    out = tmp_path / "dev"
    info = prepare(tiny, PROMPT, set(), out, tokens=6, part_bytes=20_000)
    assert len(info["parts"]) >= 2 and len(info["tokens"]) == 6
    r = check([out / f"part{i}" for i in range(len(info["parts"]))], tmp_path / "work")
    assert r["passed"] and r["check"] == "passed" and r["tokens"] == info["tokens"] and r["steps_checked"] == 6
    assert CompressedModel.load(tmp_path / "work" / "model.afc").spec == tiny.spec
    expected = out / f"part{len(info['parts']) - 1}" / "expected.npz"
    stored = dict(np.load(expected))
    stored["logits"][3, 7] += 1
    np.savez_compressed(expected, **stored)
    r = check([out / f"part{i}" for i in range(len(info["parts"]))], tmp_path / "work2")
    assert not r["passed"] and not r["logits_equal_stored"] and r["logits_equal_cpu"]
