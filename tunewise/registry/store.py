"""The registry: datasets, runs and models with lineage, and the `candidate` / `production` aliases.

Artifacts (the weights: a run's adapter/ or, for a full fine-tune or a soup, its model/; and the frozen data
splits) are copied into the workspace when registered, so a rollback works even after `runs/` is cleaned."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from tunewise.config import RegistryConfig
from tunewise.errors import ConfigError, DataError
from tunewise.models.load import SAFE_ONLY, pickled_only
from tunewise.registry.db import make_engine, registry_url
from tunewise.registry.gate import GateResult, TestScores, gate, read_test_scores
from tunewise.registry.schema import alias_events, datasets, models, runs

ALIASES = ("production", "candidate")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A model reference: an alias, a name (its latest version) or name:vN. Nothing else, so a reference can never
# reach the filesystem: artifact paths come from the registry, not from the request.
MODEL_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,63}?)(?::v?(?P<version>\d{1,6}))?$")


class RegistryError(DataError):
    """The registry says no: unknown model, gate failed, nothing to roll back to."""


@dataclass
class ModelRecord:
    id: int
    name: str
    version: int
    kind: str
    artifact_path: Path
    base_model: dict
    run_id: int
    dataset_hash: str
    parent_id: int | None
    metrics: dict
    test_set_hash: str
    created_at: object

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    @classmethod
    def from_row(cls, row) -> ModelRecord:
        m = row._mapping
        return cls(m["id"], m["name"], m["version"], m["kind"], Path(m["artifact_path"]), m["base_model"],
                   m["run_id"], m["dataset_hash"], m["parent_id"], m["metrics"], m["test_set_hash"],
                   m["created_at"])


@dataclass
class AliasChange:
    alias: str
    action: str
    model: ModelRecord | None
    previous: ModelRecord | None
    forced: bool
    reason: str | None
    gate: GateResult | None


def run_weights(run_dir: Path) -> tuple[Path, str]:
    """A run's weights folder and kind: adapter/ ("adapter"), else model/ ("full": a full fine-tune or a soup).
    Pickled weights (*.bin without safetensors) are refused here, before they reach a server."""
    for folder, marker, kind in ((run_dir / "adapter", "adapter_config.json", "adapter"),
                                 (run_dir / "model", "config.json", "full")):
        if (folder / marker).is_file():
            pickled = pickled_only(folder)
            if pickled:
                raise RegistryError(f"{folder}: only {', '.join(pickled)}; {SAFE_ONLY}")
            return folder, kind
    raise RegistryError(f"{run_dir}: no adapter/adapter_config.json or model/config.json "
                        "(is this a finished run folder?)")


def validate_ref(ref: str) -> re.Match:
    m = MODEL_REF.match(ref or "")
    if not m or ".." in ref:
        raise ConfigError(f"model {ref!r}: not a valid model name (letters, digits, . _ -, optional :vN)")
    return m


class Registry:
    def __init__(self, cfg: RegistryConfig, engine: Engine | None = None):
        self.cfg = cfg
        self.workspace = Path(cfg.workspace).resolve()
        self.engine = engine or make_engine(registry_url(cfg))

    # -- registration ------------------------------------------------------------------------------------
    def _register_dataset(self, conn, run_dir: Path, manifest: dict, parent_hash: str | None) -> str:
        h = manifest["dataset"]["content_hash"]
        if conn.execute(select(datasets.c.content_hash).where(datasets.c.content_hash == h)).first():
            return h
        frozen = self.workspace / "datasets" / h
        if not frozen.is_dir():
            tmp = frozen.with_name(h + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(run_dir / "data", tmp)
            tmp.rename(frozen)
        card = {k: v for k, v in manifest["dataset"].items() if k != "content_hash"}
        conn.execute(insert(datasets).values(content_hash=h, parent_hash=parent_hash, card=card,
                                             source=f"run {manifest['name']}", path=str(frozen)))
        return h

    def register_run(self, run_dir: Path, name: str | None = None, parent_id: int | None = None,
                     dataset_parent: str | None = None, candidate: bool = True) -> ModelRecord:
        """Record a finished run (dataset, run, model) and make the model the candidate. Its weights are an
        adapter (kind "adapter") or, for a full fine-tune or a soup, full weights in model/ (kind "full")."""
        run_dir = Path(run_dir)
        for f in ("manifest.json", "metrics.json", "config.yaml"):
            if not (run_dir / f).is_file():
                raise RegistryError(f"{run_dir / f}: missing (is this a finished run folder?)")
        weights, kind = run_weights(run_dir)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        scores = read_test_scores(run_dir)
        name = name or manifest["name"]
        if not MODEL_NAME.match(name):
            raise ConfigError(f"model name {name!r}: use letters, digits, . _ - (at most 64)")
        with self.engine.begin() as conn:
            dataset_hash = self._register_dataset(conn, run_dir, manifest, dataset_parent)
            run_id = conn.execute(insert(runs).values(
                name=manifest["name"], path=str(run_dir.resolve()), config=config, manifest=manifest,
                metrics=metrics, dataset_hash=dataset_hash)).inserted_primary_key[0]
            version = (conn.execute(select(func.max(models.c.version)).where(models.c.name == name)).scalar()
                       or 0) + 1
            artifact = self.workspace / "models" / name / f"v{version}" / weights.name
            shutil.rmtree(artifact, ignore_errors=True)
            shutil.copytree(weights, artifact)
            model_id = conn.execute(insert(models).values(
                name=name, version=version, kind=kind, artifact_path=str(artifact),
                base_model=manifest["base_model"], run_id=run_id, dataset_hash=dataset_hash, parent_id=parent_id,
                metrics=metrics.get("test", {}).get("fine_tuned", {}), test_set_hash=scores.test_set_hash,
                test_scores=scores.to_json())).inserted_primary_key[0]
            if candidate:
                conn.execute(insert(alias_events).values(alias="candidate", action="candidate",
                                                         model_id=model_id, forced=False))
        return self.model(f"{name}:v{version}")

    # -- lookup ------------------------------------------------------------------------------------------
    def _by_id(self, conn, model_id: int | None) -> ModelRecord | None:
        if model_id is None:
            return None
        return ModelRecord.from_row(conn.execute(select(models).where(models.c.id == model_id)).one())

    def production_stack(self, conn=None) -> list[int]:
        """Replay the production event log: promote pushes, rollback pops. The top is production."""
        def replay(c) -> list[int]:
            stack: list[int] = []
            q = select(alias_events).where(alias_events.c.alias == "production").order_by(alias_events.c.id)
            for e in c.execute(q).mappings():
                if e["action"] == "promote":
                    stack.append(e["model_id"])
                elif e["action"] == "rollback":
                    stack.pop()
            return stack

        if conn is not None:
            return replay(conn)
        with self.engine.connect() as c:
            return replay(c)

    def alias_target(self, alias: str, conn=None) -> int | None:
        if alias == "production":
            stack = self.production_stack(conn)
            return stack[-1] if stack else None
        q = (select(alias_events.c.model_id).where(alias_events.c.alias == alias,
                                                   alias_events.c.action == "candidate")
             .order_by(alias_events.c.id.desc()).limit(1))
        if conn is not None:
            return conn.execute(q).scalar()
        with self.engine.connect() as c:
            return c.execute(q).scalar()

    def model(self, ref: str) -> ModelRecord:
        """Resolve an alias, a name (latest version) or name:vN to a model record."""
        m = validate_ref(ref)
        with self.engine.connect() as conn:
            if ref in ALIASES:
                model_id = self.alias_target(ref, conn)
                if model_id is None:
                    raise RegistryError(f"no model is {ref} yet")
                return self._by_id(conn, model_id)
            q = select(models).where(models.c.name == m["name"])
            q = q.where(models.c.version == int(m["version"])) if m["version"] else \
                q.order_by(models.c.version.desc()).limit(1)
            row = conn.execute(q).first()
        if row is None:
            raise RegistryError(f"model {ref!r} is not registered (see `tunewise registry list`)")
        return ModelRecord.from_row(row)

    def models(self) -> list[ModelRecord]:
        with self.engine.connect() as conn:
            return [ModelRecord.from_row(r) for r in conn.execute(select(models).order_by(models.c.id))]

    def aliases(self) -> dict[str, int | None]:
        with self.engine.connect() as conn:
            return {a: self.alias_target(a, conn) for a in ALIASES}

    def test_scores(self, model_id: int) -> TestScores:
        with self.engine.connect() as conn:
            raw = conn.execute(select(models.c.test_scores).where(models.c.id == model_id)).scalar_one()
        return TestScores(raw["keys"], raw["scores"])

    def events(self, limit: int = 50) -> list[dict]:
        with self.engine.connect() as conn:
            q = select(alias_events).order_by(alias_events.c.id.desc()).limit(limit)
            return [dict(r) for r in conn.execute(q).mappings()]

    def run_record(self, run_id: int) -> dict:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one())

    def dataset_record(self, content_hash: str) -> dict:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(datasets).where(datasets.c.content_hash == content_hash))
                        .mappings().one())

    # -- alias changes -----------------------------------------------------------------------------------
    def promote(self, ref: str = "candidate", force: bool = False, reason: str | None = None,
                evidence: dict | None = None) -> AliasChange:
        """Make `ref` production if it beats production on the frozen test set (or with force and a reason).
        `evidence`: other gates' results (e.g. the feedback slice), recorded beside the test gate's."""
        if force and not (reason and reason.strip()):
            raise ConfigError("--force needs --reason: say why the gate is overridden")
        model = self.model(ref)
        with self.engine.begin() as conn:
            prev = self._by_id(conn, self.alias_target("production", conn))
            if prev is not None and prev.id == model.id:
                raise RegistryError(f"{model.ref} is already production")
            result = None
            if prev is not None:
                try:
                    result = gate(self.test_scores(model.id), self.test_scores(prev.id), self.cfg.alpha)
                except DataError:
                    if not force:
                        raise
            passed = prev is None or force or (result is not None and result.passed)
            conn.execute(insert(alias_events).values(
                alias="production", action="promote" if passed else "rejected", model_id=model.id,
                previous_model_id=prev.id if prev else None, forced=bool(force and not (result and result.passed)),
                reason=reason or ("first production model" if prev is None else None),
                gate={**(result.to_json() if result else {}), **(evidence or {})} or None))
        change = AliasChange("production", "promote" if passed else "rejected", model, prev, force, reason, result)
        if not passed:
            raise GateFailed(change)
        return change

    def reject(self, ref: str, reason: str, evidence: dict | None = None) -> None:
        """Record that `ref` was considered for production and turned down (by a check outside the test gate)."""
        model = self.model(ref)
        with self.engine.begin() as conn:
            prev = self.alias_target("production", conn)
            conn.execute(insert(alias_events).values(alias="production", action="rejected", model_id=model.id,
                                                     previous_model_id=prev, forced=False, reason=reason,
                                                     gate=evidence))

    def rollback(self, reason: str | None = None) -> AliasChange:
        """Restore the production model that was in place before the current one."""
        with self.engine.begin() as conn:
            stack = self.production_stack(conn)
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: production has no earlier model")
            current, previous = self._by_id(conn, stack[-1]), self._by_id(conn, stack[-2])
            conn.execute(insert(alias_events).values(
                alias="production", action="rollback", model_id=previous.id, previous_model_id=current.id,
                forced=False, reason=reason))
        return AliasChange("production", "rollback", previous, current, False, reason, None)


class GateFailed(RegistryError):
    def __init__(self, change: AliasChange):
        self.change = change
        super().__init__(f"not promoted: {change.model.ref} does not beat production {change.previous.ref}: "
                         f"{change.gate.summary()} (override with --force --reason)")


def open_registry(cfg: RegistryConfig | None = None) -> Registry:
    return Registry(cfg or RegistryConfig())
