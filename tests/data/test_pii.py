import importlib.util
import random
from pathlib import Path

import pytest

from tests.data.make_pii_cases import positives
from tests.data.pii_negatives import negatives
from tunewise.config import parse_config
from tunewise.data.pii import PiiDetector, find_pii, make_detector, redact, redact_text
from tunewise.data.pii_eval import PiiCase, load_cases, score_cases
from tunewise.errors import ConfigError, DataError

CASES = Path(__file__).with_name("pii_cases.jsonl")
MACHINE_KINDS = ["card", "email", "iban", "ip", "phone", "secret", "ssn"]


def kinds(text: str, region: str = "US") -> list[str]:
    return [h.kind for h in find_pii(text, region)]


@pytest.fixture(scope="module")
def scores():
    return score_cases(load_cases(CASES))


def test_case_set_is_large_and_varied():
    cases = load_cases(CASES)
    pos = [c for c in cases if c.kinds]
    phone_regions = {c.region for c in pos if "phone" in c.kinds}
    assert len(pos) >= 300 and len(cases) - len(pos) >= 200 and len(phone_regions) >= 25
    assert {k for c in pos for k in c.kinds} == set(MACHINE_KINDS)


def test_case_file_is_what_the_generator_writes():
    rnd = random.Random(20240501)
    generated = positives(rnd) + negatives(rnd)
    on_disk = load_cases(CASES)
    assert [c["text"] for c in generated] == [c.text for c in on_disk]


def test_recall_on_machine_shaped_kinds_is_at_least_95_percent(scores):
    assert scores.recall() >= 0.95, scores.missed
    for kind in MACHINE_KINDS:
        assert scores.recall(kind) >= 0.9, (kind, [m for m in scores.missed if m[0] == kind])


def test_hard_negatives_stay_clean_and_hits_are_precise(scores):
    assert scores.negatives >= 200
    assert scores.negative_precision() >= 0.98, scores.false_alarms
    for kind in MACHINE_KINDS:
        assert scores.precision(kind) >= 0.95, (kind, [f for f in scores.false_alarms if f[0] == kind])


@pytest.mark.parametrize("text", ["+46 8 123 456 78", "+32 2 555 12 34", "+61 3 9123 4567"])
def test_international_numbers_with_a_one_digit_area_code_are_phones_in_any_region(text):
    for region in ("US", "DE"):
        assert [(h.kind, h.start, h.end) for h in find_pii(f"ring {text} today", region)] == [
            ("phone", 5, 5 + len(text))]


def test_national_numbers_are_read_in_the_configured_region():
    assert kinds("my mobile is 07911 123456", "GB") == ["phone"]
    assert kinds("my mobile is 07911 123456", "US") == []  # not a US number: set data.pii_region
    assert kinds("call (415) 555-2671", "US") == ["phone"]


def test_an_invoice_or_order_number_is_not_a_phone():
    for text in ("invoice no. 4155552671", "Invoice #4155552671 paid", "order number is 4155552671"):
        assert kinds(text) == [], text
    assert kinds("call me at 4155552671") == ["phone"]


@pytest.mark.parametrize("text, redacted", [
    ("export OPENAI_API_KEY=sk-proj-Xy7Qb2LmN9vT4kR8sW1zA5cD3eF6gH0j now",
     "export OPENAI_API_KEY=<SECRET> now"),
    ("SECRET_KEY = 'django-insecure-7f$k2q!x9m#p4w8z'", "SECRET_KEY = '<SECRET>'"),
    ("STRIPE_WEBHOOK_SECRET: whsec_4fJ8kQ2mX9vB7nR3tY6wZ1pL", "STRIPE_WEBHOOK_SECRET: <SECRET>"),
    ("my token is hf_QwErTyUiOpAsDfGhJkLzXcVbNm12345678, is it valid?",
     "my token is <SECRET>, is it valid?"),
    ("Authorization: Bearer sk-ant-api03-Zq9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe", "Authorization: Bearer <SECRET>"),
    ('{"password": "Tr0ub4dor&3xyz"}', '{"password": "<SECRET>"}'),
])
def test_secrets_are_redacted_and_their_names_kept(text, redacted):
    assert redact_text(text) == redacted


def test_prose_about_passwords_and_hashes_is_not_a_secret():
    for text in ("I forgot my password: how do I reset it?", "My password doesn't work.", "password expired?",
                 "Author: J.R.R. Tolkien", "Secretary: J.Smith", "run pwd /home/user", "the api key is invalid"):
        assert kinds(text) == [], text
    assert kinds("login ana password Summer2024!") == ["secret"]
    assert kinds("fixed in commit 3f9a2c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39") == []


def test_ibans_in_any_case_and_ssns_with_spaces():
    assert kinds("iban de89 3704 0044 0532 0130 00 please") == ["iban"]
    assert kinds("IBAN DE89370400440532013000.") == ["iban"]
    assert kinds("ssn 123 45 6789") == ["ssn"] and kinds("SSN is 123456789") == ["ssn"]


def test_each_kind_is_found_and_redacted_with_its_placeholder():
    text = (
        "mail ann.lee@example.co.uk, call (415) 555-2671 or +44 20 7946 0958, card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6789, host 192.168.1.20 or 2001:db8::1, "
        "key AKIAIOSFODNN7EXAMPLE"
    )
    assert kinds(text) == ["email", "phone", "phone", "card", "iban", "ssn", "ip", "ip", "secret"]
    assert redact(text, find_pii(text)) == (
        "mail <EMAIL>, call <PHONE> or <PHONE>, card <CARD>, IBAN <IBAN>, SSN <SSN>, host <IP> or <IP>, "
        "key <SECRET>"
    )


def test_checksums_and_rules_reject_lookalikes():
    assert kinds("card 4111 1111 1111 1112") == []  # fails Luhn
    assert kinds("iban GB82 WEST 1234 5698 7654 33") == []  # fails mod-97
    assert kinds("ssn 666-45-6789") == []  # area 666 is never issued
    assert kinds("version 999.1.1.1 at 12:30:45") == []  # not an IP, a time is not IPv6
    assert kinds("I was charged 25.00 twice on 2024-01-05, ref 123456") == []


def test_a_private_key_block_is_redacted_whole():
    text = "oops:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAx7\nQ2w9\n-----END RSA PRIVATE KEY-----\nbye"
    assert redact_text(text) == "oops:\n<SECRET>\nbye"


def test_unknown_region_and_engine_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="data.pii_region"):
        PiiDetector(region="XX")
    with pytest.raises(ConfigError, match="data.pii_engine"):
        make_detector("spacy-magic")
    cfg = parse_config({"data": {"builtin": "bbc_news", "pii_region": "GB", "pii_engine": "builtin"}})
    assert cfg.data.pii_region == "GB"


@pytest.mark.skipif(importlib.util.find_spec("presidio_analyzer") is not None, reason="presidio is installed")
def test_presidio_engine_without_the_extra_says_which_install_fixes_it():
    with pytest.raises(ConfigError, match=r"pip install 'tunewise\[presidio\]'"):
        make_detector("presidio")


def test_a_case_whose_value_is_not_in_its_text_is_refused():
    with pytest.raises(DataError, match="not in its text"):
        score_cases([PiiCase("call me", ["phone"], ["+1 415 555 2671"])])
