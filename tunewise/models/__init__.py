"""Models: where the base model comes from (catalogue) and how it is loaded."""

from tunewise.models.catalogue import ResolvedModel, resolve_model
from tunewise.models.load import (
    check_adapter,
    check_full_model,
    load_adapter,
    load_model,
    load_tokenizer,
    load_weights,
    pick_device,
    pick_dtype,
    pickled_only,
    weights_kind,
)

__all__ = ["ResolvedModel", "check_adapter", "check_full_model", "load_adapter", "load_model", "load_tokenizer",
           "load_weights", "pick_device", "pick_dtype", "pickled_only", "resolve_model", "weights_kind"]
