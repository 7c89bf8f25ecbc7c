"""SDPA attention on padded batches, per backend: what a new batch width costs the first time (cuDNN builds a plan
per shape) and what a width seen before costs, forward + backward, at Llama-3-8B's heads (32 query heads, 8 key/value
heads repeated as transformers' sdpa path does, head size 128) with a causal + padding mask as transformers builds
it for right-padded rows. "default" is torch's own order, what plain Hugging Face runs.

  python -m bench.train_speed.attention                 # one H200, ~1 min
  python -m bench.train_speed.attention --tiny          # CPU: the script only
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# name → (backend, with the padding mask); without it attention is causal alone (train.fast.causal_padding)
BACKENDS = {"default": (None, True), "cudnn": (SDPBackend.CUDNN_ATTENTION, True),
            "efficient": (SDPBackend.EFFICIENT_ATTENTION, True), "math": (SDPBackend.MATH, True),
            "default, no mask": (None, False), "cudnn, no mask": (SDPBackend.CUDNN_ATTENTION, False),
            "flash, no mask": (SDPBackend.FLASH_ATTENTION, False)}


def _inputs(batch: int, width: int, heads: int, kv: int, dim: int, device: str, dtype):
    g = torch.Generator(device).manual_seed(width)
    q = torch.randn(batch, heads, width, dim, device=device, dtype=dtype, generator=g, requires_grad=True)
    k, v = (torch.randn(batch, kv, width, dim, device=device, dtype=dtype, generator=g, requires_grad=True)
            for _ in range(2))
    lengths = torch.tensor([width] + [max(1, width - 37 * i) for i in range(1, batch)], device=device)
    pad = torch.arange(width, device=device)[None, :] < lengths[:, None]  # right padding
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    return q, k, v, causal[None, None] & pad[:, None, None, :]


def _step(how: tuple, q, k, v, mask, groups: int) -> None:
    (backend, masked), kk, vv = how, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    with sdpa_kernel([backend]) if backend is not None else torch.enable_grad():
        if masked:
            out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        else:
            out = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
    out.sum().backward()


def _timed(device: str, *args) -> float:
    """Seconds of one forward + backward (_step's arguments), the GPU synchronised before and after."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _step(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--widths", default="512,1000,2000,4000", help="seen widths, timed after a first call")
    ap.add_argument("--new", type=int, default=12, help="new widths per backend (first calls timed)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="a small shape on the CPU (checks the script only)")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    heads, kv, dim = (32, 8, 128) if not a.tiny else (4, 2, 16)
    widths = [int(w) for w in a.widths.split(",")] if not a.tiny else [16, 40]
    backends = dict(BACKENDS) if device == "cuda" else {k: BACKENDS[k] for k in ("default", "math", "default, no mask")}
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"batch {a.batch}, heads {heads}/{kv}, head size {dim}")
    print("| backend | new width, first call ms (median / max over widths) | " +
          " | ".join(f"seen {w} ms" for w in widths) + " |")
    print("|---|---|" + "---|" * len(widths))
    base = 3001 if device == "cuda" else 50
    for i, (name, backend) in enumerate(backends.items()):
        try:
            firsts = []
            for j in range(a.new if device == "cuda" else 2):  # widths nobody used before: one plan each
                q, k, v, m = _inputs(a.batch, base + 100 * i + 3 * j, heads, kv, dim, device, dtype)
                firsts.append(_timed(device, backend, q, k, v, m, heads // kv))
            seen = []
            for w in widths:
                q, k, v, m = _inputs(a.batch, w, heads, kv, dim, device, dtype)
                _step(backend, q, k, v, m, heads // kv)
                seen.append(statistics.median(_timed(device, backend, q, k, v, m, heads // kv)
                                              for _ in range(a.repeat)))
            print(f"| {name} | {statistics.median(firsts) * 1e3:,.1f} / {max(firsts) * 1e3:,.1f} | " +
                  " | ".join(f"{s * 1e3:.2f}" for s in seen) + " |", flush=True)
        except RuntimeError as err:
            print(f"| {name} | cannot run: {str(err).splitlines()[0][:80]} |", flush=True)


if __name__ == "__main__":
    main()
