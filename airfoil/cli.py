"""The ``airfoil`` command line.

Every subcommand turns bad input (an :class:`AirfoilError`) into one line on stderr and exit
status 2, and writes no partial output.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from airfoil.errors import AirfoilError

__all__ = ["main"]


def _emit(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, sort_keys=False))
    else:
        width = max(len(k) for k in obj)
        for k, v in obj.items():
            print(f"{k:<{width}}  {v}")


def _progress(quiet: bool):
    def say(msg: str) -> None:
        if not quiet:
            print(f"[airfoil] {msg}", file=sys.stderr, flush=True)
    return say


# ------------------------------------------------------------------------------------ config
def _resolve_config(args) -> "AirfoilConfig":  # noqa: F821
    from airfoil.config import ConfigError, load_config, preset

    if getattr(args, "config", None):
        return load_config(args.config)
    overrides = {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        import yaml

        overrides[key] = yaml.safe_load(value)
    return preset(args.board, **overrides)


def cmd_config(args) -> int:
    cfg = _resolve_config(args)
    if args.output:
        cfg.save(args.output)
    out = cfg.to_dict() | cfg.derived()
    _emit(out, args.json)
    return 0


# ------------------------------------------------------------------------------------ compress
def _load_plan(name: str):
    from airfoil.compiler.compress import CompressionPlan
    from airfoil.compiler.plans import plan_path

    return CompressionPlan.load(plan_path(name))


def cmd_compress(args) -> int:
    import torch

    from airfoil.compiler.compressed_model import compress_model
    from airfoil.compiler.model import load_model
    from airfoil.host.hf_reference import load_model_tokenizer
    from airfoil.host.text import calibration_tokens

    say = _progress(args.quiet)
    plan = _load_plan(args.plan)
    model = load_model(args.model)
    plan.resolve(model.spec)  # reject a bad plan before any work
    out = Path(args.output)
    if not out.parent.exists():
        raise AirfoilError(f"-o {out}: folder {out.parent} does not exist")
    t0 = time.time()
    torch.manual_seed(0)
    cal = calibration_tokens(load_model_tokenizer(model), plan.calibration_tokens) \
        if plan.needs_calibration(model.spec) else None
    cm = compress_model(model, plan, cal, progress=say)
    cm.save(out)
    result = {"output": str(out), "plan": plan.name, "effective_bits_per_weight": round(cm.effective_bits_per_weight(), 4),
              "sparsity": round(cm.sparsity(), 4), "layers": len(cm.linears), "seconds": round(time.time() - t0, 1)}
    _emit(result, args.json)
    return 0


# ------------------------------------------------------------------------------------ eval
def cmd_eval(args) -> int:
    from airfoil.host.evaluation import evaluate

    result = evaluate(args.model, compressed=args.compressed, n_tokens=args.tokens, text_file=args.text_file,
                      device=args.device, integer=not args.no_integer, progress=_progress(args.quiet))
    _emit(result, args.json)
    return 0


# ------------------------------------------------------------------------------------ generate
SYNTH_WHOLE_CHAINS = 8  # MPEs with more chains are synthesised as one chain, scaled


def cmd_generate(args) -> int:
    import os
    import tempfile

    from airfoil.hw.blocks import BLOCKS, block_dsp_slices, build_block
    from airfoil.hw.synth import synthesize_verilog, to_verilog

    if args.block not in BLOCKS and args.block != "kernel":
        raise AirfoilError(f"--block {args.block!r}: expected one of {sorted([*BLOCKS, 'kernel'])}")
    cfg = _resolve_config(args)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise AirfoilError(f"-o {out}: exists and is not a folder")
    if args.block == "kernel":
        return _generate_kernel(args, cfg, out)
    name = f"airfoil_{args.block}"
    text = to_verilog(build_block(args.block, cfg), name)
    result = {"block": args.block, "board": cfg.board, "top": name, "dsp_slices": block_dsp_slices(args.block, cfg)}
    if args.synth:
        if args.block == "mpe" and cfg.chains_per_core > SYNTH_WHOLE_CHAINS:
            # too slow here as a whole: one chain, counted chains_per_core times (the chains of an
            # MPE share nothing but their inputs), labelled as scaled
            res = synthesize_verilog(to_verilog(build_block("chain", cfg), "airfoil_chain"), "airfoil_chain")
            scale = cfg.chains_per_core
            result["synth_scope"] = f"one chain synthesised, x {scale} chains (scaled)"
        else:
            res, scale = synthesize_verilog(text, name), 1
            result["synth_scope"] = "whole block"
        result["synth"] = {"dsp48e2": res.dsp * scale, "lut": res.lut * scale, "ff": res.ff * scale,
                           "carry": res.carry * scale, "bram36": res.bram36 * scale, "uram": res.uram * scale}
        if args.block == "mpe":
            # the device fit of all cores: as built (every MV row lane's decoder, buffer copies)
            # and as the projections assume (no weight path counted), hw/synth.py: device_fit
            from airfoil.hw.synth import device_fit

            mpe = {"dsp48e2": res.dsp * scale, "lut": res.lut * scale, "lutram": res.lutram * scale,
                   "ff": res.ff * scale}
            result["device"] = device_fit(cfg, mpe, _progress(args.quiet))
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".partial")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, out / f"{name}.v")
    cfg.save(out / "config.yaml")
    result["verilog"] = str(out / f"{name}.v")
    _emit(result, args.json)
    return 0


def _generate_kernel(args, cfg, out: Path) -> int:
    """``generate --block kernel``: the whole kernel's Verilog and its Vitis package (hw/vitis.py)."""
    import os
    import shutil
    import tempfile

    from airfoil.compiler.model import ModelError, model_spec
    from airfoil.hw import vitis
    from airfoil.hw.sfu_unit import RopeTable
    from airfoil.hw.synth import TOP_CHANNEL_BYTES, to_verilog
    from airfoil.hw.mv_unit import mv_unit_problem
    from airfoil.hw.top import AirfoilKernel, SfuSettings
    from airfoil.sim.rtl_top import positions_for

    problem = mv_unit_problem(cfg.chains_per_core, cfg.dsp_groups_per_chain)
    if problem:
        raise AirfoilError(f"--block kernel: the {cfg.board} config's {cfg.chains_per_core} chains a core cannot be "
                           f"built as a kernel yet: {problem}; use --board sim or --set chains_per_core=N")
    if cfg.cores > 1:  # AirfoilKernel is one core, its buffers the config's whole machine's
        raise AirfoilError(f"--block kernel: the {cfg.board} config has {cfg.cores} cores (one per SLR); the kernel is "
                           f"built for one core only so far; use --set cores=1")
    try:
        spec = model_spec(args.model)
    except (KeyError, ValueError, ModelError) as e:
        raise AirfoilError(f"--model {args.model!r}: {e}") from None
    if args.max_len < 1:
        raise AirfoilError(f"--max-len {args.max_len}: expected a positive number of positions")
    positions = positions_for(args.max_len)
    sfu = SfuSettings(max(spec.d_model, spec.d_ff), RopeTable(spec.head_dim, spec.rope_theta, positions), positions)
    kernel = AirfoilKernel(cfg, TOP_CHANNEL_BYTES, sfu, sim=False)
    _progress(args.quiet)(f"elaborating the kernel ({cfg.chains_per_core} chains, {cfg.hbm_channels} HBM masters)")
    files = {f"{vitis.VERILOG_TOP}.v": to_verilog(kernel, vitis.VERILOG_TOP),
             f"{vitis.KERNEL_NAME}.v": vitis.wrapper_verilog(kernel),
             "kernel.xml": vitis.kernel_xml(cfg),
             "package_xo.tcl": vitis.package_tcl(cfg, [f"{vitis.VERILOG_TOP}.v", f"{vitis.KERNEL_NAME}.v"]),
             "connectivity.cfg": vitis.connectivity_cfg(cfg),
             "README.md": vitis.board_readme(cfg, spec.name)}
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".partial-"))
    try:  # all files or none
        for name, text in files.items():
            (stage / name).write_text(text)
        cfg.save(stage / "config.yaml")
        for f in stage.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    result = {"block": "kernel", "board": cfg.board, "top": vitis.KERNEL_NAME, "model": spec.name,
              "dsp_slices": cfg.chains_per_core * cfg.dsp_per_chain, "hbm_masters": cfg.hbm_channels,
              "files": sorted([*files, "config.yaml"]), "verilog": str(out / f"{vitis.VERILOG_TOP}.v")}
    _emit(result, args.json)
    return 0


