"""The background compression of `make test` widens to the cores that waiting workers leave idle."""
import os

from tests.conftest import _background_threads


def test_the_background_compression_takes_the_cores_of_waiting_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    out = tmp_path / "smollm2-default-k.afc"
    assert _background_threads(out, workers=2) == 1
    (tmp_path / f"{out.name}.waiting.101").touch()
    assert _background_threads(out, workers=2) == 1  # the other worker still runs tests
    (tmp_path / f"{out.name}.waiting.102").touch()
    assert _background_threads(out, workers=2) == 2
    (tmp_path / "other.afc.waiting.103").touch()  # another plan's waiters do not count
    assert _background_threads(out, workers=2) == 2
    assert _background_threads(out, workers=1) == 2
