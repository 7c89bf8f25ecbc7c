"""Fictitious values for the PII test set (tests/data/pii_cases.jsonl, written by make_pii_cases.py).

Phone numbers are phonenumbers' own example numbers per region with the last digits varied and kept only when
the library still says valid; IBANs get their check digits from python-stdnum; cards are issuers' published
test numbers or random Luhn-valid digits; SSNs follow the SSA's issuing rules; keys are random characters in
each provider's documented shape. Nothing is copied from real people or real credentials."""

from __future__ import annotations

import base64
import json
import random
import re
import string

import phonenumbers as pn
from stdnum import iban, luhn
from stdnum.us import ssn

PHONE_REGIONS = ["US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "BE", "SE", "NO", "DK", "FI", "PL", "CH",
                 "AT", "PT", "AU", "NZ", "IN", "JP", "BR", "MX", "ZA", "SG", "KR", "AR", "CZ", "GR"]
_FMT = pn.PhoneNumberFormat
ALNUM = string.ascii_letters + string.digits


def rand(rnd: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rnd.choice(alphabet) for _ in range(n))


def phone(rnd: random.Random, region: str, mobile: bool) -> pn.PhoneNumber:
    kind = pn.PhoneNumberType.MOBILE if mobile else pn.PhoneNumberType.FIXED_LINE
    base = pn.example_number_for_type(region, kind)
    digits = str(base.national_number)
    for _ in range(200):
        tail = rand(rnd, 3, string.digits)
        num = pn.PhoneNumber(country_code=base.country_code, national_number=int(digits[:-3] + tail),
                             italian_leading_zero=base.italian_leading_zero,
                             number_of_leading_zeros=base.number_of_leading_zeros)
        if pn.is_valid_number(num):
            return num
    return base


def phone_text(rnd: random.Random, num: pn.PhoneNumber, international: bool) -> str:
    """Written the way people write numbers: the library's format, sometimes with dots, dashes or run together."""
    text = pn.format_number(num, _FMT.INTERNATIONAL if international else _FMT.NATIONAL)
    style = rnd.random()
    if international and style < 0.15:
        return pn.format_number(num, _FMT.E164)
    if style < 0.3 and "(" not in text:
        return re.sub(r"[ -]", rnd.choice(["-", "."]), text)
    return text


def luhn_number(rnd: random.Random, prefix: str, length: int) -> str:
    body = prefix + rand(rnd, length - len(prefix) - 1, string.digits)
    return body + luhn.calc_check_digit(body)


TEST_CARDS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "4242424242424242",
              "5105105105105100", "3530111333300000", "2223003122003222", "4012888888881881", "371449635398431"]


def card(rnd: random.Random) -> str:
    prefix = rnd.choice(["4", "51", "55", "2221", "6011", "34", "37"])
    number = rnd.choice(TEST_CARDS) if rnd.random() < 0.4 else luhn_number(
        rnd, prefix, 15 if prefix in ("34", "37") else 16)  # Amex: 15 digits; the others here: 16
    sep = rnd.choice(["", " ", "-"])
    if len(number) == 15:  # Amex groups 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


IBAN_COUNTRIES = ["DE", "GB", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "PL", "SE", "IE", "PT", "DK", "FI", "NO"]


def _bban(rnd: random.Random, structure: str) -> str:
    out, i = [], 0
    while i < len(structure):
        j = structure.index("!", i)
        n, kind = int(structure[i:j]), structure[j + 1]
        out.append(rand(rnd, n, {"n": string.digits, "a": string.ascii_uppercase,
                                 "c": string.ascii_uppercase + string.digits}[kind]))
        i = j + 2
    return "".join(out)


def iban_number(rnd: random.Random, country: str) -> str:
    structure = dict(iban._ibandb.info(country + "00")[0][1])["bban"]
    for _ in range(500):
        bban = _bban(rnd, structure)
        number = country + iban.calc_check_digits(country + "00" + bban) + bban
        if iban.is_valid(number):
            return number
    raise ValueError(f"no valid IBAN generated for {country}")


def iban_text(rnd: random.Random, number: str) -> str:
    text = iban.format(number) if rnd.random() < 0.6 else number
    return text.lower() if rnd.random() < 0.3 else text


