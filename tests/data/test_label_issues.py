"""tunewise.data.label_issues through check/prepare: deliberately flipped labels in a small support-ticket set
are found, quarantined under `drop`, left alone under `off`, and too-small classes are skipped with a note."""

import html
import json
import random
import re

from tunewise.config import parse_config
from tunewise.data import check, prepare
from tunewise.data.label_issues import ISSUE_KIND, detect
from tunewise.data.records import classification_record

TOPICS = {
    "billing": (["I was charged twice for", "why is there an extra fee on", "please refund the payment for",
                 "my invoice is wrong for", "the price went up on", "cancel the charge for"],
                ["my monthly plan", "the annual subscription", "last month's bill", "order 4471", "the premium tier",
                 "my card ending 0042", "the family bundle"]),
    "delivery": (["my parcel never arrived for", "the courier lost", "tracking has not moved for",
                  "the box came damaged with", "can you speed up shipping of", "wrong address on the label of"],
                 ["the blue sofa", "my new headphones", "the kitchen chairs", "a birthday present",
                  "the replacement router", "two garden lamps", "the winter boots"]),
    "account": (["I cannot log in to", "reset the password of", "how do I change the email on",
                 "someone else is using", "please delete", "two-factor codes do not reach"],
                ["my profile", "the shared family login", "my old username", "the business account",
                 "my daughter's account", "the admin user", "my work login"]),
}
FLIPS = 6  # rows whose label is deliberately replaced by another topic


def _tickets(seed: int = 0, per_class: int = 30) -> tuple[list[dict], dict[int, str]]:
    """Short support tickets as a user would export them (text + label); returns the rows and, for each flipped
    row's line number, the label it had before the flip."""
    rnd = random.Random(seed)
    rows = []
    for label, (issues, things) in TOPICS.items():
        pairs = rnd.sample([(i, t) for i in issues for t in things], per_class)
        rows += [{"text": f"{issue} {thing}", "label": label} for issue, thing in pairs]
    rnd.shuffle(rows)
    flipped = {}
    for i in rnd.sample(range(len(rows)), FLIPS):
        flipped[i + 1] = rows[i]["label"]  # JSONL lines are 1-based
        rows[i]["label"] = rnd.choice([k for k in TOPICS if k != rows[i]["label"]])
    return rows, flipped


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cfg(tmp_path, rows, policy="report", **data):
    _write(tmp_path / "tickets.jsonl", rows)
    return parse_config({
        "model": {"base": str(tmp_path / "no-model")},  # no tokenizer: token checks are skipped, labels are not
        "seed": 1,
        "data": {"paths": [str(tmp_path / "tickets.jsonl")], "label_issues": policy,
                 "split": {"val": 0.1, "test": 0.1}, **data},
    })


def test_flipped_labels_are_found_and_clean_rows_are_mostly_not_flagged(tmp_path):
    rows, flipped = _tickets()
    card = check(_cfg(tmp_path, rows), tmp_path / "out")
    found = card.label_issues
    flagged = {i["line"] for i in found["issues"]}
    assert len(flipped) == FLIPS
    assert found["checked"] == len(rows) == card.counts["usable"]  # nothing deduplicated away
    assert len(flagged & flipped.keys()) >= FLIPS - 1  # recall ≥ 5/6
    assert len(flagged - flipped.keys()) <= 3  # ≤ 3 of the 84 clean rows flagged
    assert found["count"] == len(found["issues"]) and found["folds"] == 5
    by_line = {i["line"]: i for i in found["issues"]}
    right = [line for line in flagged & flipped.keys() if by_line[line]["suggested"] == flipped[line]]
    assert len(right) >= FLIPS - 1  # the suggestion is the label the row had before the flip
    assert all(by_line[line]["given"] == rows[line - 1]["label"] for line in flagged)
    assert all(0 <= i["p_given"] < i["p_suggested"] <= 1 for i in found["issues"][:3])
    # report keeps every row, and says so on the card
    assert card.counts["quarantined"] == 0 and (tmp_path / "out" / "quarantine.jsonl").read_text() == ""
    assert any("look mislabelled" in w and "report" in w for w in card.warnings)
    page = html.unescape((tmp_path / "out" / "card.html").read_text())
    assert 'id="label-issues"' in page and by_line[min(flagged)]["text"] in page
    saved = json.loads((tmp_path / "out" / "card.json").read_text())
    assert saved["label_issues"]["count"] == found["count"]


