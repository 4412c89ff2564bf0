"""The performance report: ``airfoil report -o reports`` writes ``performance.md``, its JSON and
PNG plots (decode tok/s and HBM use per context, a roofline, resources), from the cycle model
over the compiled programs (``sim/perf.py``: the target machine's timing, and the RTL's as built,
which ``airfoil calibrate`` holds to Verilator)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["REPORT_RUNS", "ANCHORS", "measure", "write_report"]

# (model, board, plan) projected in the report
REPORT_RUNS = (("llama2-7b", "u280", "flightllm"), ("llama2-7b", "vhk158", "flightllm"),
               ("llama2-7b", "u280", "default"), ("opt-6.7b", "u280", "ffn-sparse"))
# Published decode figures, batch 1, LLaMA2-7B (docs: ../shared/DESIGN.md, REFERENCES.md)
ANCHORS = (
    ("FlightLLM, U280 (measured)", "u280", 55.0, "mixed 2/3/4/8-bit (3.5 avg), N:M sparse, INT8 KV; HBM use 65.9%"),
    ("FlightLLM, VHK158 (simulated)", "vhk158", 92.5, "same recipe"),
    ("AccLLM, U280", "u280", 164.0, "W2A8KV4, 2:4 sparse"),
    ("H100 GPU, fp16, PyTorch + CUDA graphs", "gpu", 110.0, "1.46 TB/s effective of 3.35 TB/s"),
)
# FlightLLM's U280 build
FLIGHTLLM_U280 = {"dsp": 6345, "bram36": 1252, "uram": 792}


def measure(progress=print, runs=REPORT_RUNS) -> list[dict]:
    from airfoil.compiler.compress import CompressionPlan
    from airfoil.compiler.model import model_spec
    from airfoil.compiler.plans import plan_path
    from airfoil.config import preset
    from airfoil.sim.perf import project

    rows = []
    for model, board, plan in runs:
        progress(f"projecting {model} on {board} with plan {plan}")
        cfg = preset(board)
        r = project(model_spec(model), CompressionPlan.load(plan_path(plan)), cfg)
        r["resources"] = {"dsp": cfg.dsp_slices, "bram36": cfg.bram36_estimate, "uram": cfg.uram_estimate,
                          "lut": cfg.lut_estimate, "capacity": {"dsp": cfg.board_spec.dsp,
                                                                "bram36": cfg.board_spec.bram36,
                                                                "uram": cfg.board_spec.uram, "lut": cfg.board_spec.lut}}
        r["peak_macs_per_s"] = cfg.macs_per_cycle * cfg.clock_mhz * 1e6
        rows.append(r)
    return rows


def _plots(rows: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        ctx = [c["context"] for c in r["decode_by_context"]]
        label = f"{r['model']} {r['board']} {r['plan']}"
        a.plot(ctx, [c["tok_s"] for c in r["decode_by_context"]], marker="o", label=label)
        b.plot(ctx, [100 * c["hbm_utilisation"] for c in r["decode_by_context"]], marker="o", label=label)
    for name, _, tok, _ in ANCHORS:
        a.axhline(tok, ls=":", lw=1, color="grey")
        a.text(130, tok, name, fontsize=7, va="bottom", color="grey")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for axis in (a, b):
        axis.set_xscale("log")
        axis.set_xticks(sorted({c["context"] for r in rows for c in r["decode_by_context"]}))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
    a.set(xlabel="context (tokens in the KV cache)", ylabel="decode tok/s (batch 1)",
          title="Decode throughput (projected, uncalibrated)")
    b.axhline(85, ls="--", color="red", lw=1)
    b.axhline(65.9, ls=":", color="grey", lw=1)
    b.text(130, 66.5, "FlightLLM 65.9%", fontsize=7, color="grey")
    b.set(xlabel="context", ylabel="HBM bandwidth use (% of peak)", title="Decode HBM use", ylim=(0, 100))
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "perf_decode.png", dpi=110)
    names.append("perf_decode.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows[:2]:  # the two boards with the same plan
        peak = r["peak_macs_per_s"]
        bw = r["hbm_peak_gbps"] * 1e9
        xs = [0.1, peak / bw, 1e4]
        ax.plot(xs, [min(peak, bw * x) for x in xs], label=f"roof {r['board']}")
        sec = r["decode_cycles"] / (r["clock_mhz"] * 1e6)
        macs = r["dsp_utilisation"] * peak * sec
        ax.scatter([macs / r["bytes_per_token"]], [macs / sec], marker="o", label=f"decode ctx {r['context']} {r['board']}")
    ax.set(xscale="log", yscale="log", xlabel="MACs per HBM byte", ylabel="MAC/s", title="Roofline (batch-1 decode)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "perf_roofline.png", dpi=110)
    names.append("perf_roofline.png")
    plt.close(fig)
    return names


CALIBRATION = Path(__file__).resolve().parents[1] / "reports" / "calibration.json"
# the U280 kernel as built, synthesised (``airfoil generate --block mpe --board u280 --synth``)
DEVICE_FIT = Path(__file__).resolve().parents[1] / "reports" / "device_fit_u280.json"


def as_built_row(path: Path = DEVICE_FIT) -> str | None:
    """The resource table's row of the U280 kernel as built, from its committed device fit, where
    that fit is of the U280 preset as it stands (its DSPs in the chains); else None."""
    from airfoil.config import preset

    if not path.exists():
        return None
    fit = json.loads(path.read_text())
    if fit.get("dsp_slices") != preset("u280").dsp_slices // preset("u280").cores:
        return None
    built = fit["device"]["as_built"]
    need, cap, use = built["need"], built["capacity"], built["utilisation"]
    return (f"| u280 as built ({path.name}: synthesised, {fit['device']['cores']} cores; BRAM36 and URAM as "
            f"on-chip bytes) | {need['dsp']:,} / {cap['dsp']:,} | {100 * use['on_chip_bytes']:.0f}% of the "
            f"on-chip bytes | | {need['lut']:,} / {cap['lut']:,} ({100 * use['lut']:.1f}%) |")


def calibration_spread(path: Path = CALIBRATION) -> float:
    """The largest |model / RTL - 1| over the op types of the committed calibration."""
    sections = json.loads(path.read_text())["comparison"]["sections"]
    return max(abs(op["ratio"] - 1) for s in sections for op in s["ops"].values())


def write_report(out: Path, rows: list[dict]) -> list[Path]:
    """performance.md, performance.json and the plots, each written whole (temp file, rename)."""
    out.mkdir(parents=True, exist_ok=True)
    spread = f"{100 * calibration_spread():.1f}%"
    lines = ["# Performance projections", "",
             "Generated by `airfoil report -o reports` from the cycle model (`sim/perf.py`, `docs/perf.md`) over",
             "the compiled programs, for the **target machine**: one DMA per HBM pseudo-channel, MV's two rows and",
             "MM's two tokens per chain beat, attention's products on the MPE. Of these the RTL has only MV's two",
             "rows and MM's two tokens (at any chain count), so these projections are **not calibrated**.",
             "The RTL as built is: its",
             f"timing model is within {spread} of Verilator on every op type of SmolLM2's prefill and decode",
             "(`reports/calibration.json`), and the last column gives the same program under it.",
             "", "## Decode and prefill (batch 1)", "",
             "| model | board | plan | bits/weight | tok/s ctx 128 | tok/s ctx 512 | tok/s ctx 2048 | HBM use @512 | "
             "bytes/token | DSP use | prefill 128 tok | J/token | RTL as built: tok/s ctx 512 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        by = {c["context"]: c["tok_s"] for c in r["decode_by_context"]}
        lines.append(f"| {r['model']} | {r['board']} | {r['plan']} | {r['weight_bits_average']:.2f} | {by.get(128, '-')} | "
                     f"{r['decode_tok_s']} | {by.get(2048, '-')} | {100 * r['hbm_utilisation']:.1f}% | "
                     f"{r['bytes_per_token'] / 1e9:.3f} GB | {100 * r['dsp_utilisation']:.1f}% | "
                     f"{r['prefill_ms']:.0f} ms | {r['joules_per_token']:.3f} | {r['rtl_as_built']['decode_tok_s'] or '-'} |")
    r = rows[0]
    sec = r["decode_cycles"] / (r["clock_mhz"] * 1e6)
    lines += ["", f"Arithmetic of the first row (decode at context {r['context']}): {r['decode_cycles']:,} cycles at "
              f"{r['clock_mhz']:.0f} MHz = {sec * 1e3:.3f} ms, so {r['decode_tok_s']} tok/s; "
              f"{r['bytes_per_token'] / 1e9:.3f} GB per token ({r['kv_bytes_per_token'] / 1e9:.3f} GB of it KV cache) "
              f"/ {sec * 1e3:.3f} ms = {r['bytes_per_token'] / sec / 1e9:.1f} GB/s of the {r['hbm_peak_gbps']:.0f} GB/s "
              f"peak ({100 * r['hbm_utilisation']:.1f}%)."]
    lines += ["", "## Against published figures (LLaMA2-7B decode, batch 1)", "",
              "| system | tok/s | recipe |", "|---|---|---|"]
    ours = {r["board"]: r for r in rows if r["model"] == "llama2-7b" and r["plan"] == "flightllm"}
    for board in ("u280", "vhk158"):
        if board in ours:
            r = ours[board]
            lines.append(f"| Airfoil, {board} (projected, ctx {r['context']}) | {r['decode_tok_s']} | plan flightllm: "
                         f"{r['weight_bits_average']:.2f} bits/weight, INT8 KV |")
    lines += [f"| {name} | {tok} | {recipe} |" for name, _, tok, recipe in ANCHORS]
    lines += ["", "## Resources (config estimates: the MPE at its measured LUTs per DSP, each core's other units as "
              "the sim kernel measured them, each buffer once, no weight path counted; the U280 kernel as built "
              "counts it: see docs/accelerator.md, the device fit)", "",
              "| board | DSP | BRAM36 | URAM | LUT |", "|---|---|---|---|---|"]
    seen = set()
    for r in rows:
        if r["board"] in seen:
            continue
        seen.add(r["board"])
        res, cap = r["resources"], r["resources"]["capacity"]
        lines.append(f"| {r['board']} | {res['dsp']:,} / {cap['dsp']:,} | {res['bram36']:,} / {cap['bram36']:,} | "
                     f"{res['uram']:,} / {cap['uram']:,} | {res['lut']:,} / {cap['lut']:,} |")
    built = as_built_row()
    if built and "u280" in seen:
        lines.append(built)
    lines.append(f"| FlightLLM on U280 | {FLIGHTLLM_U280['dsp']:,} | {FLIGHTLLM_U280['bram36']:,} | "
                 f"{FLIGHTLLM_U280['uram']:,} | - |")
    pngs = _plots(rows, out)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    written = []
    for name, text in (("performance.md", "\n".join(lines)), ("performance.json", json.dumps(rows, indent=1))):
        fd, tmp = tempfile.mkstemp(dir=out, suffix=".partial")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written + [out / p for p in pngs]
