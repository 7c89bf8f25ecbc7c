"""Training stage. Entry point: `train(cfg, data, base) -> TrainResult`.

Built on transformers' Trainer (not TRL's SFTTrainer): we already tokenise with completion-only labels
ourselves (tunewise/data/encode.py), and Trainer gives checkpoints, resume, evaluation, early stopping,
DDP/FSDP through accelerate and logging without pulling `datasets` and TRL into every install."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data import PreparedData
from tunewise.models import ResolvedModel, causal_lm_class, load_model, load_tokenizer, pick_device
from tunewise.train.checkpoints import (
    last_complete_checkpoint,
    load_trained,
    mark_finished,
    prepare_checkpoints,
    trained_weights_dir,
)
from tunewise.train.distributed import (
    barrier,
    bind_device,
    describe_batch,
    global_batch,
    is_main_process,
    local_rank,
    uses_fsdp,
    world_size,
)
from tunewise.train.fast import apply_fast_path, graph_steps, other_graph_widths
from tunewise.train.fast.quiet_gc import frozen_gc
from tunewise.train.methods import apply_method, check_method_supported, load_quantized
from tunewise.train.plan import encode_data, encode_split, plan
from tunewise.train.runtime import (
    TrainError,
    attention_implementation,
    check_fits,
    device_memory_gib,
    oom_message,
    pad_multiple,
    use_packing,
)
from tunewise.train.tokenize import bucket_lengths

__all__ = ["TrainError", "TrainResult", "encode_split", "load_trained", "reproducibility", "train",
           "trained_weights_dir"]


@dataclass
class TrainResult:
    weights_dir: Path  # where the trained weights are: <run>/adapter (adapters) or <run>/model (full)
    train_loss: list[tuple[float, float]]  # (epoch, loss)
    val_loss: list[tuple[float, float]]
    seconds: float
    examples: int
    skipped_too_long: int
    trainable_params: int
    total_params: int
    method: str = "lora"
    replay_examples: int = 0
    best_checkpoint: str | None = None
    stopped_early: bool = False
    resumed_from: str | None = None
    packing: bool = False
    attn_implementation: str = "sdpa"
    tokens_seen: int = 0
    world_size: int = 1
    global_batch: int = 0  # examples per optimizer step, all devices together
    fsdp: bool = False
    tokens_per_second: float | None = None  # training tokens/s on all devices, after the first optimizer step
    estimate: dict = field(default_factory=dict)
    peak_gpu_memory_gib: float | None = None  # measured (torch.cuda.max_memory_allocated), beside the estimate
    fast_path: dict = field(default_factory=dict)  # tunewise.train.fast.FastPath: which components ran
    model: object = field(default=None, repr=False)  # the trained model, still in memory (None under FSDP)

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "model"}
        d["weights_dir"] = str(self.weights_dir)
        return d


def _curves(log_history: list[dict]) -> tuple[list, list]:
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h and "epoch" in h]
    val = [(h["epoch"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    return train, val


def _prepare_model(cfg: RunConfig, base: ResolvedModel, device: str, attn: str, model):
    import torch  # heavy

    check_method_supported(cfg.train.method, device)
    if cfg.train.method == "qlora":
        model = load_quantized(base.path, local_rank(), attn)  # a passed full-precision model is not reused
    else:
        model = model if model is not None else load_model(base.path, device)
        if cfg.train.method == "full" and model.dtype != torch.float32:
            # Full fine-tuning keeps fp32 master weights (bf16 only inside autocast): AdamW updates of ~1e-6
            # relative size vanish in bf16's 8-bit mantissa. Adapters train fine on a bf16 base.
            model = model.float()
        model.set_attn_implementation(attn)
    return apply_method(model, cfg.train)


def train(cfg: RunConfig, data: PreparedData, base: ResolvedModel, model=None, *, resume: bool = False,
          force: bool = False, callbacks: list | None = None) -> TrainResult:
    """Fine-tune with cfg.train.method; weights land in `<run>/adapter` (or `<run>/model` for full)."""
    import torch  # heavy
    from transformers import enable_full_determinism, set_seed  # heavy

    from tunewise.train.trainer import build_trainer  # heavy

    enable_full_determinism(cfg.seed) if cfg.train.deterministic else set_seed(cfg.seed)
    device = pick_device()
    bind_device()
    tokenizer = load_tokenizer(base.path)
    enc = encode_data(cfg, data, tokenizer)
    fsdp = uses_fsdp(cfg)
    attn, why = attention_implementation(cfg.model.attn_implementation, device, causal_lm_class(base.path))
    # Per device: the micro-batch is per device, and FSDP splits weights, gradients and optimizer state.
    est = plan(cfg, base.path, enc.lengths, cfg.estimate.device if device == "cuda" else "CPU",
               world_size(), device_memory_gib(device), shards=world_size() if fsdp else 1, attention=attn)
    check_fits(est, force)
    if is_main_process():
        print(f"tunewise train: {cfg.train.method}, {describe_batch(cfg)}{', FSDP' if fsdp else ''}", flush=True)
        if why:
            print(f"tunewise train: attention {attn} ({why})", flush=True)
    packing = use_packing(cfg, device, attn)
    model = _prepare_model(cfg, base, device, attn, model)
    multiple = pad_multiple(cfg.train.pad_to_multiple_of, device)
    fast = apply_fast_path(model, cfg.train, device, log=is_main_process(), seq_len=max(enc.lengths),
                           shards=world_size() if fsdp else 1,
                           widths=other_graph_widths(cfg.train.fast, enc.lengths, multiple))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    run_dir, ckpt_dir = cfg.run_dir, cfg.run_dir / "checkpoints"
    checkpoint = _resume_point(ckpt_dir, resume)
    # a graphed stack replays shapes it has seen: padded batches then come in a few widths, not one per batch
    bucketed = bool(fast.graphed_layers) if cfg.train.fast.bucket_padding == "auto" else cfg.train.fast.bucket_padding
    buckets = bucket_lengths(max(enc.lengths)) if bucketed and not packing else None
    trainer = build_trainer(cfg, model, tokenizer, enc, ckpt_dir, device, packing, callbacks or [],
                            trainer_checkpointing=cfg.train.gradient_checkpointing and fast.checkpointed_layers is None,
                            micro_batch=fast.micro_batch_size, pad_buckets=buckets,
                            pad_multiple=multiple,
                            causal_padding=fast.causal_padding)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the baselines ran on this GPU first: measure training alone
    start = time.perf_counter()
    try:
        with frozen_gc(fast.freeze_gc):
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError:
        raise TrainError(oom_message(est)) from None
    except _non_finite() as err:
        last = last_complete_checkpoint(ckpt_dir)
        raise TrainError(f"{err}; last good checkpoint: {last or 'none yet'} (weights not updated with it); "
                         "try a lower train.learning_rate or train.max_grad_norm, check the data for empty "
                         "answers, then --resume or start over") from None
    seconds = time.perf_counter() - start
    fast.graph_steps = graph_steps(model)
    if fast.graph_steps and is_main_process():
        g = fast.graph_steps
        print(f"tunewise train: CUDA graphs replayed {g['replays']} of {g['replays'] + g['eager']} training "
              f"micro-steps ({g['captures']} shapes captured, {g['drops']} times all dropped for moved weights"
              f"{'; capture failed: ' + g['failed'] if g['failed'] else ''})", flush=True)
    out_dir = run_dir / ("model" if cfg.train.method == "full" else "adapter")
    _save(trainer, tokenizer, out_dir, run_dir, ckpt_dir)
    state = trainer.state
    train_curve, val_curve = _curves(state.log_history)
    stopped = state.global_step < state.max_steps
    rate = trainer.progress.steady_tokens_per_second or state.num_input_tokens_seen / max(seconds, 1e-9)
    return TrainResult(
        weights_dir=out_dir, train_loss=train_curve, val_loss=val_curve, seconds=seconds, examples=len(enc.train),
        skipped_too_long=enc.skipped_too_long, trainable_params=trainable, total_params=total,
        method=cfg.train.method, replay_examples=enc.replay_examples, best_checkpoint=state.best_model_checkpoint,
        stopped_early=stopped, resumed_from=str(checkpoint) if checkpoint else None, packing=packing,
        attn_implementation=attn, tokens_seen=state.num_input_tokens_seen, world_size=world_size(),
        global_batch=global_batch(cfg), fsdp=fsdp, tokens_per_second=round(rate, 1), estimate=est.to_json(),
        peak_gpu_memory_gib=_peak_gpu_gib(device), fast_path=fast.to_json(),
        model=None if fsdp else trainer.model,  # an FSDP model is sharded: reload it
    )


def _resume_point(ckpt_dir: Path, resume: bool) -> Path | None:
    """Every rank checks checkpoints/ (the same answer or the same error); rank 0 alone clears a finished
    run's checkpoints, once nobody is still reading them."""
    checkpoint = prepare_checkpoints(ckpt_dir, resume, clear=False)
    barrier()
    if is_main_process():
        prepare_checkpoints(ckpt_dir, resume)
    barrier()
    return checkpoint


def _save(trainer, tokenizer, out_dir: Path, run_dir: Path, ckpt_dir: Path) -> None:
    trainer.save_model(str(out_dir))  # every rank calls it (FSDP gathers the shards); rank 0 writes
    if is_main_process():
        tokenizer.save_pretrained(out_dir)
        (run_dir / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        mark_finished(ckpt_dir)
    barrier()  # when train() returns, the weights are on disk for every rank


def _peak_gpu_gib(device: str) -> float | None:
    import torch  # heavy

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None


def _non_finite():
    from tunewise.train.callbacks import NonFiniteLoss  # heavy

    return NonFiniteLoss


def reproducibility(cfg: RunConfig) -> dict:
    """What the manifest needs beyond the config and library versions to reproduce a training run."""
    import torch  # heavy

    info = {"seed": cfg.seed, "deterministic": cfg.train.deterministic, "device": pick_device(),
            "world_size": world_size(), "torch_cuda": torch.version.cuda,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(local_rank())
    return info
