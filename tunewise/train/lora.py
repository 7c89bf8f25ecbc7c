"""PEFT method wiring."""

from __future__ import annotations

from tunewise.config import LoraConfig


def apply_lora(model, cfg: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type=TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, peft_cfg)
