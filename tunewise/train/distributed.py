"""Running as one of several processes (`torchrun`, `accelerate launch`): ranks, the device, who goes first,
FSDP, and the global batch.

Without a launcher every helper here is a no-op, so a single process runs as if this module were absent. With one,
the launcher's environment (RANK, LOCAL_RANK, WORLD_SIZE) is the only source of truth: the same config runs
on 1 or N devices with no code change."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from datetime import timedelta

import torch

from tunewise.config import RunConfig
from tunewise.errors import ConfigError

# The same as transformers' TrainingArguments.ddp_timeout default: rank 0 prepares the data while the others
# wait at a barrier, and a data stage longer than this would be taken for a hung process.
TIMEOUT = timedelta(seconds=1800)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """Processes on this host (torchrun and accelerate launch set LOCAL_WORLD_SIZE): they share its memory."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (RANK is set by both); a single process otherwise."""
    return int(os.environ.get("RANK", "0")) == 0


def is_distributed() -> bool:
    return world_size() > 1


def bind_device() -> None:
    """Each process uses the GPU of its local rank, before anything touches "cuda" (models load to it)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())


def _state():
    # accelerate's PartialState starts the process group (NCCL on GPUs, gloo on CPU) the way Trainer will:
    # Trainer later resets the state object but keeps the process group, so there is exactly one.
    from accelerate import PartialState  # heavy

    return PartialState(cpu=not torch.cuda.is_available(), timeout=TIMEOUT)


def barrier() -> None:
    if is_distributed():
        _state().wait_for_everyone()


@contextmanager
def main_process_first():
    """Rank 0 runs the block first (it fills caches and writes files); the others run it after, reading them."""
    with _state().main_process_first() if is_distributed() else nullcontext():
        yield


def uses_fsdp(cfg: RunConfig) -> bool:
    """FSDP from the config (train.fsdp, under torchrun) or from an accelerate launch FSDP config; on one
    process there is nothing to shard and training is plain. accelerate runs FSDP on GPUs only: on CPU it
    would quietly fall back to DDP, so asking for it there is an error."""
    launched = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if not (is_distributed() and (cfg.train.fsdp or launched)):
        return False
    if not torch.cuda.is_available():
        raise ConfigError("config: train.fsdp (or an accelerate FSDP config) needs CUDA GPUs; accelerate "
                          "does not shard on CPU. Set train.fsdp: false to train data-parallel (DDP) on CPU")
    if cfg.train.method == "qlora":  # FSDP would need 4-bit weights stored in a float dtype; not wired up
        raise ConfigError("config: train.method=qlora does not run under FSDP in tunewise; QLoRA trains "
                          "data-parallel: set train.fsdp: false and launch without an FSDP config")
    return True


def grad_accum(cfg: RunConfig, world: int | None = None) -> int:
    """Micro-steps per optimizer step: train.grad_accum, or what train.global_batch_size needs on `world`
    devices, so one config gives the same optimisation on 1 GPU or N."""
    t, world = cfg.train, world or world_size()
    if t.global_batch_size is None:
        return t.grad_accum
    per_step = t.batch_size * world
    if t.global_batch_size % per_step:
        raise ConfigError(f"config: train.global_batch_size={t.global_batch_size} is not a multiple of "
                          f"train.batch_size × devices = {t.batch_size} × {world}")
    return t.global_batch_size // per_step


def global_batch(cfg: RunConfig, world: int | None = None) -> int:
    world = world or world_size()
    return cfg.train.batch_size * world * grad_accum(cfg, world)


def describe_batch(cfg: RunConfig) -> str:
    world = world_size()
    return (f"global batch {global_batch(cfg)} = {cfg.train.batch_size} per device × {world} "
            f"device{'s' if world > 1 else ''} × grad_accum {grad_accum(cfg)}")
