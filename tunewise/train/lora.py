"""`apply_lora(model, lora_cfg)`: LoRA adapters alone, for callers that have no TrainConfig (tests, benches).
The wiring itself lives in methods.apply_method, so this and training can never drift apart."""

from __future__ import annotations

from tunewise.config import LoraConfig, TrainConfig
from tunewise.train.methods import apply_method


def apply_lora(model, cfg: LoraConfig):
    return apply_method(model, TrainConfig(method="lora", lora=cfg))
