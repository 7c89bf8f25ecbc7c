"""The qlora-maxctx row: the longest batch-1 context one QLoRA Llama-3-8B training step fits with the GPU capped
(80 GiB by default), on tunewise's defaults (offload_activations and tile_mlp_tokens auto; their arithmetic is in
tunewise/train/fast/longctx.py). One loaded model does it all:

1. check: at --ctx-check tokens (16k) one forward+backward on the plain checkpointed path (no offload, MLP whole)
   and one on the long-context path (offload on, 8192-token tiles): same loss within 1e-3, gradients compared.
2. search: one step (forward, backward, AdamW) per length, from --ctx-lo (300k) to the length that the first
   step's memory predicts, then up by --ctx-step or bisecting to 1024 tokens, while --ctx-budget seconds last.
   Attention time grows with the square of the length (a 32-layer step at 350k tokens is minutes), so the
   search runs --ctx-layers decoder layers (2) of the 32, every weight still loaded: with the layer inputs in
   host memory, the GPU peak is one layer's backward whatever the depth. What depth does change is the host
   memory (32 layers × 8 KB per token): the inputs that a 32-layer step could not place on this host (it keeps
   min(8 GiB, 10 %) free) would stay on the GPU, and the search allocates exactly that much GPU memory beside
   the step ("host_short_gib").
3. confirm (--ctx-confirm N, -1 = the longest found): one full 32-layer step at N tokens, nothing simulated.
LoRA dropout is --lora-dropout (tunewise's default, 0; Unsloth's published 342,733 tokens are at its default,
0): with PEFT's 4-bit LoRA layers it keeps a dropped copy of each attention projection's input."""

from __future__ import annotations

import gc
import time

import torch

from bench.train_speed.lib import build_model, device_and_dtype, prepare, random_batches, train_loop
from bench.train_speed.models import quantized_8b
from bench.train_speed.rows import LLAMA3_8B, TINY, TINY_SCALE
from tunewise.errors import TunewiseError
from tunewise.train.fast import hf_model_of
from tunewise.train.fast.longctx import HOST_RESERVE, LIGER_ELEMENTS, host_available

UNIT = 1024  # the search's granularity in tokens
GIB = 2**30


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _grads(model) -> dict:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}


