"""Tokenise the training data and estimate the run before any weights are loaded."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data import PreparedData, prepare
from tunewise.data.encode import Encoded, encode_example
from tunewise.data.prompt import fine_tuned_labels, prompt_messages
from tunewise.errors import DataError
from tunewise.models import causal_lm_class, load_tokenizer, resolve_model
from tunewise.models.estimate import DEVICES, Estimate, estimate, read_shape
from tunewise.models.prices import device_key
from tunewise.train.fast import SUPPORTED, graphs_config_off, graphs_max_tokens, other_graph_widths
from tunewise.train.fast.auto_plan import BUDGET_SHARE, plan_for, planned
from tunewise.train.gen_metric import ValAnswers, val_answers
from tunewise.train.replay import replay_records
from tunewise.train.runtime import attention_implementation, pad_multiple


@dataclass
class EncodedData:
    train: list[Encoded]
    val: list[Encoded]
    skipped_too_long: int
    replay_examples: int
    val_answers: ValAnswers | None = None  # val inputs to answer at each evaluation (a generated-answer metric)

    @property
    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.train]


def encode_records(records, cfg: RunConfig, labels, tokenizer, task_prompt: bool = True) -> tuple[list, int]:
    """Encode records; examples longer than model.max_length are counted and left out, never cut mid-answer."""
    out, skipped = [], 0
    prompt_labels = fine_tuned_labels(cfg.task, labels)  # the fine-tuned prompt evaluation and serving use
    for r in records:
        messages = prompt_messages(r, cfg.task, prompt_labels) if task_prompt else r.prompt_messages
        enc = encode_example(tokenizer, messages, r.answer)
        if len(enc.input_ids) > cfg.model.max_length:
            skipped += 1
            continue
        out.append(enc)
    return out, skipped


def encode_split(records, cfg: RunConfig, labels, tokenizer) -> tuple[list[Encoded], int]:
    """Task records as training encodes them (the name serving and its tests use)."""
    return encode_records(records, cfg, labels, tokenizer)


def encode_data(cfg: RunConfig, data: PreparedData, tokenizer) -> EncodedData:
    train_set, skipped = encode_records(data.train, cfg, data.labels, tokenizer)
    if not train_set:
        raise DataError(f"every training example is longer than model.max_length={cfg.model.max_length}")
    replay = replay_records(cfg.train.replay, len(train_set), cfg.seed)
    # Replay rows keep their own prompt (no task instruction): they stand for "what the model could do before".
    replay_set, _ = encode_records(replay, cfg, None, tokenizer, task_prompt=False)
    val_set, _ = encode_records(data.val, cfg, data.labels, tokenizer)
    return EncodedData(train_set + replay_set, val_set, skipped, len(replay_set),
                       val_answers(cfg, data.train, data.val, data.labels, tokenizer))


def plan(cfg: RunConfig, model_dir: Path, lengths: list[int], device: str, gpus: int = 1,
         device_memory_gib: float | None = None, shards: int = 1, attention: str | None = None) -> Estimate:
    """The run priced as plain transformers + PEFT, with the fast path's automatic plan beside it where the fast
    path would run it (LoRA on a GPU, a supported model, train.fast not off). attention: the implementation the
    run's model gets (tunewise.train.runtime.attention_implementation; None: transformers' default), which the
    fast plan counts; plain transformers + PEFT keeps transformers' default."""
    t = cfg.train
    shape = read_shape(model_dir)
    est = estimate(
        shape, t.method, batch_size=t.batch_size, seq_len=max(lengths),
        mean_seq_len=round(sum(lengths) / len(lengths)), tokens_per_epoch=sum(lengths), epochs=t.epochs,
        device=device, gpus=gpus, r=t.lora.r, target_modules=t.lora.target_modules, dropout=t.lora.dropout,
        gradient_checkpointing=t.gradient_checkpointing, prices=cfg.estimate.prices, mfu=cfg.estimate.mfu,
        device_memory_gib=device_memory_gib, eval_batch_size=t.eval_batch_size, shards=shards)
    if (t.fast.enabled is False or device_key(device, DEVICES) in (None, "CPU") or not planned(t)
            or shape.model_type not in SUPPORTED):
        return est
    memory = t.fast.memory_budget_gib or (BUDGET_SHARE * est.device_memory_gib if est.device_memory_gib else None)
    # the stack's CUDA graphs as the config allows them (tunewise.train.fast.graphs): this plans a GPU run
    off = graphs_config_off(t, "cuda", max(gpus, shards), shape.model_type)
    most = 0 if off else graphs_max_tokens(t.fast)
    widths = other_graph_widths(t.fast, lengths, pad_multiple(t.pad_to_multiple_of, "cuda")) if most else ()
    fast = plan_for(shape, t, max(lengths), budget_gib=memory, device=device, shards=shards, attention=attention,
                    graphs_max_tokens=most, graph_widths=widths)
    return replace(est, fast_plan={**fast.to_json(), "why": fast.describe(), "hours": est.hours / fast.speedup})


def estimate_config(cfg: RunConfig) -> Estimate:
    """`tunewise estimate`: the run priced on cfg.estimate.device, from config.json and the tokenised data."""
    base = Path(cfg.model.base).expanduser()
    model_dir = base if (base / "config.json").is_file() else resolve_model(cfg.model.base, cfg.model.cache_dir).path
    enc = encode_data(cfg, prepare(cfg), load_tokenizer(model_dir))
    gpus = cfg.estimate.gpus
    # as `tunewise train` would choose on CUDA: only the fast plan, made for GPUs alone, reads it
    attn, _ = attention_implementation(cfg.model.attn_implementation, "cuda", causal_lm_class(model_dir))
    return plan(cfg, model_dir, enc.lengths, cfg.estimate.device, gpus, shards=gpus if cfg.train.fsdp else 1,
                attention=attn)
