"""The compression-plan table in reports/: bits, sparsity and perplexity of each shipped plan.

Run: ``python -m airfoil.host.plan_report -o reports [--tokens 4096] [PLAN ...]``."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

__all__ = ["measure_plans", "write_report"]

REPORT_PLANS = ("w8-dense", "w4-dense", "attn-sparse", "default-no-recovery", "default")


def measure_plans(names, n_tokens: int, progress=print, done: list[dict] | None = None,
                  on_row=lambda rows: None) -> list[dict]:
    """Rows of the table; plans already in ``done`` (same token count) are not measured again."""
    from airfoil.compiler.compress import CompressionPlan
    from airfoil.compiler.compressed_model import compress_model
    from airfoil.compiler.model import load_model
    from airfoil.compiler.plans import plan_path
    from airfoil.compiler.tokenizer import load_tokenizer
    from airfoil.host.evaluation import perplexity
    from airfoil.host.float_reference import FloatReference
    from airfoil.host.integer_reference import IntegerReference
    from airfoil.host.text import calibration_tokens, eval_tokens

    model = load_model("smollm2")
    tok = load_tokenizer(model.source)
    ev = eval_tokens(tok, n_tokens)
    rows = [{"plan": "float (GGUF weights)", "bits_per_weight": None, "sparsity": 0.0,
             "ppl": perplexity(FloatReference(model.spec, model.weights).forward, ev), "ppl_integer": None}]
    previous = {r["plan"]: r for r in done or []}
    for name in names:
        if name in previous:
            rows.append(previous[name])
            continue
        plan = CompressionPlan.load(plan_path(name))
        t = time.time()
        cm = compress_model(model, plan, calibration_tokens(tok, plan.calibration_tokens))
        progress(f"{name}: compressed in {time.time() - t:.0f} s")
        rows.append({"plan": name, "bits_per_weight": cm.effective_bits_per_weight(), "sparsity": cm.sparsity(),
                     "ppl": perplexity(FloatReference(cm.spec, cm.dequantised_weights()).forward, ev),
                     "ppl_integer": perplexity(IntegerReference(cm).logits_float, ev)})
        progress(json.dumps(rows[-1]))
        on_row(rows)
    return rows


def write_report(rows: list[dict], out: Path, n_tokens: int) -> None:
    base = rows[0]["ppl"]
    lines = ["# Compression plans on SmolLM2-135M-Instruct", "",
             f"Perplexity on the first {n_tokens} tokens of `pydoc_data.topics` (calibration uses the corpus' "
             "tail). *bits/weight* counts every stored bit of the linear layers (LM head included): codes, "
             "N:16 positions (4-bit indices, or a 16-bit mask per block for 8:16), 16-bit group scales and zeros. *sparsity* is the fraction of linear-layer "
             "weights pruned. *ppl* is the compressed model's float simulation; *integer* is the integer "
             "reference (docs/numerics.md). Regenerate: `python -m airfoil.host.plan_report -o reports`.", "",
             "| plan | bits/weight | sparsity | ppl | x float | integer ppl |", "|---|---|---|---|---|---|"]
    for r in rows:
        bits = "-" if r["bits_per_weight"] is None else f"{r['bits_per_weight']:.3f}"
        integer = "-" if r["ppl_integer"] is None else f"{r['ppl_integer']:.2f}"
        lines.append(f"| {r['plan']} | {bits} | {100 * r['sparsity']:.1f}% | {r['ppl']:.2f} | "
                     f"{r['ppl'] / base:.3f} | {integer} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compression_plans.md").write_text("\n".join(lines) + "\n")
    (out / "compression_plans.json").write_text(json.dumps({"tokens": n_tokens, "rows": rows}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-o", "--out", default="reports")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("plans", nargs="*", default=list(REPORT_PLANS))
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    saved = out / "compression_plans.json"
    done = []
    if saved.exists():  # resume: keep the plans already measured on the same number of tokens
        data = json.loads(saved.read_text())
        if data.get("tokens") == args.tokens:
            done = [r for r in data["rows"] if r["bits_per_weight"] is not None]
    rows = measure_plans(args.plans, args.tokens, done=done,
                         on_row=lambda rows: write_report(rows, out, args.tokens))
    write_report(rows, out, args.tokens)


if __name__ == "__main__":
    main()
