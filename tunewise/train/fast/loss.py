"""Causal-LM loss without the full logits: the LM head and cross-entropy, a chunk of tokens at a time.

Plain transformers computes logits for every position ([tokens, vocab], e.g. 8192 × 128256 for Llama-3 at
2048 × 4), upcasts them to fp32 and keeps the fp32 softmax for backward: about 10 GiB at that size, more than
the activations of the whole network under gradient checkpointing. Here only positions that carry a label are
projected, `chunk_tokens` rows at a time, and each chunk's gradient (softmax − one-hot) is turned into the
hidden-state (and head-weight) gradient at once, inside the forward, so only [chunk, vocab] is ever live.

Gradients are computed in forward rather than recomputing each chunk's logits in backward: the recompute would
cost a third matrix product of [tokens × hidden × vocab] for nothing, and the memory is the same (the hidden
gradient, [tokens, hidden], is kept until backward instead of the hidden states). Liger Kernel's fused linear
cross-entropy does the same with Triton kernels for the softmax; `impl="liger"` uses it where installed.

`softcap` (Gemma 2's final_logit_softcapping) caps each logit as softcap·tanh(logit / softcap) before the
softmax, as the model's forward does; here in fp32, like the rest of the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunewise.data.encode import IGNORE

# Liger's fused loss sizes its own chunk as tokens / ceil(vocab / hidden) (1/32 of the tokens for Llama-3): at
# 350k tokens a [16k, vocab] chunk. Longer inputs go to it in slabs of this many tokens ([1024, vocab] chunks).
LIGER_SLAB = 32768


def _chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_tokens: int,
    need_h: bool,
    need_w: bool,
    softcap: float | None = None,
):
    """(sum of CE, d sum/d hidden or None, d sum/d weight in fp32 or None), [chunk, vocab] live at a time."""
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        # F.linear under the caller's autocast, as the model's lm_head would be: plain's logits dtype.
        logits = F.linear(h, weight)
        probs = logits.float()
        if softcap:
            tanh = (probs / softcap).tanh_()
            probs = tanh * softcap
        lse = torch.logsumexp(probs, dim=-1)
        total += (lse - probs.gather(1, t[:, None]).squeeze(1)).sum()
        if not (need_h or need_w):
            continue
        probs.sub_(lse[:, None]).exp_()  # softmax in place: d(sum CE)/d(logits) = softmax - one-hot
        probs.scatter_add_(1, t[:, None], torch.full_like(lse[:, None], -1.0))
        if softcap:  # d capped / d logit = 1 - tanh²
            probs.mul_(tanh.square_().neg_().add_(1.0))
            del tanh
        grad_logits = probs.to(logits.dtype)
        del probs
        if need_h:
            grad_h[start : start + chunk_tokens] = (grad_logits @ weight.to(grad_logits.dtype)).to(
                hidden.dtype
            )
        if need_w:
            grad_w += (grad_logits.t() @ h.to(grad_logits.dtype)).float()
    return total, grad_h, grad_w


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T, targets); every target is a real class (no ignore index)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int,
                softcap: float | None = None):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total, grad_h, grad_w = _chunked(hidden, weight, targets, chunk_tokens, need_h, need_w, softcap)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        # grad_out is a 0-dim fp32 tensor: multiplying keeps grad_h's dtype (no sync, no upcast).
        grad_h = grad_h * grad_out if grad_h is not None else None
        grad_w = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return grad_h, grad_w, None, None, None


def _liger_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
               softcap: float | None) -> torch.Tensor:
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss  # optional

    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum", softcap=softcap or None)
    return loss(weight, hidden, targets)


def causal_lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    chunk_tokens: int = 1024,
    impl: str = "torch",
    softcap: float | None = None,
) -> torch.Tensor:
    """The value transformers' ForCausalLMLoss gives for `lm_head(hidden)` (soft-capped by `softcap`, when
    given): next-token CE over labelled positions, summed over num_items_in_batch when the Trainer passes it
    (gradient accumulation), else a mean."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=IGNORE)[..., 1:]
    flat_t = shift_labels.reshape(-1).to(hidden.device)
    keep = (flat_t != IGNORE).nonzero().squeeze(1)  # prompt and padding rows never reach the LM head
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)
    t = flat_t.index_select(0, keep)
    if impl == "liger" and h.dtype == weight.dtype and h.is_cuda:
        if h.shape[0] <= LIGER_SLAB:
            total = _liger_sum(h, weight, t, softcap)
        else:  # split, not slices: its backward concatenates the slabs' gradients once
            parts = [_liger_sum(hs, weight, ts, softcap) for hs, ts in zip(h.split(LIGER_SLAB), t.split(LIGER_SLAB))]
            total = torch.stack(parts).sum()
    elif torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        total = ChunkedLinearCrossEntropy.apply(h, weight, t, chunk_tokens, softcap)
    else:  # evaluation: no gradients computed at all
        total = _chunked(h, weight, t, chunk_tokens, False, False, softcap)[0]
    if num_items_in_batch is None:
        return total / keep.numel() if keep.numel() else total * float("nan")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
