"""``airfoil demo`` (what ``make demo`` runs): the golden path on the embedded SmolLM2.

Compress with the default plan (cached in the output folder), then measure the float
reference against transformers and the compressed model's float simulation against its
integer reference."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from airfoil.errors import AirfoilError

__all__ = ["run_demo", "default_compressed"]


def default_compressed(out_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """The embedded SmolLM2 compressed with the default plan, cached in ``out_dir`` under a key of
    the plan's text (a changed default plan is compressed again)."""
    import hashlib

    from airfoil.cli import main as cli
    from airfoil.compiler.plans import plan_path

    out_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(plan_path("default").read_bytes()).hexdigest()[:10]
    compressed = out_dir / f"smollm2-default-{key}.afc"
    if not compressed.exists():
        progress(f"compressing SmolLM2-135M with the default plan -> {compressed} (once; cached)")
        if cli(["compress", "--model", "smollm2", "--plan", "default", "-o", str(compressed)]):
            raise AirfoilError("compressing the embedded SmolLM2 failed")
    else:
        progress(f"using the cached compressed model {compressed}")
    return compressed


def run_demo(out_dir: Path, tokens: int = 512, progress: Callable[[str], None] = print) -> int:
    t0 = time.time()
    compressed = default_compressed(out_dir, progress)
    from airfoil.host.evaluation import evaluate

    result = evaluate("smollm2", compressed=str(compressed), n_tokens=tokens, progress=progress)
    print(json.dumps(result, indent=2))
    ok = (result["max_abs_logit_diff_vs_hf"] <= 1e-3 and result["effective_bits_per_weight"] <= 4.5)
    progress(f"float reference vs transformers: max |logit diff| {result['max_abs_logit_diff_vs_hf']:.2e}; "
             f"compressed: {result['effective_bits_per_weight']:.3f} bits/weight, {100 * result['sparsity']:.1f}% "
             f"pruned, perplexity {result['ppl_compressed']:.2f} (float {result['ppl_float']:.2f}), integer "
             f"reference {result['ppl_integer']:.2f} on {result['device']}; {time.time() - t0:.0f} s")
    return 0 if ok else 1
