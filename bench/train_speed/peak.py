"""What a `python -m bench.train_speed` call measures MFU against, and what it ran on: a big bf16 GEMM timed
with CUDA events at the start of the call (its own process, so the parent never holds a CUDA context), the
GPU's name, and the versions of the libraries every side uses."""

from __future__ import annotations

import importlib.metadata
import platform
import time

# Distributions whose versions go into the JSONL's meta record (absent ones are recorded as null).
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "triton",
    "liger-kernel",
    "unsloth",
    "unsloth_zoo",
    "bitsandbytes",
    "trl",
    "datasets",
    "xformers",
    "tunewise",
)
GEMM_N = 8192  # [8192, 8192] @ [8192, 8192]: 1.1 TFLOP, ~1.4 ms on an H100 / H200


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def gemm_tflops(n: int = GEMM_N, rounds: int = 5, iters: int = 20) -> dict:
    """The best of `rounds` timings of `iters` back-to-back bf16 GEMMs (CUDA events), in TFLOP/s; on the CPU
    (--tiny) the same in fp32 at a small size with the wall clock, so MFU still has a denominator."""
    import torch  # heavy

    if not torch.cuda.is_available():
        n, iters = 512, 5
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(iters):
                a @ b
            best = min(best, (time.perf_counter() - start) / iters)
        return {"tflops": 2 * n**3 / best / 1e12, "gemm": f"fp32 {n}^3 on the CPU", "gpu": None}
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    c = torch.empty_like(a)
    for _ in range(10):  # clocks up, cuBLAS picks its kernel
        torch.mm(a, b, out=c)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.mm(a, b, out=c)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1000 / iters)
    return {
        "tflops": 2 * n**3 / best / 1e12,
        "gemm": f"bf16 {n}^3, CUDA events, best of {rounds}×{iters}",
        "gpu": torch.cuda.get_device_name(0),
        "cuda": torch.version.cuda,
    }


def probe() -> dict:
    """The worker's answer to {"probe": "peak"}: the GEMM rate, the GPU and the versions."""
    try:
        res = gemm_tflops()
    except Exception as err:  # never lose the call for it: the caller falls back to --peak-tflops
        res = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
    return {**res, "versions": versions()}