def test_drop_quarantines_the_flagged_training_rows_with_the_suggestion_as_reason(tmp_path):
    rows, flipped = _tickets()
    data = prepare(_cfg(tmp_path, rows, "drop"))
    found = data.card.label_issues
    assert found["scope"] == "training rows" and found["checked"] == len(data.train) + found["count"]
    dropped = [r for r in data.rejected if r.reason.startswith("label_issue: suggested ")]
    assert len(dropped) == found["count"] > 0
    assert all(r.field == "label" and "(p=0." in r.reason for r in dropped)
    assert {r.line for r in dropped} == {i["line"] for i in found["issues"]}
    kept_lines = {r.meta["line"] for r in data.train + data.val + data.test}
    assert not kept_lines & {r.line for r in dropped}
    # the flips that landed in train are gone from it
    train_flips = flipped.keys() - {r.meta["line"] for r in data.val + data.test}
    assert len(train_flips & {r.line for r in dropped}) >= len(train_flips) - 1
    assert len({r.line for r in dropped} - flipped.keys()) <= 3
    assert data.card.quarantine["by_reason"] == {ISSUE_KIND: found["count"]}
    assert data.card.counts["usable"] == len(data.train) + len(data.val) + len(data.test)
    summary = data.summary()
    assert summary["label_issues"]["count"] == found["count"] and summary["counts"]["quarantined"] == len(dropped)
    data.write(tmp_path / "run")
    quarantined = [json.loads(x) for x in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    assert [q["line"] for q in quarantined] == [r.line for r in dropped]


def test_drop_in_check_leaves_the_flagged_rows_out_of_the_clean_file(tmp_path):
    rows, _ = _tickets()
    card = check(_cfg(tmp_path, rows, "drop"), tmp_path / "out", tmp_path / "out" / "clean.jsonl")
    clean = [json.loads(x) for x in (tmp_path / "out" / "clean.jsonl").read_text().splitlines()]
    flagged = {i["line"] for i in card.label_issues["issues"]}
    assert len(clean) == len(rows) - len(flagged) == card.counts["usable"]
    assert not flagged & {r["meta"]["line"] for r in clean}
    assert card.counts["quarantined"] == len(flagged) > 0


def test_drop_of_every_row_of_a_class_leaves_the_label_counts_whole(tmp_path):
    rows, _ = _tickets()
    rows += [{"text": "I was charged twice for the gold plan", "label": "sales"},  # billing texts under a 4th label
             {"text": "cancel the charge for my yearly plan", "label": "sales"}]
    card = check(_cfg(tmp_path, rows, "drop"), tmp_path / "out")
    assert {i["line"] for i in card.label_issues["issues"]} >= {len(rows) - 1, len(rows)}
    assert "sales" not in card.labels["counts"] and sum(card.labels["counts"].values()) == card.counts["usable"]
    assert card.labels["imbalance_ratio"] < 2


def test_off_looks_at_nothing_and_drops_nothing(tmp_path):
    rows, _ = _tickets()
    data = prepare(_cfg(tmp_path, rows, "off"))
    assert data.card.label_issues == {} and data.rejected == []
    assert "label_issues" not in data.summary()
    assert len(data.train) + len(data.val) + len(data.test) == len(rows)
    card = check(_cfg(tmp_path, rows, "off"), tmp_path / "out")
    assert card.label_issues == {} and "Likely label errors" not in (tmp_path / "out" / "card.html").read_text()


def test_a_class_with_a_single_row_skips_the_check_with_a_note(tmp_path):
    rows, _ = _tickets()
    rows.append({"text": "do you sell gift vouchers", "label": "sales"})
    card = check(_cfg(tmp_path, rows, "drop"), tmp_path / "out")
    found = card.label_issues
    assert found["count"] == 0 and found["issues"] == [] and card.counts["quarantined"] == 0
    assert "'sales'" in found["note"] and "fewer than 2 rows" in found["note"]
    shown = re.search(r'id="label-issues-note">(.*?)</p>', (tmp_path / "out" / "card.html").read_text())
    assert html.unescape(shown.group(1)) == found["note"]


def test_folds_follow_the_smallest_class():
    records = [classification_record(f"{w} question number {i}", w) for w in ("ship", "bill") for i in range(12)]
    records += [classification_record(f"refund wanted {i}", "refund") for i in range(3)]
    assert detect(records, "report", "rows", seed=0).folds == 3
    assert detect(records[:24] + records[24:26], "report", "rows", seed=0).folds == 2


def test_texts_without_a_shared_ngram_are_skipped_with_a_note():
    records = [classification_record(t, y) for t, y in (("?", "a"), ("!", "a"), ("#", "b"), ("%", "b"))]
    found = detect(records, "drop", "rows", seed=0)
    assert found.count == 0 and "no word or character n-gram occurs in two rows" in found.note


def test_generation_tasks_are_not_checked(tmp_path):
    rows = [{"prompt": f"say hi {i}", "completion": f"hi number {i}"} for i in range(30)]
    _write(tmp_path / "gen.jsonl", rows)
    cfg = parse_config({"model": {"base": str(tmp_path / "no-model")}, "task": {"type": "generation"},
                        "data": {"paths": [str(tmp_path / "gen.jsonl")]}})
    assert check(cfg, tmp_path / "out").label_issues == {}
