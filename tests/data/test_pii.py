from tunewise.data.pii import find_pii, redact, redact_text


def kinds(text: str) -> list[str]:
    return [h.kind for h in find_pii(text)]


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


def test_secret_shapes():
    assert kinds("token ghp_" + "a" * 36) == ["secret"]
    assert kinds("api_key = 'abcd1234efgh5678'") == ["secret"]
    assert kinds("-----BEGIN RSA PRIVATE KEY-----") == ["secret"]


def test_redact_text_is_find_then_redact():
    assert redact_text("mail ann@example.com now") == "mail <EMAIL> now"
    assert redact_text("nothing here") == "nothing here"
