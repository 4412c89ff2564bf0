"""Shared fixtures: the embedded model, its tokenizer and compressed versions cached across
test sessions and xdist workers (keyed by the plan's content)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".pytest_cache" / "airfoil"


@pytest.fixture(scope="session")
def smollm2():
    from airfoil.compiler.model import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tokenizer(smollm2):
    from airfoil.compiler.tokenizer import load_tokenizer

    return load_tokenizer(smollm2.source)


def _cache_path(plan_name: str) -> Path:
    """The cache file of SmolLM2 compressed with ``plan_name``, keyed by the plan and the code."""
    from airfoil.compiler.model import smollm2_gguf_path
    from airfoil.compiler.plans import plan_path

    key = hashlib.sha256(plan_path(plan_name).read_bytes()
                         + b"".join((ROOT / "compiler" / f).read_bytes()
                                    for f in ("compress.py", "compressed_model.py", "recovery.py"))
                         + str(smollm2_gguf_path().stat().st_size).encode()).hexdigest()[:16]
    return CACHE / f"smollm2-{plan_name}-{key}.afc"


def cached_compressed(plan_name: str, progress=None, background: bool = False):
    """Compress SmolLM2 with a shipped plan once; later sessions and other workers reuse the file.
    ``progress`` is called between layers and recovery steps.  ``background``: the caller is
    `make test`'s background compression, not a test worker that may wait for it."""
    from filelock import FileLock

    from airfoil.compiler.compress import CompressionPlan
    from airfoil.compiler.compressed_model import CompressedModel, compress_model
    from airfoil.compiler.model import load_model
    from airfoil.compiler.plans import plan_path
    from airfoil.compiler.tokenizer import load_tokenizer
    from airfoil.host.text import calibration_tokens

    path = plan_path(plan_name)
    out = _cache_path(plan_name)
    CACHE.mkdir(parents=True, exist_ok=True)
    # a worker that may block on the lock says so, for the background compression to widen
    mark = None if out.exists() or background else out.with_name(f"{out.name}.waiting.{os.getpid()}")
    try:
        if mark:
            mark.touch()
        with FileLock(str(out) + ".lock"):
            if not out.exists():
                torch.manual_seed(0)
                model = load_model("smollm2")
                plan = CompressionPlan.load(path)
                cal = calibration_tokens(load_tokenizer(model.source), plan.calibration_tokens)
                compress_model(model, plan, cal, progress).save(out)
    finally:
        if mark:
            mark.unlink(missing_ok=True)
    return CompressedModel.load(out)


def _background_threads(out: Path, workers: int) -> int:
    """Torch threads for the background compression: the cores that the test workers leave idle
    while they wait for it (at least one)."""
    waiting = len(list(out.parent.glob(f"{out.name}.waiting.*")))
    return max(1, min(os.cpu_count() or 1, (os.cpu_count() or 1) - workers + waiting))


@pytest.fixture(scope="session")
def compressed_default():
    return cached_compressed("default")


def pytest_configure(config):
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))


def pytest_collection_modifyitems(config, items):
    """The modules that need the compressed SmolLM2 run last.  `make test` compresses it in the
    background while the other tests run (``python -m tests.conftest``); without that, the worker
    that reached those modules first compressed while the other waited on the cache's lock.
    Every xdist worker reorders its collection the same way, as xdist requires."""
    needs = {it.module.__name__ for it in items if "compressed_default" in getattr(it, "fixturenames", ())}
    items[:] = ([it for it in items if it.module.__name__ not in needs]
                + [it for it in items if it.module.__name__ in needs])


if __name__ == "__main__":  # make test: compress in the background beside the test workers (argv[1], default 2)
    # One thread while the workers run the other tests; two (all cores) once both wait for the
    # file.  Two threads throughout were tried (CI at 38b6790): the other tests took about 30
    # minutes, against about 27 with one on the same day's machine.
    import sys

    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    target = _cache_path("default")

    def widen(message: str) -> None:
        n = _background_threads(target, workers)
        if n != torch.get_num_threads():
            print(f"[make test] the background compression goes on with {n} thread(s): {message}",
                  file=sys.stderr, flush=True)
            torch.set_num_threads(n)

    torch.set_num_threads(1)
    cached_compressed("default", widen, background=True)
