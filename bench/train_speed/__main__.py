"""Training speed and memory: plain Hugging Face + PEFT beside tunewise's fast path, same batches, one run.

Every measurement runs in its own process (peak memory is the process's own, and Liger's RoPE patch is
module-global), on identical random weights and token batches (same seeds). Rows print as soon as they are
measured; the markdown table (and a JSONL with every step) is rewritten after every row.

GPU (the issue's setting: Llama-3-8B shape, random weights, LoRA r=16 all-linear, bf16, AdamW, SDPA):
  python -m bench.train_speed --rows lora-2048x4-gc,lora-2048x2,lora-4096x1-gc   # the three issue rows
  python -m bench.train_speed --rows ablate-2048x4-gc --sides base,t-none,t-loss,t-liger-loss,t-kernels
  python -m bench.train_speed --rows qlora-2048x1 | maxctx | banking77 --banking77 PATH/train.csv
  python -m bench.train_speed --rows lora-2048x4-gc --sides tunewise,hf-liger,unsloth   # against Liger, Unsloth
  python -m bench.train_speed --rows qlora-maxctx --ctx-budget 240   # longest QLoRA context under 80 GiB
  python -m bench.train_speed --rows qlora-maxctx --ctx-budget 0 --ctx-check 0 --ctx-confirm 350000 --timeout 590
CPU check at toy size: python -m bench.train_speed --tiny --rows all

MFU is against a bf16 GEMM's rate measured at the start of each call (peak.py; --peak-tflops overrides it);
the JSONL's first record ("meta") holds that rate, the GPU's name and the libraries' versions. The sides
hf-liger and unsloth (sides_external.py) run in processes of their own and answer "<side>: <why>" when they
cannot run; the targets table after the main one compares tunewise's sides with them."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import RESULTS
from bench.train_speed.longctx import probe_qlora_max_context
from bench.train_speed.measure import measure, probe_max_context
from bench.train_speed.rows import ROWS, SIDES, Row
from bench.train_speed.sides_external import EXTERNAL_SIDES
from tunewise.config import LoraConfig

HEADER = (
    "| configuration | side | baseline tok/s | side tok/s | ratio | ratio of median steps | baseline GiB | "
    "side GiB | MFU | loss diff (timed steps) |\n|---|---|---|---|---|---|---|---|---|---|"
)
TARGETS_HEADER = "| configuration | check | measured | target | met |\n|---|---|---|---|---|"
# The issue's targets: tunewise against Unsloth and against HF + Liger, each at no more peak memory than the
# other's, and every side's loss over the timed steps within 0.1 % of plain HF + PEFT's.
SPEED_TARGETS = {"unsloth": 1.3, "hf-liger": 1.8}
LOSS_TOLERANCE = 0.001


# The automatic plan's budget for a side matched to another side's memory: that side's measured peak, less the
# memory model's error (its 15 fitted peaks were within 1.2 %), so that the measured peak lands at or under it.
MATCH_SHARE = 0.98


def _matched_budget(other: str, results: dict[str, dict]) -> float | None:
    r = results.get(other, {})
    return round(MATCH_SHARE * r["peak_gib"], 2) if r.get("peak_gib") and "error" not in r else None


def _worker(spec: dict, timeout: int) -> dict:
    """One measurement in a fresh process; its last stdout line is the result JSON. The child inherits this
    process's working directory and PYTHONPATH, so `-m bench.train_speed` finds the same package."""
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "PYTHONUNBUFFERED": "1"}
    side = spec.get("side")
    # hf-liger and unsloth start from their own module: Unsloth must be imported before transformers.
    module = "bench.train_speed.sides_external" if side in EXTERNAL_SIDES else "bench.train_speed"
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        res = {"error": f"timed out after {timeout} s"}
    else:
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not proc.returncode and lines:
            return json.loads(lines[-1])
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        res = {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    if side in EXTERNAL_SIDES:  # one line naming the side, as the side's own failures read
        res["error"] = f"{side}: {res['error']}"
    return res


def _loss_diff(base: dict, fast: dict) -> str:
    a, b = base.get("losses", []), fast.get("losses", [])
    if not a or len(a) != len(b):
        return "n/a"
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    return f"{100 * (mean_b - mean_a) / mean_a:+.3f} % (max step {100 * worst:.3f} %)"


def _cell(r: dict, key: str, fmt: str) -> str:
    if "error" in r:
        return "OOM" if r.get("oom") else ("skipped" if r["error"].startswith("skipped") else "error")
    return format(r[key], fmt)


def _mean_loss_diff(base: dict, fast: dict) -> float | None:
    a, b = base.get("losses", []), fast.get("losses", [])
    if not a or len(a) != len(b):
        return None
    return (sum(b) / len(b) - sum(a) / len(a)) / (sum(a) / len(a))


def _targets(row: Row, results: dict[str, dict]) -> list[str]:
    """The issue's checks for one row: each tunewise side against each external side that ran (speed at no
    more peak memory), and each side's mean loss over the timed steps against plain HF + PEFT's."""
    out, base = [], results.get("base", {})
    ok = {side: r for side, r in results.items() if "error" not in r and r.get("tokens_per_s")}
    ours = [s for s in ok if s != "base" and s not in EXTERNAL_SIDES]
    for other, target in SPEED_TARGETS.items():
        if other not in results:
            continue
        if other not in ok:
            why = str(results[other].get("error", "n/a")).replace("|", "/")[:240]
            out.append(f"| {row.label} | tunewise vs {other} | {why} | ≥ {target}× at ≤ its GiB | n/a |")
            continue
        for side in ours:
            if SIDES[side].get("match", other) != other:  # a matched side is checked against its match only
                continue
            ratio = ok[side]["tokens_per_s"] / ok[other]["tokens_per_s"]
            mine, theirs = ok[side]["peak_gib"], ok[other]["peak_gib"]
            met = "yes" if ratio >= target and mine <= theirs else "no"
            out.append(
                f"| {row.label} | {side} vs {other} | {ratio:.2f}× at {mine:.1f} vs {theirs:.1f} GiB "
                f"| ≥ {target}× at ≤ {theirs:.1f} GiB | {met} |"
            )
    for side, r in ok.items():
        diff = None if side == "base" or "error" in base else _mean_loss_diff(base, r)
        if diff is not None:
            met = "yes" if abs(diff) <= LOSS_TOLERANCE else "no"
            out.append(
                f"| {row.label} | {side} loss vs plain | {100 * diff:+.3f} % (mean over timed steps) "
                f"| within {100 * LOSS_TOLERANCE:.1f} % | {met} |"
            )
    return out


def _line(row: Row, side: str, base: dict, fast: dict) -> str:
    ratio = (
        f"{fast['tokens_per_s'] / base['tokens_per_s']:.2f}×"
        if "error" not in base and "error" not in fast
        else "n/a"
    )
    mfu = _cell(fast, "mfu", ".1%") if "error" not in fast else "n/a"
    # The ratio is of mean throughput (the target's measure); the median steps' ratio beside it shows how
    # much of a gap comes from a few slow steps (a full GC, a host hiccup) rather than from the typical step.
    medians = (
        f"{statistics.median(base['step_s']) / statistics.median(fast['step_s']):.2f}×"
        if base.get("step_s") and fast.get("step_s")
        else "n/a"
    )
    # A side that did not run says why in the last column ("unsloth: ...", "skipped: ..."), as in the JSONL.
    last = fast["error"].replace("|", "/")[:240] if "error" in fast else _loss_diff(base, fast)
    return (
        f"| {row.label} | {side} | {_cell(base, 'tokens_per_s', ',.0f')} "
        f"| {_cell(fast, 'tokens_per_s', ',.0f')} "
        f"| {ratio} | {medians} | {_cell(base, 'peak_gib', '.1f')} | {_cell(fast, 'peak_gib', '.1f')} | {mfu} "
        f"| {last} |"
    )


def _longctx_line(row: Row, res: dict) -> str:
    if "error" in res:
        return f"| {row.label} | tunewise | | | | | | | | {res['error']} |"
    check, confirm = res.get("check", {}), res.get("confirm")
    parts = [f"largest fitting seq: **{res.get('max_seq')}** ({res.get('layers_run')} of {res['layers']} layers run, "
             f"step {res.get('step_s')} s; first failing {res.get('smallest_failing')}; predicted "
             f"{res.get('predicted_max_seq')})"]
    if check:
        parts.append(f"check at {check['seq']}: loss rel diff {check['loss_rel_diff']:.2e}, gradients "
                     f"{check['grad_rel_diff']:.2e}, peak {check['plain_peak_gib']} → {check['long_peak_gib']} GiB")
    if confirm:
        parts.append(f"full {res['layers']} layers at {confirm['seq']}: "
                     + (f"{confirm['peak_gib']} GiB, {confirm['step_s']} s" if confirm["fits"] else confirm["error"]))
    return f"| {row.label} | tunewise | | | | | | {res.get('peak_gib', 'n/a')} | | {'; '.join(parts)} |"


def _write(out: Path, lines: list[str], records: list[dict], meta: str, targets: list[str] | None = None) -> None:
    text = f"{meta}\n\n{HEADER}\n" + "\n".join(lines) + "\n"
    if targets:
        text += f"\nTargets (tunewise against Unsloth and HF + Liger; loss against plain):\n\n{TARGETS_HEADER}\n"
        text += "\n".join(targets) + "\n"
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _peak(args) -> tuple[float, dict]:
    """The call's MFU denominator: a bf16 GEMM measured now in a process of its own, unless --peak-tflops."""
    probe = _worker({"probe": "peak"}, 300)
    measured = probe.get("tflops")
    peak = args.peak_tflops or measured or 776.0  # 776: the H100's measured rate, when nothing else is known
    if args.peak_tflops:
        source = "--peak-tflops"
    elif measured:
        source = f"{probe.get('gemm')} measured at the start of this call"
    else:
        source = f"H100's 776, the GEMM probe failed: {probe.get('error')}"
    meta = {
        "meta": True,
        "peak_tflops": peak,
        "peak_source": source,
        "gemm_tflops_measured": measured,
        "gpu": probe.get("gpu"),
        "cuda": probe.get("cuda"),
        "versions": probe.get("versions"),
        "argv": sys.argv[1:],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return peak, meta


def run_rows(args) -> None:
    names = list(ROWS) if args.rows == "all" else args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"unknown row(s) {unknown}; known: {list(ROWS)}")
    out = Path(
        args.out
        or (
            Path(os.environ["OUT"]) / "train_speed.md"
            if os.environ.get("OUT")
            else RESULTS / "train_speed" / f"{time.strftime('%Y-%m-%d_%H%M')}.md"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    toy = "TOY MODEL (--tiny), not 8B; " if args.tiny else ""
    peak, meta_record = _peak(args)
    versions = meta_record.get("versions") or {}
    shown = ", ".join(
        f"{k} {versions.get(k) or '-'}"
        for k in ("torch", "transformers", "peft", "liger-kernel", "unsloth", "bitsandbytes")
    )
    meta = (
        f"python -m bench.train_speed {' '.join(sys.argv[1:])}  ({toy}{time.strftime('%Y-%m-%d %H:%M')}; "
        f"{meta_record.get('gpu') or 'no GPU'}; {shown}; "
        f"MFU = model FLOPs without recompute / {peak:.4g} TFLOP/s ({meta_record['peak_source']}); "
        f"tok/s over {args.steps} timed steps; GiB = peak allocated)"
    )
    print(meta, flush=True)
    lines, records, targets = [], [meta_record], []
    print(HEADER, flush=True)
    for name in names:
        row = ROWS[name]
        common = {
            "row": name,
            "tiny": args.tiny,
            "steps": args.steps,
            "warmup": args.warmup,
            "peak_tflops": peak,
            "banking77": args.banking77,
            "model": args.model,
            "lora_dropout": args.lora_dropout,
            "profile": args.profile,
            "gaps": args.gaps,
        }
        if row.kind == "maxctx":
            res = _worker(
                {
                    **common,
                    "side": "tunewise",
                    "lo": args.ctx_lo or 32768,
                    "hi": args.ctx_hi,
                    "budget_s": args.ctx_budget,
                },
                args.timeout,
            )
            records.append({"row": name, **res})
            lines.append(
                f"| {row.label} | tunewise | | | | | | {res.get('peak_gib', 'n/a')} | | largest fitting "
                f"seq: **{res.get('max_seq', res.get('error'))}** |"
            )
            print(lines[-1], flush=True)
            _write(out, lines, records, meta)
            continue
        if row.kind == "qlora-maxctx":
            budget = min(args.ctx_budget, 20.0) if args.tiny else args.ctx_budget  # --tiny: a check of the script
            ctx = {"lo": args.ctx_lo or 300000, "step": args.ctx_step, "budget_s": budget,
                   "layers": args.ctx_layers, "check": args.ctx_check, "confirm": args.ctx_confirm,
                   "cap_gib": args.ctx_cap_gib}
            res = _worker({**common, "side": "tunewise", **ctx}, args.timeout)
            records.append({"row": name, **res})
            lines.append(_longctx_line(row, res))
            print(lines[-1], flush=True)
            _write(out, lines, records, meta, targets)
            continue
        base = _worker({**common, "side": "base"}, args.timeout)
        if base.get("profile"):
            out.with_name(f"profile_{name}_base.txt").write_text(base.pop("profile"), encoding="utf-8")
        records.append({"row": name, "side": "base", **base})
        sides = row.sides if args.sides is None else args.sides.split(",")
        bad = [s for s in sides if s not in SIDES and s not in EXTERNAL_SIDES]
        if bad:
            sys.exit(f"unknown side(s) {bad}; known: {list(SIDES) + list(EXTERNAL_SIDES)}")
        results = {"base": base}
        for side in sides:
            spec = {**common, "side": side}
            match = SIDES.get(side, {}).get("match")
            if match:
                spec["memory_budget_gib"] = _matched_budget(match, results)
            fast = (_worker(spec, args.timeout) if not match or spec["memory_budget_gib"]
                    else {"error": f"skipped: {match} must run (and succeed) earlier in --sides"})
            if fast.get("profile"):
                out.with_name(f"profile_{name}_{side}.txt").write_text(fast.pop("profile"), encoding="utf-8")
            records.append({"row": name, "side": side, **fast})
            results.setdefault(side, fast)  # a side named twice: the first run is the one checked
            lines.append(_line(row, side, base, fast))
            print(lines[-1], flush=True)
            _write(out, lines, records, meta, targets)
        row_targets = _targets(row, results)
        targets += row_targets
        for line in row_targets:
            print(line, flush=True)
        _write(out, lines, records, meta, targets)
    print(f"wrote {out}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.train_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", default="lora-2048x4-gc", help=f"comma list or 'all': {', '.join(ROWS)}")
    ap.add_argument(
        "--sides",
        default=None,
        help=f"sides to run beside plain HF + PEFT (default: the row's): {', '.join([*SIDES, *EXTERNAL_SIDES])}",
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps (the loss is compared over these)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--lora-dropout", type=float, default=LoraConfig().dropout,
        help="LoRA dropout on every side (default: tunewise's shipped default, %(default)s)"
    )
    ap.add_argument("--profile", action="store_true", help="write each side's top kernels (torch.profiler)")
    ap.add_argument("--gaps", action="store_true", help="trace 2 more steps: GPU idle time and the host ops behind it")
    ap.add_argument("--tiny", action="store_true", help="toy model and lengths (CPU check of the script)")
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="MFU's denominator in TFLOP/s (default: a bf16 GEMM measured at the start of the call)",
    )
    ap.add_argument("--banking77", default=None, help="Banking77 train.csv for the banking77 row")
    ap.add_argument(
        "--model", default="embedded:smollm2-135m-instruct", help="base model of the banking77 row"
    )
    ap.add_argument("--ctx-lo", type=int, default=None, help="first length searched (maxctx 32768, qlora-maxctx "
                    "300000)")
    ap.add_argument("--ctx-hi", type=int, default=131072)
    ap.add_argument("--ctx-budget", type=float, default=420.0, help="seconds the max-context search may take")
    ap.add_argument("--ctx-step", type=int, default=25000, help="qlora-maxctx: tokens added while steps fit")
    ap.add_argument("--ctx-layers", type=int, default=2, help="qlora-maxctx: decoder layers run in the search's "
                    "steps (all stay loaded; 0 = all): see bench/train_speed/longctx.py")
    ap.add_argument("--ctx-check", type=int, default=16384, help="qlora-maxctx: tokens of the plain vs long-context "
                    "loss check (0 = none)")
    ap.add_argument("--ctx-confirm", type=int, default=0, help="qlora-maxctx: one full-depth step at this many "
                    "tokens after the search (-1 = the longest found, 0 = none)")
    ap.add_argument("--ctx-cap-gib", type=float, default=80.0, help="qlora-maxctx: GPU memory cap (per-process "
                    "memory fraction)")
    ap.add_argument("--timeout", type=int, default=540, help="seconds per measurement process")
    ap.add_argument(
        "--out", default=None, help="markdown file (default $OUT/train_speed.md, else bench/results/train_speed/)"
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("probe") == "peak":
            from bench.train_speed.peak import probe

            print(json.dumps(probe()), flush=True)
            return
        kind = ROWS[spec["row"]].kind
        res = {"maxctx": probe_max_context, "qlora-maxctx": probe_qlora_max_context}.get(kind, measure)(spec)
        print(json.dumps(res), flush=True)
        return
    run_rows(args)


if __name__ == "__main__":
    main()
