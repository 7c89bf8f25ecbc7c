"""Host time per call of the operations the fast path's LoRA layers and kernels launch, at Llama-3-8B shapes
(4,096 tokens per micro-step): each op is called 100 times while the GPU is kept busy (torch.cuda._sleep),
so the time is the host's alone (Python, dispatch, cuBLAS/Triton launch), not the kernel's. A price list to
design against: the fast path is host-bound in backward (`python -m bench.train_speed.host_overhead`).

  python -m bench.train_speed.host_prices          # one H100, ~20 s
"""

from __future__ import annotations

import time

import torch

T, H, INTER, R = 4096, 4096, 14336, 16


def _price(fn, n: int = 100) -> float:
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(int(3e8))
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return host


def main() -> None:
    from liger_kernel.ops.rms_norm import rms_norm_forward
    from liger_kernel.ops.swiglu import swiglu_backward, swiglu_forward

    d = dict(device="cuda", dtype=torch.bfloat16)
    x, w, a, b = torch.randn(T, H, **d), torch.randn(H, H, **d), torch.randn(3 * R, H, **d), torch.randn(H, R, **d)
    xa, dy = torch.randn(T, 3 * R, **d), torch.randn(T, H, **d)
    dxa = torch.empty(T, 3 * R, **d)
    g, u = torch.randn(T, INTER, **d), torch.randn(T, INTER, **d)
    nw = torch.ones(H, **d)
    q = torch.randn(2, 32, 2048, 128, **d)
    k = torch.randn(2, 8, 2048, 128, **d)

    class Empty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.view(t.shape)

        @staticmethod
        def backward(ctx, g):
            return g

    leaf = torch.randn(4, requires_grad=True, device="cuda")
    ops = {
        "mm x@A^T [T,H]x[H,48]": lambda: torch.mm(x, a.t()),
        "mm x@W^T [T,H]x[H,H]": lambda: torch.mm(x, w.t()),
        "F.linear x,W": lambda: torch.nn.functional.linear(x, w),
        "addmm_ y+=xa@B^T alpha": lambda: dy.addmm_(xa[:, :R], b.t(), alpha=0.5),
        "mm dy^T@xa [H,T]x[T,16]": lambda: torch.mm(dy.t(), xa[:, :R]),
        "mm dy^T@xa out_dtype fp32": lambda: torch.mm(dy.t(), xa[:, :R], out_dtype=torch.float32),
        "mm dy@B out=slice": lambda: torch.mm(dy, b, out=dxa[:, :R]),
        "mul_ scalar [T,H]": lambda: dy.mul_(1.0),
        "add_ [T,H]": lambda: dy.add_(x),
        "to(fp32) [H,16]": lambda: b.to(torch.float32),
        "cat 3x[T,16]": lambda: torch.cat([xa[:, :R], xa[:, R : 2 * R], xa[:, 2 * R :]], 1),
        "empty [T,48]": lambda: torch.empty(T, 3 * R, **d),
        "view": lambda: x.view(2, 2048, H),
        "liger rms_norm_forward": lambda: rms_norm_forward(x, nw, 1e-5, 0.0, 1, None),
        "liger swiglu_forward": lambda: swiglu_forward(g, u),
        "liger swiglu_backward": lambda: swiglu_backward(g, u, g),
        "sdpa causal gqa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=True,
                                                                                    enable_gqa=True),
        "autograd.Function.apply (empty)": lambda: Empty.apply(leaf),
        "torch.is_grad_enabled": torch.is_grad_enabled,
    }
    print("| op | host µs per call |\n|---|---|")
    for name, fn in ops.items():
        try:
            print(f"| {name} | {_price(fn):.1f} |", flush=True)
        except Exception as e:  # noqa: BLE001 - a price list: report and go on
            print(f"| {name} | error: {type(e).__name__}: {str(e)[:80]} |", flush=True)


if __name__ == "__main__":
    main()
