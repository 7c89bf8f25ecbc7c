"""How fast activations can go to pinned CPU memory and back while the GPU computes: the ceiling of any offload of
kept activations (bench/results/train_speed.md, "Not done"). Prints one table: GPU→host and host→GPU copies of
`--mib` MiB blocks from / to pinned memory, alone and both ways at once, then a bf16 GEMM loop alone and with a
GPU→host copy stream running beside it (whether the copies slow the arithmetic down).

    python -m bench.train_speed.host_link [--mib 384] [--blocks 16]
"""

from __future__ import annotations

import argparse
import json

import torch


def _timed(fn) -> float:
    """Seconds `fn` takes on the GPU (events on the current stream)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=384, help="one block: about one Llama-3-8B layer at 4,096 tokens")
    parser.add_argument("--blocks", type=int, default=16)
    args = parser.parse_args()
    n = args.mib * 2**20
    gpu = [torch.empty(n, dtype=torch.uint8, device="cuda") for _ in range(args.blocks)]
    host = [torch.empty(n, dtype=torch.uint8, pin_memory=True) for _ in range(args.blocks)]
    back = [torch.empty(n, dtype=torch.uint8, device="cuda") for _ in range(args.blocks)]
    total = n * args.blocks
    d2h, h2d = torch.cuda.Stream(), torch.cuda.Stream()

    def to_host():
        for g, h in zip(gpu, host):
            h.copy_(g, non_blocking=True)

    def to_gpu():
        for h, b in zip(host, back):
            b.copy_(h, non_blocking=True)

    def both():
        cur = torch.cuda.current_stream()
        d2h.wait_stream(cur)
        h2d.wait_stream(cur)
        with torch.cuda.stream(d2h):
            to_host()
        with torch.cuda.stream(h2d):
            to_gpu()
        cur.wait_stream(d2h)
        cur.wait_stream(h2d)

    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    reps = 60

    def gemms():
        for _ in range(reps):
            a @ b

    def gemms_beside_copy() -> float:
        """Seconds of the GEMMs alone (events on the compute stream) while the copies run on their stream."""
        cur = torch.cuda.current_stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        d2h.wait_stream(cur)
        with torch.cuda.stream(d2h):
            to_host()
        start.record()
        gemms()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3

    rows = []
    for _ in range(2):  # the first pass warms the pinned pages and the GEMM
        rows = []
        for name, fn in (("GPU->host pinned", to_host), ("host->GPU pinned", to_gpu)):
            s = _timed(fn)
            rows.append({"what": name, "GB/s": total / s / 1e9, "s": s})
        s = _timed(both)
        rows.append({"what": "both ways at once", "GB/s": 2 * total / s / 1e9, "s": s})
        flops = 2 * 8192**3 * reps
        s_alone = _timed(gemms)
        rows.append({"what": "bf16 GEMM 8192^3 alone", "TFLOP/s": flops / s_alone / 1e12, "s": s_alone})
        s_with = gemms_beside_copy()  # the copies take longer than the GEMMs: they run beside all of them
        rows.append({"what": "bf16 GEMM beside GPU->host", "TFLOP/s": flops / s_with / 1e12, "s": s_with})
    print(f"{torch.cuda.get_device_name()}, blocks of {args.mib} MiB x {args.blocks}")
    print("| what | GB/s | TFLOP/s | s |\n|---|---|---|---|")
    for r in rows:
        gbs, tf = r.get("GB/s"), r.get("TFLOP/s")
        print(f"| {r['what']} | {'' if gbs is None else f'{gbs:.1f}'} | {'' if tf is None else f'{tf:.0f}'} "
              f"| {r['s']:.3f} |")
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
