"""Host time against GPU time for one decoder layer and its pieces: is the GPU waiting for Python?

The GPU is first kept busy (torch.cuda._sleep), so the host's time to *enqueue* a layer's forward or
backward (or its norm, attention, MLP) is measured on its own; then the same piece runs enqueued behind a
sleep, timed between CUDA events, for its GPU time. (A whole forward cannot be measured this way: its ~1,500
kernels overflow the launch queue, and the host then waits for the GPU.) When a piece's host time is close
to its GPU time, host hiccups (other processes, page faults, collections) become GPU idle time. Same model
and sides as `python -m bench.train_speed`; --tiny runs the toy model on the CPU (a check of the script only).

  python -m bench.train_speed.host_overhead --sides base,t-mb2-rc,t-mb2   # one H100, ~2 min
  python -m bench.train_speed.host_overhead --sides t-mb2-rc --pyprof     # + where the host time goes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from bench.train_speed.lib import build_model, prepare, random_batches
from bench.train_speed.rows import LLAMA3_8B, TINY

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _host_and_gpu(fn, busy_cycles: int) -> tuple[float, float]:
    """fn's host time (enqueued behind a busy GPU: few enough kernels to stay under the launch queue's depth)
    and its GPU time (enqueued behind a sleep, timed between events), in ms."""
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t0), float("nan")
    torch.cuda.synchronize()
    torch.cuda._sleep(busy_cycles)
    t0 = time.perf_counter()
    fn()
    host = 1000 * (time.perf_counter() - t0)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(busy_cycles)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return host, start.elapsed_time(end)


def _layer_parts(model, part: dict) -> dict:
    """Host and GPU time of one decoder layer's pieces, forward and backward, at the micro-step's size."""
    layers = model.get_base_model().model.layers if hasattr(model, "get_base_model") else model.model.layers
    layer = layers[1]
    seen = {}

    def grab(_module, args, kwargs):
        seen.setdefault("call", (args, kwargs))

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
        model(**part)
    handle.remove()
    args, kwargs = seen["call"]
    hidden = args[0] if args else kwargs.pop("hidden_states")
    cycles = int(2e8)  # ~0.1 s: longer than any one layer's host time
    out = {}

    def fwd():
        x = hidden.detach().requires_grad_()
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            y = layer(x, *args[1:], **kwargs)
        return x, y[0] if isinstance(y, tuple) else y

    out["layer_fwd"] = _host_and_gpu(fwd, cycles)
    x, y = fwd()
    grad = torch.ones_like(y)
    out["layer_bwd"] = _host_and_gpu(lambda: y.backward(grad, retain_graph=True), cycles)
    norm, attn = layer.input_layernorm, layer.self_attn
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
        h = norm(hidden)
    extra = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    def attention():
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            attn(hidden_states=h, **extra)

    def mlp():
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            layer.mlp(h)

    def rms():
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            norm(hidden)

    for name, fn in (("norm_fwd", rms), ("attention_fwd", attention), ("mlp_fwd", mlp)):
        out[name] = _host_and_gpu(fn, cycles)
    out.update(_attention_parts(layer, h, extra, cycles))
    def fwd_wrapped(switch):
        x = hidden.detach().requires_grad_()
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            y = layer(switch.apply(x, False), *args[1:], **kwargs)
        return x, switch.apply(y[0] if isinstance(y, tuple) else y, True)

    prof = _python_profile(fwd, fwd_wrapped, cycles) if _PYPROF[0] else None
    model.zero_grad(set_to_none=True)
    timed = {k: (round(h, 2), round(g, 2)) for k, (h, g) in out.items()}
    return {**timed, "_pyprof": prof} if prof else timed


_PYPROF = [False]


def _python_profile(fwd, fwd_wrapped, cycles: int) -> dict:
    """Where the host time of one layer goes: the forward under cProfile (main thread), the backward's Python
    autograd Functions timed by wrapping their backward (they run on autograd's device thread, which cProfile
    does not see), and the kernel launches of each (torch.profiler)."""
    import cProfile
    import io
    import pstats

    res = {}
    prof = cProfile.Profile()
    for _ in range(3):
        torch.cuda._sleep(cycles) if torch.cuda.is_available() else None
        prof.enable()
        x, y = fwd()
        prof.disable()
        _sync()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
    res["fwd_tottime"] = buf.getvalue()[-6000:]
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
    res["fwd_cumtime"] = buf.getvalue()[-8000:]
    # backward: wrap every Python Function's backward reachable from y
    seen, stack, classes = set(), [y.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)
        if cls is not None:
            classes.add(cls)
        stack.extend(n for n, _ in node.next_functions)
    times: dict = {}
    originals = {}
    for cls in classes:
        orig = cls.backward
        originals[cls] = orig

        def timed(ctx, *g, _orig=orig, _name=cls.__name__):
            t0 = time.perf_counter()
            r = _orig(ctx, *g)
            times[_name] = times.get(_name, 0.0) + 1000 * (time.perf_counter() - t0)
            return r

        cls.backward = staticmethod(timed)
    grad = torch.ones_like(y)
    total = 0.0
    for _ in range(3):
        torch.cuda._sleep(cycles) if torch.cuda.is_available() else None
        t0 = time.perf_counter()
        y.backward(grad, retain_graph=True)
        total += 1000 * (time.perf_counter() - t0)
        _sync()
    for cls, orig in originals.items():
        cls.backward = staticmethod(orig)
    # cProfile of the backward itself: it runs on autograd's device thread, so the profiler is switched on
    # and off there, by two pass-through Functions at the ends of the layer's graph.
    bprof = cProfile.Profile()

    class _Switch(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t, on):
            ctx.on = on
            return t.view_as(t)

        @staticmethod
        def backward(ctx, g):
            bprof.enable() if ctx.on else bprof.disable()
            return g, None

    for _ in range(3):
        xs, ys = fwd_wrapped(_Switch)
        torch.cuda._sleep(cycles) if torch.cuda.is_available() else None
        ys.backward(torch.ones_like(ys))
        _sync()
    buf = io.StringIO()
    pstats.Stats(bprof, stream=buf).sort_stats("tottime").print_stats(40)
    res["bwd_tottime"] = buf.getvalue()[-7000:]
    res["bwd_python_functions_ms_per_call"] = {k: round(v / 3, 3) for k, v in sorted(times.items())}
    res["bwd_total_ms"] = round(total / 3, 3)
    # kernel launches per forward / backward
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    for name, fn in (("fwd", lambda: fwd()), ("bwd", lambda: y.backward(grad, retain_graph=True))):
        with profile(activities=acts) as p:
            fn()
            _sync()
        ev = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CPU]
        launches = [e for e in ev if "LaunchKernel" in e.name or "cuLaunch" in e.name]
        res[f"{name}_launches"] = len(launches)
        res[f"{name}_launch_cpu_ms"] = round(sum(e.cpu_time_total for e in launches) / 1000, 3)
        table = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        res[f"{name}_ops"] = table[-5000:]
    return res


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _attention_parts(layer, h: torch.Tensor, extra: dict, cycles: int) -> dict:
    """The attention block's forward in the pieces transformers' LlamaAttention runs: the q/k/v projections,
    RoPE (the module-level function, Liger's when patched), the SDPA call through transformers' wrapper, and
    the o projection."""
    import importlib

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attn = layer.self_attn
    rope = importlib.import_module(type(attn).__module__).apply_rotary_pos_emb
    shape = (*h.shape[:-1], -1, attn.head_dim)
    cos, sin = extra["position_embeddings"]
    ac = torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda")
    with ac:
        q = attn.q_proj(h).view(shape).transpose(1, 2)
        k = attn.k_proj(h).view(shape).transpose(1, 2)
        v = attn.v_proj(h).view(shape).transpose(1, 2)
        q, k = rope(q, k, cos, sin)
        sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        o = sdpa(attn, q, k, v, extra.get("attention_mask"), dropout=0.0, scaling=attn.scaling)[0]
        o = o.reshape(*h.shape[:-1], -1).contiguous()

    def qkv():
        with ac:
            attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)

    def rotary():
        with ac:
            rope(q, k, cos, sin)

    def attention_kernel():
        with ac:
            sdpa(attn, q, k, v, extra.get("attention_mask"), dropout=0.0, scaling=attn.scaling)

    def o_proj():
        with ac:
            attn.o_proj(o)

    return {name: _host_and_gpu(fn, cycles) for name, fn in
            (("qkv_fwd", qkv), ("rope_fwd", rotary), ("sdpa_fwd", attention_kernel), ("o_proj_fwd", o_proj))}


def measure(side: str, seq: int, batch: int, micro: int, reps: int, tiny: bool = False) -> dict:
    shape = TINY if tiny else LLAMA3_8B
    model = build_model(shape, seed=0)
    model, described, _, _ = prepare(model, side, "lora", True, seed=0, batch=batch)
    model.train()
    full = random_batches(shape["vocab_size"], seq, batch, 1, seed=1)[0]
    part = {k: v[:micro].to(DEVICE) for k, v in full.items()}
    rows = [_layer_parts(model, part) for _ in range(reps + 1)][1:]
    prof = [r.pop("_pyprof", None) for r in rows][-1]
    med = {k: tuple(round(statistics.median(r[k][i] for r in rows), 2) for i in (0, 1)) for k in rows[0]}
    return {"side": side, "path": described, "tokens": micro * seq, **med, **({"pyprof": prof} if prof else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", default="base,t-mb2-rc,t-mb2")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--micro", type=int, default=2, help="examples per micro-step (tokens = micro × seq)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="toy model on the CPU (checks the script)")
    ap.add_argument("--pyprof", action="store_true", help="also where the host time goes (cProfile, timed "
                    "backward Functions, kernel launches); printed after the table")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    _PYPROF[0] = args.pyprof
    if args.worker:
        print(json.dumps(measure(args.worker, args.seq, 4, args.micro, args.reps, args.tiny)), flush=True)
        return
    parts = ("layer_fwd", "layer_bwd", "norm_fwd", "attention_fwd", "mlp_fwd", "qkv_fwd", "rope_fwd", "sdpa_fwd",
             "o_proj_fwd")
    print("| side | tokens | " + " | ".join(f"{p} host / GPU ms" for p in parts) + " |")
    print("|---|---|" + "---|" * len(parts))
    profiles = []
    for side in args.sides.split(","):
        # The child inherits the working directory and PYTHONPATH, so `-m` finds this same package.
        cmd = [sys.executable, "-m", "bench.train_speed.host_overhead", "--worker", side, "--seq", str(args.seq),
               "--micro", str(args.micro), "--reps", str(args.reps)]
        cmd += ["--tiny"] * args.tiny + ["--pyprof"] * args.pyprof
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if not lines:
            print(f"| {side} | error: {(proc.stderr or '').strip().splitlines()[-1:]} |")
            continue
        r = json.loads(lines[-1])
        cells = " | ".join(f"{r[p][0]} / {r[p][1]}" for p in parts)
        print(f"| {side} | {r['tokens']} | {cells} |", flush=True)
        if "pyprof" in r:
            profiles.append((side, r["pyprof"]))
    for side, prof in profiles:
        print(f"\n## {side}: where the host time goes\n")
        for key, value in prof.items():
            print(f"### {key}\n{value if isinstance(value, str) else json.dumps(value, indent=1)}\n")


if __name__ == "__main__":
    main()