def ssn_number(rnd: random.Random) -> str:
    while True:
        digits = f"{rnd.randint(1, 899):03d}{rnd.randint(1, 99):02d}{rnd.randint(1, 9999):04d}"
        if ssn.is_valid(digits):
            return digits


def ipv4(rnd: random.Random) -> str:
    first = rnd.choice([10, 172, 192, 81, 34, 52, 203, 185, 62, 100])
    return ".".join(str(x) for x in [first, rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(1, 254)])


def ipv6(rnd: random.Random) -> str:
    groups = [rand(rnd, rnd.randint(1, 4), "0123456789abcdef") for _ in range(8)]
    if rnd.random() < 0.5:
        return "2001:db8::" + ":".join(groups[:rnd.randint(1, 3)])
    return ":".join(groups)


FIRST = ["ana", "li.wei", "j.smith", "marta", "o.okafor", "priya", "tom_b", "k.yamada", "sven", "lucia.r", "dev+ci",
         "noreply", "h.muller", "f.dubois", "a.kowalska"]
DOMAINS = ["example.com", "mail.example.org", "example.co.uk", "test.example.de", "example.net", "uni.example.edu",
           "shop.example.fr", "example.io"]


def email(rnd: random.Random) -> str:
    return f"{rnd.choice(FIRST)}{rnd.choice(['', str(rnd.randint(1, 99))])}@{rnd.choice(DOMAINS)}"


def password(rnd: random.Random) -> str:
    word = rnd.choice(["Summer", "Falcon", "river", "Mango", "blue", "Orbit", "Tiger", "maple"])
    return f"{word}{rnd.randint(10, 9999)}{rnd.choice('!#$%&*?@')}{rand(rnd, 2)}"


def provider_key(rnd: random.Random) -> tuple[str, str]:
    """(environment variable a user would put it in, a key in that provider's shape)."""
    b64 = ALNUM + "+/"
    shapes = [
        ("OPENAI_API_KEY", "sk-proj-" + rand(rnd, 48, ALNUM + "_-")),
        ("OPENAI_API_KEY", "sk-" + rand(rnd, 48)),
        ("ANTHROPIC_API_KEY", "sk-ant-api03-" + rand(rnd, 80, ALNUM + "_-") + "AA"),
        ("HF_TOKEN", "hf_" + rand(rnd, 34)),
        ("GITHUB_TOKEN", "ghp_" + rand(rnd, 36)),
        ("GH_TOKEN", "github_pat_" + rand(rnd, 22) + "_" + rand(rnd, 59)),
        ("AWS_ACCESS_KEY_ID", "AKIA" + rand(rnd, 16, string.ascii_uppercase + string.digits)),
        ("AWS_SECRET_ACCESS_KEY", rand(rnd, 40, b64)),
        ("SLACK_BOT_TOKEN", f"xoxb-{rand(rnd, 12, string.digits)}-{rand(rnd, 13, string.digits)}-{rand(rnd, 24)}"),
        ("STRIPE_SECRET_KEY", "sk_live_" + rand(rnd, 24)),
        ("STRIPE_API_KEY", "sk_test_" + rand(rnd, 99)),
        ("SENDGRID_API_KEY", f"SG.{rand(rnd, 22, ALNUM + '_-')}.{rand(rnd, 43, ALNUM + '_-')}"),
        ("GOOGLE_API_KEY", "AIza" + rand(rnd, 35, ALNUM + "_-")),
        ("GITLAB_TOKEN", "glpat-" + rand(rnd, 20, ALNUM + "_-")),
        ("NPM_TOKEN", "npm_" + rand(rnd, 36)),
        ("DATABASE_PASSWORD", password(rnd)),
    ]
    return rnd.choice(shapes)


def jwt(rnd: random.Random) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"sub": rand(rnd, 10, string.digits), "name": rnd.choice(FIRST),
              "iat": rnd.randint(1_600_000_000, 1_800_000_000)}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{rand(rnd, 43, ALNUM + '_-')}"


def pem_block(rnd: random.Random) -> str:
    kind = rnd.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY"])
    body = "\n".join(rand(rnd, 64, ALNUM + "+/") for _ in range(3))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"
