"""Personal data and secrets: find them, then report, redact (typed placeholders) or drop per policy.

    >>> detector = PiiDetector(region="GB")
    >>> redact("call 07911 123456", detector.find("call 07911 123456"))
    'call <PHONE>'

Each kind comes from a maintained library where one exists: phone numbers from phonenumbers'
PhoneNumberMatcher (national numbers of `data.pii_region`, international +CC numbers of every country),
secrets from detect-secrets' plugins (tunewise/data/pii_secrets.py), IBAN / SSN / card checksums from
python-stdnum, IPs validated by ipaddress. Cheap prefilters keep the libraries' costly calls off rows that
cannot match (speed: docs/data_doctor.md, "PII and secrets"). `data.pii_engine: presidio` adds names, places
and dates of birth (tunewise/data/pii_presidio.py)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher
from stdnum import iban, luhn
from stdnum.us import ssn

from tunewise.data.pii_secrets import find_secrets
from tunewise.errors import ConfigError

PLACEHOLDER = {"email": "<EMAIL>", "phone": "<PHONE>", "card": "<CARD>", "iban": "<IBAN>", "ssn": "<SSN>",
               "ip": "<IP>", "secret": "<SECRET>", "name": "<NAME>", "address": "<ADDRESS>",
               "date_of_birth": "<DATE_OF_BIRTH>"}
NOT_DETECTED = {
    "builtin": "personal names, postal addresses, dates of birth, national IDs other than US SSNs (9 digits "
               "without separators only after the word SSN), phone numbers written in a national format of a "
               "country other than data.pii_region (international +CC numbers are found for every country), "
               "8-digit phone numbers written with dots (read as IPv4 addresses), hex strings such as hashes (not "
               "treated as secrets), secrets of unknown providers assigned to names without key/secret/token/"
               "password/auth in them, letters-only passwords under 16 characters, and anything inside images or "
               "encoded text",
    "presidio": "national IDs other than US SSNs, phone numbers written in a national format of a country other "
                "than data.pii_region, 8-digit phone numbers written with dots, hex strings such as hashes, "
                "letters-only passwords under 16 characters, names and places the spaCy model misses "
                "(it is statistical: rare or lower-case names slip through), dates of birth written without "
                "a word such as born/birth/DOB before them, and anything inside images or encoded text",
}

_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")  # no parser finds them in prose
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,3})?"
                   r"(?![A-Za-z0-9])")
# Cards as people write them: run together, or grouped 4-4-4-4(-3) / Amex 4-6-5 with one separator; issuer
# ranges 2-6 (Mastercard, Amex/JCB/Diners, Visa, Mastercard, Discover/UnionPay). Other groupings are order ids.
_CARD = re.compile(r"(?<![\w+-])(?:[2-6]\d{12,18}|[2-6]\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"
                   r"|3\d{3}([ -])\d{6}\2\d{4,5})(?![\w-])")
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
_SSN_NAMED = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\W{0,3}(?:is\W{1,2})?(\d{9})(?!\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)(?!\w)")
_IPV6 = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{3,39}(?![\w:])")
_VERSION_BEFORE = re.compile(r"(?i)(?:version|ver\.|build|release|v)\s*$")
# A digit run right after one of these words is a reference, not a phone ("invoice no. 4155552671").
_REFERENCE_BEFORE = re.compile(
    r"(?i)(?:#|\b(?:invoice|inv|order|ref|reference|tracking|account|acct|transaction|txn|confirmation|receipt|"
    r"po|case|ticket|id|serial|policy|claim|booking|customer|member|shipment|parcel|isbn|sku|item|part|model)"
    r"(?:\s*(?:no\.?|nr\.?|number|num|id|#|code))?(?:\s+is)?[\s:#.-]*)$"
)
# phonenumbers skips slash dates but not dotted or dashed ones, nor decimals, which are valid numbers in e.g. DE.
_NOT_PHONE = re.compile(r"\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d|(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}"
                        r"|(?:[1-9]\d{0,2}|0)\.\d+")  # a decimal: "0.706811", "133.431332"; "030.123803" is not
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class PiiHit:
    kind: str
    start: int
    end: int


def _has_seven_digits(text: str) -> bool:
    return len(_DIGIT.findall(text)) >= 7  # findall runs in C: ~2 µs a short row, half an anchored (\D*\d){7}


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def _iban_spans(text: str) -> list[tuple[int, int]]:
    """IBANs in any case, grouped by spaces or not; a match that fails mod-97 is retried without its last
    group, so a word or number written after the IBAN does not hide it."""
    out = []
    for m in _IBAN.finditer(text):
        cand = m.group()
        while len(cand) >= 15:
            if iban.is_valid(cand):
                out.append((m.start(), m.start() + len(cand)))
                break
            cut = max(cand.rfind(" "), cand.rfind("-"))
            cand = cand[:cut] if cut > 0 else cand[:-1]
    return out


def _card_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _CARD.finditer(text) if luhn.is_valid(re.sub(r"\D", "", m.group()))]


def _ssn_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _SSN.finditer(text) if ssn.is_valid(re.sub(r"\D", "", m.group()))]
    return spans + [m.span(1) for m in _SSN_NAMED.finditer(text) if ssn.is_valid(m.group(1))]


def _ip_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _IPV4.finditer(text)
             if _is_ip(m.group()) and not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start())]
    if ":" in text:
        spans += [m.span() for m in _IPV6.finditer(text) if _is_ip(m.group())]
    return spans


def _email_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _EMAIL.finditer(text)] if "@" in text else []


def _secret_spans(text: str) -> list[tuple[int, int]]:
    return [(s.start, s.end) for s in find_secrets(text)]


@dataclass
class PiiDetector:
    """Finds PII and secrets in one string. `region`: where national-format phone numbers are read from
    (ISO 3166 code, e.g. "US", "GB", "DE"); `extra`: more finders (Presidio) run after the built-in ones."""

    region: str = "US"
    engine: str = "builtin"
    extra: Callable[[str], list[PiiHit]] | None = None

    def __post_init__(self) -> None:
        if self.region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"data.pii_region: {self.region!r} is not a region phonenumbers knows; use an ISO "
                              "3166 code such as US, GB, DE, IN")

    def _phone_spans(self, text: str) -> list[tuple[int, int]]:
        # VALID: a real number of `region` however its digits are grouped ("0791 112 3456"); a match under 7
        # digits is a short code or a piece of a longer number (DE accepts 4-digit numbers).
        return [(m.start, m.end) for m in PhoneNumberMatcher(text, self.region, leniency=Leniency.VALID)
                if len(_DIGIT.findall(m.raw_string)) >= 7 and not _NOT_PHONE.fullmatch(m.raw_string)
                and not _REFERENCE_BEFORE.search(text, max(0, m.start - 30), m.start)]

    def find(self, text: str) -> list[PiiHit]:
        """Non-overlapping hits sorted by position; a kind listed earlier wins an overlap (a card number is not
        also a phone, a key inside a URL is a secret, not an e-mail)."""
        finders: list[tuple[str, Callable[[str], list[tuple[int, int]]]]] = [
            ("secret", _secret_spans), ("email", _email_spans)]
        if _has_seven_digits(text):  # every IBAN, card, SSN, IPv4 and phone number has at least 7 digits
            finders += [("iban", _iban_spans), ("card", _card_spans), ("ssn", _ssn_spans), ("ip", _ip_spans),
                        ("phone", self._phone_spans)]
        elif text.count(":") >= 2:
            finders.append(("ip", _ip_spans))  # an IPv6 address may have fewer digits ("2001:db8::1", "fe80::a")
        hits: list[PiiHit] = []
        for kind, finder in finders:
            if kind == "phone" and hits:
                # PhoneNumberMatcher costs ~2 ms a call: give it only the digits no earlier kind has claimed
                # (offsets kept), and skip it when fewer than 7 remain.
                text_left = _masked(text, hits)
                spans = finder(text_left) if _has_seven_digits(text_left) else []
            else:
                spans = finder(text)
            for start, end in sorted(spans):
                _add(hits, PiiHit(kind, start, end))
        for hit in self.extra(text) if self.extra else []:
            _add(hits, hit)
        return sorted(hits, key=lambda h: h.start)


def _masked(text: str, hits: list[PiiHit]) -> str:
    chars = list(text)
    for h in hits:
        chars[h.start:h.end] = " " * (h.end - h.start)
    return "".join(chars)


def _add(hits: list[PiiHit], new: PiiHit) -> None:
    """Adds `new` unless it overlaps a hit already found; hits of one kind that overlap are merged."""
    for i, h in enumerate(hits):
        if new.start < h.end and h.start < new.end:
            if h.kind == new.kind:
                hits[i] = PiiHit(h.kind, min(h.start, new.start), max(h.end, new.end))
            return
    hits.append(new)


def make_detector(engine: str = "builtin", region: str = "US") -> PiiDetector:
    """The detector `data.pii_engine` / `data.pii_region` ask for; presidio raises ConfigError when its extra or
    a spaCy model is missing."""
    if engine == "builtin":
        return PiiDetector(region=region)
    if engine == "presidio":
        from tunewise.data.pii_presidio import presidio_finder  # heavy: spaCy

        return PiiDetector(region=region, engine=engine, extra=presidio_finder(PiiHit))
    raise ConfigError(f"data.pii_engine: unknown engine {engine!r}; use builtin or presidio")


_DEFAULT: dict[str, PiiDetector] = {}


def find_pii(text: str, region: str = "US") -> list[PiiHit]:
    """`PiiDetector(region).find(text)` with the built-in engine (one detector kept per region)."""
    if region not in _DEFAULT:
        _DEFAULT[region] = PiiDetector(region=region)
    return _DEFAULT[region].find(text)


def redact(text: str, hits: list[PiiHit]) -> str:
    out, pos = [], 0
    for h in hits:
        out += [text[pos:h.start], PLACEHOLDER[h.kind]]
        pos = h.end
    return "".join(out) + text[pos:]


def redact_text(text: str, region: str = "US") -> str:
    """Find and redact in one call: what the server's request log uses (tunewise/serve/log.py)."""
    return redact(text, find_pii(text, region))
