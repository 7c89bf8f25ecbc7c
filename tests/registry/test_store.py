import pytest

from tests.fixtures.runs import fake_run
from tunewise.errors import ConfigError, DataError
from tunewise.registry import GateFailed, RegistryError

WEAK = [i % 2 == 0 for i in range(40)]  # 50 %
STRONG = [i % 10 != 0 for i in range(40)]  # 90 %, right wherever WEAK is right
WORSE = [i % 4 == 0 for i in range(40)]  # 25 %


def test_register_records_lineage_and_makes_candidate(registry, tmp_path):
    m = registry.register_run(fake_run(tmp_path, "clf", WEAK))
    assert (m.name, m.version, m.kind) == ("clf", 1, "adapter")
    assert (m.artifact_path / "adapter_config.json").is_file()
    assert registry.aliases() == {"production": None, "candidate": m.id}
    ds = registry.dataset_record(m.dataset_hash)
    assert ds["card"]["counts"]["test"] == 40 and (ds["path"] and "datasets" in ds["path"])
    assert registry.run_record(m.run_id)["config"]["name"] == "clf"
    m2 = registry.register_run(fake_run(tmp_path, "clf2", STRONG), name="clf", parent_id=m.id)
    assert (m2.version, m2.parent_id) == (2, m.id)
    assert registry.model("clf").id == m2.id and registry.model("clf:v1").id == m.id


def test_first_promotion_needs_no_gate_then_gate_decides(registry, tmp_path):
    registry.register_run(fake_run(tmp_path, "a", WEAK), name="clf")
    first = registry.promote()
    assert first.gate is None and registry.model("production").version == 1
    registry.register_run(fake_run(tmp_path, "b", WORSE), name="clf")
    with pytest.raises(GateFailed, match="does not beat production"):
        registry.promote()
    assert registry.model("production").version == 1  # unchanged
    assert registry.events()[0]["action"] == "rejected" and registry.events()[0]["gate"]["difference"] < 0
    registry.register_run(fake_run(tmp_path, "c", STRONG), name="clf")
    change = registry.promote(reason="better")
    assert change.gate.passed and change.gate.difference == pytest.approx(0.4)
    assert registry.model("production").version == 3


def test_force_needs_reason_and_is_recorded(registry, tmp_path):
    registry.register_run(fake_run(tmp_path, "a", STRONG), name="clf")
    registry.promote()
    registry.register_run(fake_run(tmp_path, "b", WORSE), name="clf")
    with pytest.raises(ConfigError, match="--reason"):
        registry.promote(force=True)
    registry.promote(force=True, reason="hotfix for a legal issue")
    ev = registry.events()[0]
    assert (ev["action"], ev["forced"], ev["reason"]) == ("promote", True, "hotfix for a legal issue")
    assert registry.model("production").version == 2


def test_rollback_walks_back_through_history(registry, tmp_path):
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    for i, correct in enumerate([WORSE, WEAK, STRONG]):
        registry.register_run(fake_run(tmp_path, f"r{i}", correct), name="clf")
        registry.promote()
    assert registry.model("production").version == 3
    change = registry.rollback(reason="latency regression")
    assert (change.model.version, change.previous.version) == (2, 3)
    assert registry.model("production").version == 2
    registry.rollback()
    assert registry.model("production").version == 1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()


def test_different_test_sets_refuse_promotion(registry, tmp_path):
    registry.register_run(fake_run(tmp_path, "a", WEAK), name="clf")
    registry.promote()
    other = [(f"other {i}", "positive") for i in range(40)]
    registry.register_run(fake_run(tmp_path, "b", STRONG, rows=other), name="clf")
    with pytest.raises(DataError, match="different test sets"):
        registry.promote()
    registry.promote(force=True, reason="new frozen test set agreed with the team")
    assert registry.model("production").version == 2


@pytest.mark.parametrize("ref", ["../etc", "a/b", "x" * 70, "", "clf:v-1", "..", "a b"])
def test_bad_model_references_are_rejected(registry, ref):
    with pytest.raises(ConfigError, match="not a valid model name"):
        registry.model(ref)


def test_unknown_model_and_missing_run_files(registry, tmp_path):
    with pytest.raises(RegistryError, match="not registered"):
        registry.model("nope")
    with pytest.raises(RegistryError, match="no model is production"):
        registry.model("production")
    run = fake_run(tmp_path, "a", WEAK)
    (run / "predictions.jsonl").unlink()
    with pytest.raises(DataError, match="predictions.jsonl: missing"):
        registry.register_run(run)
