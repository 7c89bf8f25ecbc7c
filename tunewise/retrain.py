"""`retrain(...)`: the operate loop's last step. The feedback corrections are split (seeded): most join
production's training data as a new dataset version, through the data stage; the rest are held out. A candidate
is trained and evaluated by the same pipeline on production's frozen test set, and promoted only if it beats
production on the held-out corrections, which it never saw (the feedback gate), and on the frozen test set
(paired bootstrap, both). Lineage (parent model, parent dataset) is recorded; `tunewise registry rollback`
undoes a promotion."""

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
from tunewise.monitor.feedback import CorrectionSplit, correction_rows, split_corrections
from tunewise.registry import (
    FeedbackGate,
    GateFailed,
    GateResult,
    ModelRecord,
    Registry,
    RegistryError,
    feedback_gate,
)


@dataclass
class RetrainResult:
    candidate: ModelRecord
    production: ModelRecord
    corrections: int  # accepted corrections: trained on + held out
    corrections_rejected: int
    test_gate: GateResult | None
    feedback_slice: FeedbackGate  # the held-out corrections
    promoted: bool
    reason: str
    held_out_dropped: int = 0  # held-out corrections left out as repeats of trained ones


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def accepted_corrections(registry: Registry, prod: ModelRecord, labels: list[str] | None) -> tuple[list, int]:
    """The corrections of production's model name whose label is in the label set, and how many were not."""
    corrections = correction_rows(registry.engine, prod.name)
    accepted = [c for c in corrections if not labels or c["label"] in labels]
    if not accepted:
        raise RegistryError(f"no usable feedback corrections for {prod.name} "
                            f"({len(corrections)} corrections, none with a label in {labels})")
    return accepted, len(corrections) - len(accepted)


def build_dataset(registry: Registry, prod: ModelRecord, corrections: list[dict]) -> tuple[Path, Path]:
    """Write the new dataset version's pool (train+val of production's data + the corrections to train on);
    return it and the frozen test file."""
    frozen = Path(registry.dataset_record(prod.dataset_hash)["path"])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    folder = registry.workspace / "datasets" / f"retrain-{prod.name}-{stamp}"
    folder.mkdir(parents=True)
    pool = _read_jsonl(frozen / "train.jsonl") + _read_jsonl(frozen / "val.jsonl") + corrections
    with (folder / "pool.jsonl").open("w", encoding="utf-8") as fh:
        for row in pool:
            row = {"messages": row["messages"], "label": row.get("label")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder / "pool.jsonl", frozen / "test.jsonl"


def retrain_config(base: dict, pool: Path, test: Path, name: str) -> RunConfig:
    raw = {k: v for k, v in base.items()}
    raw["name"] = name
    val = (base.get("data") or {}).get("split", {}).get("val", 0.1)
    # The test set is production's frozen one, and every trained correction stays in: no re-split, no subsampling.
    raw["data"] = {"paths": [str(pool)], "test_paths": [str(test)], "text_field": "text", "label_field": "label",
                   "split": {"val": val, "test": 0.1}}
    return parse_config(raw, f"retrain config for {name}")


def score_slice(cfg: RunConfig, records: list, labels, candidate: ModelRecord, prod: ModelRecord
                ) -> dict[str, list[float]]:
    """1/0 per record for both models (right label, or exact match), scored as the evaluation stage scores a
    fine-tuned model."""
    data = PreparedData(train=[], val=[], test=records, labels=labels, content_hash="")
    scores = {}
    for name, m in (("candidate", candidate), ("production", prod)):
        base = ResolvedModel(m.base_model["id"], Path(m.base_model["path"]), m.base_model["sha256"])
        res = score_model(cfg, data, base, m.artifact_path, name=name)
        scores[name] = [float(p == r.answer) for p, r in zip(res.predictions, records)]
    return scores


def _reject(registry: Registry, candidate: ModelRecord, reason: str, evidence: dict) -> str:
    registry.reject(candidate.ref, reason, evidence)
    return reason


def retrain(registry: Registry, train_config: dict | None = None, name: str | None = None) -> RetrainResult:
    """Retrain production on its data + most feedback corrections; promote the result only if it beats
    production on the held-out corrections and on the frozen test set."""
    from tunewise.pipeline import run  # heavy

    prod = registry.model("production")
    labels = registry.dataset_record(prod.dataset_hash)["card"].get("labels")
    accepted, rejected = accepted_corrections(registry, prod, labels)
    base = train_config or registry.run_record(prod.run_id)["config"]
    seed = int(base.get("seed", RunConfig.model_fields["seed"].default))
    try:
        split: CorrectionSplit = split_corrections(accepted, registry.cfg.feedback_holdout,
                                                   registry.cfg.feedback_holdout_min, seed)
    except DataError as err:
        raise RegistryError(f"{prod.name}: {err}") from None
    pool, test = build_dataset(registry, prod, split.train)
    cfg = retrain_config(base, pool, test, name or f"{prod.name}-retrain-v{prod.version + 1}")
    run(cfg)
    candidate = registry.register_run(cfg.run_dir, prod.name, parent_id=prod.id, dataset_parent=prod.dataset_hash)
    held = [Record(r["messages"], r["label"]) for r in split.held_out]
    scores = score_slice(cfg, held, labels, candidate, prod)
    sliced = feedback_gate(scores["candidate"], scores["production"], len(split.train), registry.cfg.alpha, seed)
    evidence = {"feedback_slice": sliced.to_json()}
    result = dict(candidate=candidate, production=prod, corrections=len(accepted), corrections_rejected=rejected,
                  feedback_slice=sliced, held_out_dropped=split.dropped)
    if not sliced.passed:
        reason = _reject(registry, candidate, f"does not beat production {sliced.summary()}", evidence)
        return RetrainResult(**result, test_gate=None, promoted=False, reason=reason)
    try:
        change = registry.promote(candidate.ref, evidence=evidence, reason=(
            f"retrain with {len(split.train)} feedback corrections; {len(split.held_out)} held out: "
            f"{sliced.candidate:.3f} vs {sliced.production:.3f}"))
    except GateFailed as err:
        return RetrainResult(**result, test_gate=err.change.gate, promoted=False, reason=str(err))
    except DataError as err:
        return RetrainResult(**result, test_gate=None, promoted=False,
                             reason=_reject(registry, candidate, str(err), evidence))
    return RetrainResult(**result, test_gate=change.gate, promoted=True,
                         reason=change.gate.summary() if change.gate else "promoted")
