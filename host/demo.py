"""``airfoil demo`` (what ``make demo`` runs): the golden path on the embedded SmolLM2.

Compress with the default plan (cached in the output folder), then measure the float
reference against transformers and the compressed model's float simulation against its
integer reference."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

__all__ = ["run_demo"]


def run_demo(out_dir: Path, tokens: int = 512, progress: Callable[[str], None] = print) -> int:
    from airfoil.cli import main as cli

    import hashlib

    from airfoil.compiler.plans import plan_path

    out_dir.mkdir(parents=True, exist_ok=True)
    # the cache is keyed by the plan's text, so a changed default plan is compressed again
    key = hashlib.sha256(plan_path("default").read_bytes()).hexdigest()[:10]
    compressed = out_dir / f"smollm2-default-{key}.afc"
    t0 = time.time()
    if not compressed.exists():
        progress(f"compressing SmolLM2-135M with the default plan -> {compressed} (once; cached)")
        rc = cli(["compress", "--model", "smollm2", "--plan", "default", "-o", str(compressed)])
        if rc:
            return rc
    else:
        progress(f"using the cached compressed model {compressed}")
    from airfoil.host.evaluation import evaluate

    result = evaluate("smollm2", compressed=str(compressed), n_tokens=tokens, progress=progress)
    print(json.dumps(result, indent=2))
    ok = (result["max_abs_logit_diff_vs_hf"] <= 1e-3 and result["effective_bits_per_weight"] <= 4.5)
    progress(f"float reference vs transformers: max |logit diff| {result['max_abs_logit_diff_vs_hf']:.2e}; "
             f"compressed: {result['effective_bits_per_weight']:.3f} bits/weight, {100 * result['sparsity']:.1f}% "
             f"pruned, perplexity {result['ppl_compressed']:.2f} (float {result['ppl_float']:.2f}), integer "
             f"reference {result['ppl_integer']:.2f} on {result['device']}; {time.time() - t0:.0f} s")
    return 0 if ok else 1