# ------------------------------------------------------------------------------------ compile
def cmd_compile(args) -> int:
    import os
    import shutil

    from airfoil.compiler.compress import CompressionPlan
    from airfoil.compiler.lowering import compile_model, program_stats
    from airfoil.compiler.model import model_spec
    from airfoil.compiler.plans import plan_path
    from airfoil.isa import disassemble

    cfg = _resolve_config(args)
    t0 = time.time()
    compressed = None
    if args.compressed:
        from airfoil.compiler.compressed_model import CompressedModel

        compressed = CompressedModel.load(args.compressed)
        spec, plan = compressed.spec, compressed.plan
    else:
        spec = model_spec(args.model)
        plan_name = args.plan or ("default" if spec.arch == "llama" else "ffn-sparse")
        plan = CompressionPlan.load(plan_path(plan_name) if not plan_name.endswith((".yaml", ".yml")) else plan_name)
    max_len = args.max_len or min(spec.max_positions, 4096)
    prog = compile_model(spec, plan.resolve(spec), plan.group_size, cfg, max_len, compressed)
    compile_seconds = time.time() - t0
    result = {"model": spec.name, "board": cfg.board, "plan": plan.name, "max_len": max_len,
              "compile_seconds": round(compile_seconds, 3)}
    if args.stats:
        result.update(program_stats(prog))
    if args.output:
        out = Path(args.output)
        if out.exists() and not (out / "program.json").exists() and any(out.iterdir()):
            raise AirfoilError(f"-o {out}: exists and is not an airfoil program folder")
        tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            blob, sections = b"", {}
            for name, code in prog.encoded().items():
                sections[name] = {"offset": len(blob), "instructions": len(prog.sections[name])}
                blob += code
            (tmp / "program.bin").write_bytes(blob)
            (tmp / "program.asm").write_text("".join(
                f"# section {name}\n" + "".join(disassemble(i) + "\n" for i in code)
                for name, code in prog.sections.items()))
            if prog.images is not None:
                (tmp / "hbm").mkdir()
                for ch, img in enumerate(prog.images):
                    (tmp / "hbm" / f"channel_{ch:02d}.bin").write_bytes(bytes(img))
            manifest = {"format": "airfoil-program", "version": 1, "model": spec.to_dict(), "plan": plan.to_dict(),
                        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else None, "sections": sections,
                        "registers": {"R0": "tokens in this pass", "R1": "position of the first token"},
                        "hbm": prog.hbm, "buffers": prog.buffers, "weights": prog.images is not None}
            (tmp / "program.json").write_text(json.dumps(manifest, indent=1, default=str))
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        result["output"] = str(out)
    _emit(result, args.json)
    return 0


