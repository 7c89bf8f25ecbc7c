"""Registry stage: datasets, runs and models with lineage; gated promotion and one-command rollback.
Entry point: `open_registry(cfg) -> Registry`."""

from tunewise.registry.gate import GateResult, TestScores
from tunewise.registry.store import (
    AliasChange,
    GateFailed,
    ModelRecord,
    Registry,
    RegistryError,
    open_registry,
    validate_ref,
)

__all__ = ["AliasChange", "GateFailed", "GateResult", "ModelRecord", "Registry", "RegistryError", "TestScores",
           "open_registry", "validate_ref"]
