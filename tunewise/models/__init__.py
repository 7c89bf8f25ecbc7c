"""Models: where the base model comes from (catalogue), how it is loaded, and what a loaded model's adapter is."""

from tunewise.models.adapters import base_weights, has_adapter
from tunewise.models.catalogue import ResolvedModel, resolve_model
from tunewise.models.load import load_model, load_tokenizer, pick_device, pick_dtype

__all__ = ["ResolvedModel", "base_weights", "has_adapter", "load_model", "load_tokenizer", "pick_device",
           "pick_dtype", "resolve_model"]