# ------------------------------------------------------------------------------------ train-int
def cmd_train_int(args) -> int:
    import os

    import torch

    from airfoil.host.train_int import run_task

    if args.threads:
        torch.set_num_threads(args.threads)
    r = run_task(args.task, args.bits, args.seed, args.steps, args.seeds)
    result = {"task": r.task, "bits": r.bits, "metric": r.metric, "fp32_metric": round(r.fp32_metric, 4),
              "int_metric": round(r.int_metric, 4), "delta": round(r.delta, 4), "delta_unit": r.delta_kind,
              "steps": r.steps, "seeds": len(r.per_seed), "seconds": round(r.seconds, 1),
              **{k: round(v, 4) for k, v in r.secondary.items()}}
    if len(r.per_seed) > 1:
        result["per_seed"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()} for p in r.per_seed]
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"train_int_{r.task}_{r.bits}bit"
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, curve in r.curves.items():
            k = max(1, len(curve) // 100)  # a running mean over about 1% of the steps
            smooth = [sum(curve[max(0, i - k):i + 1]) / len(curve[max(0, i - k):i + 1]) for i in range(len(curve))]
            ax.plot(smooth, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss" if r.task == "digits" else "training bits per character")
        ax.set_title(f"{r.task}: FP32 vs {r.bits}-bit ShiftQuant + integer L1 norm")
        ax.legend()
        fig.tight_layout()
        tmp = stem.with_suffix(".png.partial")
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, stem.with_suffix(".png"))
        stem.with_suffix(".json").write_text(json.dumps({**result, "curves": r.curves}) + "\n")
        result["curves"] = str(stem.with_suffix(".png"))
    _emit(result, args.json)
    return 0


# ------------------------------------------------------------------------------------ demo
def cmd_demo(args) -> int:
    from airfoil.host.demo import run_demo

    return run_demo(out_dir=Path(args.out), tokens=args.tokens, progress=_progress(False))


def cmd_perf(args) -> int:
    from airfoil.compiler.compress import CompressionPlan
    from airfoil.compiler.model import model_spec
    from airfoil.compiler.plans import plan_path
    from airfoil.sim.perf import project

    cfg = _resolve_config(args)
    spec = model_spec(args.model)
    name = args.plan or ("default" if spec.arch == "llama" else "ffn-sparse")
    plan = CompressionPlan.load(name if name.endswith((".yaml", ".yml")) else plan_path(name))
    _emit(project(spec, plan, cfg, context=args.context, prompt=args.prompt, max_len=args.max_len), args.json)
    return 0


def cmd_calibrate(args) -> int:
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.host import calibration as cal
    from airfoil.host.demo import default_compressed

    say = _progress(args.quiet or args.json)
    out = Path(args.output)
    if out.suffix != ".json":
        raise AirfoilError(f"-o {out}: expected a .json file")
    cm = CompressedModel.load(default_compressed(Path(args.out), say))
    if args.compare_only:
        if not out.exists():
            raise AirfoilError(f"--compare-only: {out} does not exist (run `airfoil calibrate` without it first)")
        measured = json.loads(out.read_text())["measured"]
    else:
        measured = cal.measure_rtl(cm, say)
    prog = cal.calibration_program(cm, measured["prompt_tokens"])
    report = cal.compare(prog, measured)
    out.parent.mkdir(parents=True, exist_ok=True)
    cal.write(out, measured, report)
    bad = cal.within(report)
    summary = {"output": str(out), "tolerance": cal.TOLERANCE, "calibrated": not bad, "outside": bad,
               "sections": {s["section"]: {"rtl_cycles": s["rtl_cycles"], "model_cycles": s["model_cycles"],
                                           "ratio": s["ratio"],
                                           "ops": {k: e["ratio"] for k, e in s["ops"].items()}}
                            for s in report["sections"]}}
    _emit(summary, args.json)
    return 0 if not bad else 1


def cmd_run(args) -> int:
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.compiler.lowering import compile_model
    from airfoil.compiler.tokenizer import load_tokenizer
    from airfoil.host.demo import default_compressed
    from airfoil.host.runtime import (FsimBackend, ReferenceBackend, RtlBackend, chat_prompt, end_of_turn_tokens,
                                      generate, interactive_threads)

    say = _progress(args.quiet or args.json)
    if args.backend == "xrt":  # before anything slow: the board's file and XRT itself
        from airfoil.host.xrt_backend import import_pyxrt

        if not args.xclbin:
            raise AirfoilError("--backend xrt: give --xclbin FILE (built from `airfoil generate --block kernel`)")
        if not Path(args.xclbin).is_file():
            raise AirfoilError(f"--backend xrt: --xclbin {args.xclbin}: no such file")
        import_pyxrt()
    if args.waves is not None:
        if args.backend != "rtl":
            raise AirfoilError(f"--waves: only the rtl backend has waves to dump (--backend is {args.backend!r})")
        if Path(args.waves).exists() and not Path(args.waves).is_dir():
            raise AirfoilError(f"--waves {args.waves}: not a folder")
    if args.model != "smollm2" and not args.compressed:
        raise AirfoilError(f"--model {args.model!r}: give --compressed FILE (from `airfoil compress`)")
    if args.tokens < 1:
        raise AirfoilError(f"--tokens {args.tokens}: expected at least 1")
    path = Path(args.compressed) if args.compressed else default_compressed(Path(args.out), say)
    cm = CompressedModel.load(path)
    tok = load_tokenizer(cm.metadata["source"])
    prompt = chat_prompt(tok, args.prompt, chat=not args.no_chat)
    cfg = _resolve_config(args)
    max_len = len(prompt) + args.tokens
    stop = end_of_turn_tokens(tok)
    program = None
    if args.backend in ("fsim", "rtl", "xrt"):
        say(f"compiling for {cfg.board} (max length {max_len})")
        program = compile_model(cm.spec, cm.plan.resolve(cm.spec), cm.plan.group_size, cfg, max_len, cm)
        if args.backend == "fsim":
            backend = FsimBackend(program, cm)
        elif args.backend == "xrt":
            from airfoil.host.xrt_backend import XrtBackend

            say(f"loading {args.xclbin} on XRT device {args.device_index} and writing the images")
            backend = XrtBackend(program, cm, args.xclbin, args.device_index, check=args.check)
        else:
            waves = Path(args.waves) if args.waves is not None else None
            backend = RtlBackend(program, cm, check=args.check, prefill=args.prefill, threads=interactive_threads(),
                                 waves=waves)
            say(f"building the Verilator top{' with FST tracing' if waves else ''} in "
                f"{backend.top.folder(waves is not None)} (once per configuration)")
            backend.top.build(waves=waves is not None)
    else:
        backend = ReferenceBackend(cm, args.device)
    checker = ReferenceBackend(cm, args.device) if args.check else None

    def bar(done, total):
        if not (args.quiet or args.json):
            print(f"\r[airfoil] {args.backend}: {done}/{total} tokens", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)

    gen = generate(backend, prompt, args.tokens, stop, checker, bar)
    result = {"backend": args.backend, "device": backend.device, "prompt_tokens": len(prompt), "tokens": gen.tokens,
              "text": tok.decode(gen.tokens, skip_special_tokens=True), "check": gen.check,
              "mismatch": str(gen.mismatch) if gen.mismatch else None, "steps_checked": gen.steps_checked,
              "wall_seconds": round(gen.wall_seconds, 2)}
    if args.backend == "rtl":
        all_runs = list(zip(backend.run_sections, backend.runs))
        runs = [r for s, r in all_runs if s == "decode"]
        prefill = [r for s, r in all_runs if s == "prefill"]
        cycles = sum(r.cycles for r in runs)
        every_cycle, every_second = sum(r.cycles for _, r in all_runs), sum(r.run_seconds for _, r in all_runs)
        result.update({"prefill_backend": args.prefill, "rtl_decode_steps": len(runs),
                       "prefill_cycles": prefill[0].cycles if prefill else None,
                       "cycles_per_token": round(cycles / len(runs)) if runs else None,
                       "sim_cycles_per_second": round(every_cycle / every_second) if every_second else None,
                       "sim_seconds_per_step": round(sum(r.wall_seconds for r in runs) / len(runs), 2) if runs else None,
                       "projected_tok_s": round(cfg.clock_mhz * 1e6 * len(runs) / cycles, 1) if cycles else None})
    elif args.backend == "xrt":
        runs = [r for r in backend.runs if r["section"] == "decode"]
        cycles = sum(r["cycles"] for r in runs)
        result.update({"rtl_decode_steps": len(runs),
                       "cycles_per_token": round(cycles / len(runs)) if runs else None,
                       "board_tok_s": round(len(runs) / sum(r["wall_seconds"] for r in runs), 2) if runs else None,
                       "projected_tok_s": round(cfg.clock_mhz * 1e6 * len(runs) / cycles, 1) if cycles else None})
    elif program is not None:
        from airfoil.sim.perf import PerfModel

        st = PerfModel(program).run("decode", 1, len(prompt) + len(gen.tokens) - 1)
        result["cycles_per_token"] = st.cycles  # the cycle model's, not yet calibrated against RTL
        result["projected_tok_s"] = round(cfg.clock_mhz * 1e6 / st.cycles, 1)
    _emit(result, args.json)
    return 0 if gen.check != "failed" else 1


def cmd_report(args) -> int:
    from airfoil.host.perf_report import measure, write_report

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise AirfoilError(f"-o {out}: exists and is not a folder")
    files = write_report(out, measure(progress=_progress(args.quiet)))
    _emit({"written": [str(f) for f in files]}, args.json)
    return 0


def _config_args(c: argparse.ArgumentParser, board: str) -> None:
    """--board / --config / --set: the accelerator config (see _resolve_config)."""
    c.add_argument("--board", default=board, help=f"preset: u280, vhk158, sim (default {board})")
    c.add_argument("--config", help="a YAML config file (overrides --board)")
    c.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override one field of the preset")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="airfoil", description="Compressed LLMs to FPGA hardware, verified at every step.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("config", help="print the resolved accelerator config with derived totals")
    _config_args(c, "sim")
    c.add_argument("-o", "--output", help="also save the resolved config as YAML")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_config)

    c = sub.add_parser("compress", help="compress a model with a per-layer plan")
    c.add_argument("--model", default="smollm2", help="smollm2, a .gguf file or a Hugging Face folder")
    c.add_argument("--plan", default="default", help="a plan name (default, w4-dense, ...) or a YAML file")
    c.add_argument("-o", "--output", required=True, help="compressed-model file to write (.afc)")
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compress)

    c = sub.add_parser("eval", help="perplexity and logit checks against Hugging Face transformers")
    c.add_argument("--model", default="smollm2")
    c.add_argument("--compressed", help="a compressed-model file from `airfoil compress`")
    c.add_argument("--tokens", type=int, default=1024, help="evaluate on the first N tokens (default 1024)")
    c.add_argument("--text-file", help="evaluation text (default: Python's pydoc_data.topics)")
    c.add_argument("--device", help="torch device for the references (default: cuda:0 if present, else cpu)")
    c.add_argument("--no-integer", action="store_true", help="skip the integer reference's perplexity")
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_eval)

    c = sub.add_parser("generate", help="write the Verilog of a hardware block for a board")
    c.add_argument("--block", default="mpe", help="dsp_slice, chain, mpe (default) or kernel (the whole core with "
                                                  "AXI4 masters and its Vitis package)")
    c.add_argument("--model", default="smollm2", help="kernel: the model whose SFU it is built for (default smollm2)")
    c.add_argument("--max-len", type=int, default=256, help="kernel: the context the attention holds (default 256)")
    c.add_argument("--quiet", action="store_true")
    _config_args(c, "sim")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--synth", action="store_true", help="add Yosys synth_xilinx -family xcup resource counts")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_generate)

    c = sub.add_parser("compile", help="lower a (compressed) model to one length-adaptive instruction program")
    c.add_argument("--model", default="smollm2", help="smollm2, llama2-7b, opt-6.7b, a .gguf file or a Hugging Face folder")
    c.add_argument("--compressed", help="a compressed-model file: also writes the weight image")
    c.add_argument("--plan", help="the compression plan whose bit widths and patterns to assume (without --compressed)")
    _config_args(c, "sim")
    c.add_argument("--max-len", type=int, help="longest prompt + generation (default: the model's, at most 4096)")
    c.add_argument("-o", "--output", help="program folder to write")
    c.add_argument("--stats", action="store_true", help="instruction bytes, padding overhead, weight image size")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compile)

    c = sub.add_parser("perf", help="project decode tok/s, prefill latency, HBM/DSP use and energy from the cycle model")
    c.add_argument("--model", default="llama2-7b", help="smollm2, llama2-7b, opt-6.7b (shapes; no weights needed)")
    _config_args(c, "u280")
    c.add_argument("--plan", help="compression plan (default: default for LLaMA, ffn-sparse otherwise; flightllm, ...)")
    c.add_argument("--context", type=int, default=512, help="decode position (tokens already in the KV cache)")
    c.add_argument("--prompt", type=int, default=128, help="prefill length")
    c.add_argument("--max-len", type=int, help="the program's max length (default: the model's, at most 4096)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_perf)

    c = sub.add_parser("run", help="generate text on a backend (reference, fsim, rtl, xrt), optionally checked against the reference")
    c.add_argument("--model", default="smollm2")
    c.add_argument("--compressed", help="a compressed-model file (default: the embedded SmolLM2, default plan, cached)")
    c.add_argument("--out", default="out", help="cache folder for the default compressed model")
    _config_args(c, "sim")
    c.add_argument("--backend", default="fsim", choices=["reference", "fsim", "rtl", "xrt"])
    c.add_argument("--device", help="torch device of the reference (default: cuda:0 if present, else cpu)")
    c.add_argument("--prompt", required=True)
    c.add_argument("--tokens", type=int, default=16, help="most tokens to generate (stops at end of turn)")
    c.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the model's chat template")
    c.add_argument("--prefill", default="rtl", choices=["rtl", "fsim"],
                   help="rtl backend: where the prompt runs (default rtl; SmolLM2 takes ~4M RTL cycles per prompt token)")
    c.add_argument("--check", action="store_true", help="compare every layer of every step with the reference")
    c.add_argument("--waves", metavar="DIR", help="rtl backend: each RTL step's every signal as FST, "
                   "DIR/step<N>-<section>.fst (a build with tracing of its own; slower, and large for long runs)")
    c.add_argument("--xclbin", help="xrt backend: the xclbin built from `airfoil generate --block kernel`")
    c.add_argument("--device-index", type=int, default=0, help="xrt backend: the board's XRT device index")
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_run)

    c = sub.add_parser("calibrate", help="measure SmolLM2's prefill and a decode token on the RTL (instruction "
                                         "trace) and compare the cycle model with it, op by op")
    c.add_argument("-o", "--output", default="reports/calibration.json", help="where the figures go (.json)")
    c.add_argument("--out", default="out", help="cache folder for the default compressed model")
    c.add_argument("--compare-only", action="store_true",
                   help="keep the RTL measurement in the output file; compare the current model with it")
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_calibrate)

    c = sub.add_parser("report", help="write the performance report (Markdown, JSON, PNG plots)")
    c.add_argument("-o", "--output", default="reports", help="output folder (default reports)")
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_report)

    c = sub.add_parser("train-int", help="train in FP32 and with b-bit ShiftQuant + integer L1 norm; compare")
    c.add_argument("--task", required=True, help="digits (MLP, test accuracy) or charlm (char Transformer, bpc)")
    c.add_argument("--bits", type=int, required=True, help="4, 6 or 8")
    c.add_argument("--steps", type=int, help="training steps (default: the task's)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--seeds", type=int, default=1, help="average over this many consecutive seeds (default 1)")
    c.add_argument("--threads", type=int, help="torch CPU threads")
    c.add_argument("--out", help="write the curves (PNG + JSON) into this folder, e.g. reports")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_train_int)

    c = sub.add_parser("demo", help="the main job: compress the embedded SmolLM2 and check it end to end")
    c.add_argument("--out", default="out", help="working folder (cached compressed model), default ./out")
    c.add_argument("--tokens", type=int, default=512)
    c.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AirfoilError as e:
        print(f"airfoil: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("airfoil: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