def _check(model, state, seq: int, vocab: int, tile: int) -> dict:
    """Loss and gradients of one forward+backward on the plain checkpointed path and on the long-context path,
    same weights (no optimizer step), same batch. LoRA dropout is off for the comparison (the LoRA layers in
    eval mode, the decoder layers still training): tiles would draw their masks in another order."""
    device, _ = device_and_dtype()
    batch = {k: v.to(device) for k, v in random_batches(vocab, seq, 1, 1, seed=seq)[0].items()}
    out = {"seq": seq}
    runs = {}
    from peft.tuners.lora import LoraLayer

    model.train()
    adapters = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for m in adapters:
        m.eval()
    for name, (offload, tiles) in {"plain": (False, 0), "long": (True, tile)}.items():
        state.offload, state.tile = offload, tiles
        state.reset_counters()
        model.zero_grad(set_to_none=True)
        _free(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        out[f"{name}_step_s"] = round(time.perf_counter() - start, 2)
        out[f"{name}_peak_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2) if device == "cuda" else 0.0
        out[f"{name}_loss"] = loss.item()
        out[f"{name}_offloaded"], out[f"{name}_tiles"] = state.packed, state.tiles
        runs[name] = _grads(model)
    model.zero_grad(set_to_none=True)
    for m in adapters:
        m.train()
    plain, long = runs["plain"], runs["long"]
    rel = {n: ((long[n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in plain.items()}
    flat = torch.stack([g.norm() for g in plain.values()]).norm()
    diff = torch.stack([(long[n] - g).norm() for n, g in plain.items()]).norm()
    out["loss_rel_diff"] = abs(out["long_loss"] - out["plain_loss"]) / abs(out["plain_loss"])
    out["grad_rel_diff"] = (diff / flat).item()  # all adapter gradients as one vector
    out["grad_worst_tensor_rel_diff"] = max(rel.values())
    out["grad_tensors"] = len(rel)
    out["ok"] = out["loss_rel_diff"] < 1e-3
    return out


def _cuda_works(device: str) -> bool:
    if device != "cuda":
        return True
    try:
        torch.cuda.synchronize()
        return True
    except RuntimeError:
        return False


def _host_short_bytes(seq: int, layers: int, hidden: int, host_free: int | None, host_total: int | None) -> int:
    """GPU bytes that a full-depth step at `seq` tokens keeps on the GPU because the host cannot take them: the
    offload fills the host in layer order up to its reserve, the remaining layers' inputs stay on the GPU."""
    if host_free is None:
        return 0
    per_layer = seq * hidden * 2  # one bf16 layer input
    room = max(0, host_free - min(HOST_RESERVE, host_total // 10))
    return max(0, layers - room // per_layer) * per_layer


def probe_qlora_max_context(spec: dict) -> dict:
    tiny = spec["tiny"]
    device, _ = device_and_dtype()
    shape = TINY if tiny else LLAMA3_8B
    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    cap = spec.get("cap_gib", 80.0) * GIB
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
        model = quantized_8b(tiny, seed=0)
        method = "qlora"
    elif tiny:  # CPU check of the script: the tiny model in LoRA (bitsandbytes needs CUDA), no memory figures
        model, method = build_model(shape, seed=0), "lora"
    else:
        return {"error": "skipped: QLoRA needs CUDA (bitsandbytes)"}
    model, described, _, _ = prepare(model, "tunewise", method, True, seed=0, dropout=spec.get("lora_dropout", 0.0))
    hf = hf_model_of(model)
    state = hf._tw_longctx
    scale = TINY_SCALE if tiny else 1
    tile = 64 if tiny else 8192
    result: dict = {"path": described, "cap_gib": cap / GIB, "layers": layers,
                    "lora_dropout": spec.get("lora_dropout", 0.0)}
    start = time.perf_counter()
    if spec.get("check"):
        result["check"] = _check(model, state, max(UNIT // scale, spec["check"] // scale), shape["vocab_size"], tile)
        print(f"check: {result['check']}", flush=True)
    state.offload, state.tile = "auto", "auto"  # what a user gets
    mem = host_available()
    host_free, host_total = mem if mem else (None, None)
    result["host_free_gib"] = round(host_free / GIB, 1) if host_free else None
    proxy = spec.get("layers") or layers
    static = torch.cuda.memory_allocated() if device == "cuda" else 0
    tried: dict[int, dict] = {}

    def step(seq: int, depth: int) -> dict:
        hf.config.num_hidden_layers = depth  # the decoder runs layers[:num_hidden_layers]; all stay loaded
        short = _host_short_bytes(seq, layers, hidden, host_free, host_total) if depth < layers else 0
        state.reset_counters()
        _free(device)
        ballast = None
        batches = random_batches(shape["vocab_size"], seq, 1, 1, seed=seq)
        try:
            ballast = torch.empty(short, dtype=torch.uint8, device=device) if short else None
            res = train_loop(model, batches, 0, [seq])
            rec = {"fits": True, "peak_gib": res["peak_gib"], "reserved_gib": res["reserved_gib"],
                   "step_s": round(res["step_s"][0], 1), "loss": round(res["losses"][0], 4)}
        except torch.OutOfMemoryError as err:
            rec = {"fits": False, "error": str(err).splitlines()[0][:160]}
        except (RuntimeError, TunewiseError) as err:  # not a memory answer (a size limit): fatal if CUDA broke
            rec = {"fits": False, "fatal": not _cuda_works(device), "error": str(err).splitlines()[0][:200]}
        finally:
            del ballast
            hf.config.num_hidden_layers = layers
        rec.update(layers_run=depth, host_short_gib=round(short / GIB, 2), offloaded=state.packed,
                   kept_on_gpu=state.kept, host_gib=round(state.host_bytes / GIB, 1), mlp_tiles=state.tiles)
        print(f"probe seq {seq}: {rec}", flush=True)
        _free(device)
        return rec

    unit = UNIT // scale
    # With Liger's kernels the fast path refuses [tokens, hidden] tensors of 2^31 elements (32-bit offsets)
    hi = (LIGER_ELEMENTS - 1) // hidden // unit * unit if state.liger_rows else None
    result["kernel_limit_seq"] = hi

    def predict(rec: dict, seq: int) -> int | None:
        if device != "cuda":
            return None
        result["predicted_max_seq"] = _predict(rec, seq, static, cap, layers, hidden, host_free, host_total, unit)
        return result["predicted_max_seq"]

    best, bad = search(lambda seq: tried.setdefault(seq, step(seq, proxy)), spec["lo"] // scale,
                       spec["step"] // scale, unit, hi, spec.get("budget_s", 0), predict)
    result.update(max_seq=best, smallest_failing=bad, probes=tried, elapsed_s=round(time.perf_counter() - start),
                  layers_run=proxy, static_gib=round(static / GIB, 2),
                  complete=best is not None and bad is not None and bad - best <= unit)
    if best is not None:
        result.update(peak_gib=tried[best]["peak_gib"], step_s=tried[best]["step_s"])
    confirm = spec.get("confirm", 0)
    if confirm:
        seq = best if confirm < 0 else confirm // scale
        if seq:
            result["confirm"] = {"seq": seq, **step(seq, layers)}
    return result


def search(probe, lo: int, step: int, unit: int, hi: int | None, budget_s: float, predict) -> tuple:
    """(longest fitting, shortest failing) length, each a multiple of `unit` (None where none was found).
    `probe(seq)` runs one step ({"fits": bool, "step_s": s, "fatal": bool}); `predict(record, seq)` gives the
    length the first fitting step's memory predicts. Starts at `lo`, jumps to the prediction, then adds `step`
    while steps fit, or steps down from a failure, and bisects between the longest fit and the shortest failure
    once they are two steps apart, never past `hi`; starts no step that would end after `budget_s` (time grows
    with the square of the length)."""
    start = time.perf_counter()
    lo, step = max(unit, -(-lo // unit) * unit), max(unit, step // unit * unit)
    best = bad = predicted = None
    timed = None  # the last step that ran: (tokens, seconds)
    while time.perf_counter() - start < budget_s:
        if best is None:  # the start, or halving below a failed start
            seq = lo if bad is None else bad // 2 // unit * unit
        elif bad is None:
            seq = max(best + step, predicted or 0)
        elif bad - best > 2 * step:  # far apart (the prediction failed): a step below the failure first
            seq = bad - step
        else:
            seq = best + (bad - best) // 2 // unit * unit
        if hi is not None:
            seq = min(seq, hi)
        if seq < unit or seq == best or (bad is not None and seq >= bad):
            break
        if timed and time.perf_counter() - start + timed[1] * (seq / timed[0]) ** 2 > budget_s:
            break
        rec = probe(seq)
        if "step_s" in rec:
            timed = (seq, rec["step_s"])
        if rec["fits"]:
            best = seq
            if predicted is None:
                predicted = predict(rec, seq)
        else:
            bad = seq if bad is None else min(bad, seq)
            if rec.get("fatal"):  # CUDA no longer works in this process
                break
    return best, bad


def _predict(rec: dict, seq: int, static: int, cap: float, layers: int, hidden: int, host_free, host_total,
             unit: int) -> int | None:
    """The longest length the first fitting step's memory predicts: per-token bytes from its peak (less the
    host-short allocation beside it), plus the inputs the host could not take at that length."""
    per_token = (rec["peak_gib"] * GIB - rec["host_short_gib"] * GIB - static) / seq
    if per_token <= 0:
        return None
    n = seq
    while static + per_token * (n + unit) + _host_short_bytes(n + unit, layers, hidden, host_free, host_total) \
            <= 0.99 * cap:  # 1 % for the allocator's rounding
        n += unit
    return n
