"""Models: where the base model comes from (catalogue), how it is loaded, and what a loaded model's adapter is."""

from tunewise.models.adapters import base_weights, has_adapter
from tunewise.models.catalogue import ResolvedModel, resolve_model
from tunewise.models.load import (
    causal_lm_class,
    check_adapter,
    check_full_model,
    load_adapter,
    load_model,
    load_tokenizer,
    load_weights,
    pick_device,
    pick_dtype,
    pickled_only,
    sdpa_exact,
    weights_kind,
)

__all__ = ["ResolvedModel", "base_weights", "causal_lm_class", "check_adapter", "check_full_model", "has_adapter",
           "load_adapter", "load_model", "load_tokenizer", "load_weights", "pick_device", "pick_dtype", "pickled_only",
           "resolve_model", "sdpa_exact", "weights_kind"]
