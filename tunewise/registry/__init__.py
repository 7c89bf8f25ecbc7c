"""Registry stage: datasets, runs and models with lineage; gated promotion and one-command rollback.
Entry point: `open_registry(cfg) -> Registry`."""

from tunewise.registry.gate import FeedbackGate, GateResult, TestScores, feedback_gate
from tunewise.registry.store import (
    AliasChange,
    GateFailed,
    ModelRecord,
    Registry,
    RegistryError,
    open_registry,
    validate_ref,
)

__all__ = ["AliasChange", "FeedbackGate", "GateFailed", "GateResult", "ModelRecord", "Registry", "RegistryError",
           "TestScores", "feedback_gate", "open_registry", "validate_ref"]
