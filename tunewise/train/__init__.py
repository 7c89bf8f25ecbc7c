"""Training stage. Entry point: `train(cfg, data, base) -> TrainResult`.

Built on transformers' Trainer (not TRL's SFTTrainer): we already tokenise with completion-only labels
ourselves (tokenize.py), and Trainer gives checkpoints, resume, evaluation, early stopping and logging
without pulling `datasets` and TRL into every install."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data import PreparedData
from tunewise.data.prompt import fine_tuned_labels, prompt_messages
from tunewise.models import ResolvedModel, load_model, load_tokenizer, pick_device
from tunewise.train.lora import apply_lora
from tunewise.train.tokenize import Encoded, PadCollator, encode_example


@dataclass
class TrainResult:
    adapter_dir: Path
    train_loss: list[tuple[float, float]]  # (epoch, loss)
    val_loss: list[tuple[float, float]]
    seconds: float
    examples: int
    skipped_too_long: int
    trainable_params: int
    total_params: int
    model: object = field(default=None, repr=False)  # the trained PEFT model, still in memory

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "model"}
        d["adapter_dir"] = str(self.adapter_dir)
        return d


def encode_split(records, cfg: RunConfig, labels, tokenizer) -> tuple[list[Encoded], int]:
    """Encode records; examples longer than model.max_length are counted and left out, never cut mid-answer."""
    out, skipped = [], 0
    prompt_labels = fine_tuned_labels(cfg.task, labels)
    for r in records:
        enc = encode_example(tokenizer, prompt_messages(r, cfg.task, prompt_labels), r.answer)
        if len(enc.input_ids) > cfg.model.max_length:
            skipped += 1
            continue
        out.append(enc)
    return out, skipped


def _training_args(cfg: RunConfig, out_dir: Path, device: str):
    from transformers import TrainingArguments

    t = cfg.train
    kwargs = dict(
        output_dir=str(out_dir),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 here is a ratio of total steps
        lr_scheduler_type="cosine",
        logging_steps=t.logging_steps,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        report_to=[],
        seed=cfg.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    # Sorting by length cuts padding, which on CPU is most of the wasted time.
    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        kwargs["train_sampling_strategy"] = "group_by_length"
    else:
        kwargs["group_by_length"] = True
    return TrainingArguments(**kwargs)


def _curves(log_history: list[dict]) -> tuple[list, list]:
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h and "epoch" in h]
    val = [(h["epoch"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    return train, val


def train(cfg: RunConfig, data: PreparedData, base: ResolvedModel, model=None) -> TrainResult:
    """LoRA fine-tuning with validation loss every epoch; the adapter lands in `<run>/adapter`."""
    from transformers import Trainer, set_seed

    set_seed(cfg.seed)
    device = pick_device()
    tokenizer = load_tokenizer(base.path)
    model = model if model is not None else load_model(base.path, device)
    model = apply_lora(model, cfg.train.lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    train_set, skipped = encode_split(data.train, cfg, data.labels, tokenizer)
    val_set, _ = encode_split(data.val, cfg, data.labels, tokenizer)
    if not train_set:
        from tunewise.errors import DataError

        raise DataError(f"every training example is longer than model.max_length={cfg.model.max_length}")
    run_dir = cfg.run_dir
    trainer = Trainer(
        model=model,
        args=_training_args(cfg, run_dir / "checkpoints", device),
        train_dataset=[e.to_features() for e in train_set],
        eval_dataset=[e.to_features() for e in val_set] or None,
        data_collator=PadCollator(tokenizer.pad_token_id),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    adapter_dir = run_dir / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    train_curve, val_curve = _curves(trainer.state.log_history)
    (run_dir / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return TrainResult(adapter_dir, train_curve, val_curve, seconds, len(train_set), skipped, trainable, total, model)
