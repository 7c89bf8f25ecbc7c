"""`retrain(...)`: the operate loop's last step. New dataset version = production's training data + feedback
corrections, through the data stage; a candidate trained and evaluated by the same pipeline on production's
frozen test set; promoted only if it beats production there (paired bootstrap) and is no worse on the feedback
slice. Lineage (parent model, parent dataset) is recorded; `tunewise registry rollback` undoes a promotion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tunewise.config import RunConfig, parse_config
from tunewise.data import PreparedData
from tunewise.data.records import Record
from tunewise.errors import DataError
from tunewise.evaluate import score_model
from tunewise.models import ResolvedModel
from tunewise.monitor.feedback import correction_rows
from tunewise.registry import GateFailed, GateResult, ModelRecord, Registry, RegistryError


@dataclass
class SliceScore:
    n: int
    candidate: float
    production: float


@dataclass
class RetrainResult:
    candidate: ModelRecord
    production: ModelRecord
    corrections: int
    corrections_rejected: int
    test_gate: GateResult | None
    feedback_slice: SliceScore
    promoted: bool
    reason: str


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_dataset(registry: Registry, prod: ModelRecord, labels: list[str] | None) -> tuple[Path, Path, list, int]:
    """Write the new dataset version's pool (train+val of production's data + corrections); return it, the
    frozen test file, the accepted corrections and how many were turned away (label outside the label set)."""
    frozen = Path(registry.dataset_record(prod.dataset_hash)["path"])
    corrections = correction_rows(registry.engine, prod.name)
    accepted = [c for c in corrections if not labels or c["label"] in labels]
    if not accepted:
        raise RegistryError(f"no usable feedback corrections for {prod.name} "
                            f"({len(corrections)} corrections, none with a label in {labels})")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    folder = registry.workspace / "datasets" / f"retrain-{prod.name}-{stamp}"
    folder.mkdir(parents=True)
    pool = _read_jsonl(frozen / "train.jsonl") + _read_jsonl(frozen / "val.jsonl") + accepted
    with (folder / "pool.jsonl").open("w", encoding="utf-8") as fh:
        for row in pool:
            row = {"messages": row["messages"], "label": row.get("label")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder / "pool.jsonl", frozen / "test.jsonl", accepted, len(corrections) - len(accepted)


def retrain_config(base: dict, pool: Path, test: Path, name: str) -> RunConfig:
    raw = {k: v for k, v in base.items()}
    raw["name"] = name
    val = (base.get("data") or {}).get("split", {}).get("val", 0.1)
    # The test set is production's frozen one, and every correction stays in: no re-split, no subsampling.
    raw["data"] = {"paths": [str(pool)], "test_paths": [str(test)], "text_field": "text", "label_field": "label",
                   "split": {"val": val, "test": 0.1}}
    return parse_config(raw, f"retrain config for {name}")


def score_slice(cfg: RunConfig, records: list, labels, candidate: ModelRecord, prod: ModelRecord) -> SliceScore:
    """Accuracy (or exact match) of both models on the feedback corrections, scored as the evaluation stage
    scores a fine-tuned model."""
    data = PreparedData(train=[], val=[], test=records, labels=labels, content_hash="")
    scores = {}
    for name, m in (("candidate", candidate), ("production", prod)):
        base = ResolvedModel(m.base_model["id"], Path(m.base_model["path"]), m.base_model["sha256"])
        res = score_model(cfg, data, base, m.artifact_path, name=name)
        scores[name] = sum(p == r.answer for p, r in zip(res.predictions, records)) / len(records)
    return SliceScore(n=len(records), candidate=scores["candidate"], production=scores["production"])


def retrain(registry: Registry, train_config: dict | None = None, name: str | None = None) -> RetrainResult:
    """Retrain production on its data + feedback corrections and promote the result only if it is better."""
    from tunewise.pipeline import run  # heavy

    prod = registry.model("production")
    labels = registry.dataset_record(prod.dataset_hash)["card"].get("labels")
    pool, test, accepted, rejected = build_dataset(registry, prod, labels)
    base = train_config or registry.run_record(prod.run_id)["config"]
    cfg = retrain_config(base, pool, test, name or f"{prod.name}-retrain-v{prod.version + 1}")
    run(cfg)
    candidate = registry.register_run(cfg.run_dir, prod.name, parent_id=prod.id, dataset_parent=prod.dataset_hash)
    records = [Record(r["messages"], r["label"]) for r in accepted]
    sliced = score_slice(cfg, records, labels, candidate, prod)
    evidence = {"feedback_slice": sliced.__dict__}
    if sliced.candidate < sliced.production:
        reason = (f"worse on the feedback slice: {sliced.candidate:.3f} vs production {sliced.production:.3f} "
                  f"on {sliced.n} corrections")
        registry.reject(candidate.ref, reason, evidence)
        return RetrainResult(candidate=candidate, production=prod, corrections=len(accepted),
                             corrections_rejected=rejected, test_gate=None, feedback_slice=sliced, promoted=False,
                             reason=reason)
    try:
        change = registry.promote(candidate.ref, reason=f"retrain with {len(accepted)} feedback corrections; "
                                  f"feedback slice {sliced.candidate:.3f} vs {sliced.production:.3f}")
    except GateFailed as err:
        return RetrainResult(candidate=candidate, production=prod, corrections=len(accepted),
                             corrections_rejected=rejected, test_gate=err.change.gate, feedback_slice=sliced,
                             promoted=False, reason=str(err))
    except DataError as err:
        registry.reject(candidate.ref, str(err), evidence)
        return RetrainResult(candidate=candidate, production=prod, corrections=len(accepted),
                             corrections_rejected=rejected, test_gate=None, feedback_slice=sliced, promoted=False,
                             reason=str(err))
    return RetrainResult(candidate=candidate, production=prod, corrections=len(accepted),
                         corrections_rejected=rejected, test_gate=change.gate, feedback_slice=sliced, promoted=True,
                         reason=change.gate.summary() if change.gate else "promoted")
