"""Writes tests/data/pii_cases.jsonl: PII and secrets planted in everyday sentences, and hard negatives.

    python -m tests.data.make_pii_cases [--seed N --out FILE]   # from the repo root; same seed, same file

Each line: {"text", "kinds": kinds planted (in order), "values": the planted substrings (each must be covered by
a hit of its kind), "region": where national phone numbers are read from}. Negatives have empty kinds.

Decided, not detected (negatives): git commit hashes, checksums and UUIDs (public identifiers, not keys; a hash
assigned to a key/secret/token name is a secret), order/invoice/tracking numbers written after their label,
bank sort codes and account numbers (not among the detected kinds)."""

from __future__ import annotations

import argparse
import base64
import json
import random
from pathlib import Path

from tests.data import pii_values as v
from tests.data.pii_negatives import negatives

OUT = Path(__file__).with_name("pii_cases.jsonl")

PHONE = ["You can reach me on {} after 6pm.", "my number is {} if the app keeps failing", "Call {} and ask for the "
         "claims team.", "Please update my phone to {}.", "whatsapp me: {}", "Tel. {} (office), ask for Marta",
         "I tried calling {} three times today", "new mobile {} - please update the account"]
CARD = ["I was charged twice on my card {} yesterday", "card number {} exp 04/27", "Visa {} - is it blocked?",
        "please refund to {}, thanks", "my new card is {} but the app shows the old one"]
IBAN = ["Please send the refund to IBAN {}", "my iban: {} (savings)", "transfer to {} today please",
        "Beneficiary account {} - is that right?"]
SSN = ["SSN {} for the tax form", "my social security number is {}", "ssn: {}, born in Ohio", "SSN# {}"]
IP = ["server {} keeps timing out", "my IP is {} and I'm blocked", "the login came from {} not me",
      "whitelist {} please", "ping {} returns nothing"]
EMAIL = ["email me at {}", "Contact: {}", "my login is {} but reset never arrives", "cc {} on the ticket",
         "From: Ana <{}>"]


def _put(template: str, value: str) -> tuple[str, str]:
    return template.format(value), value


def phone_cases(rnd: random.Random) -> list[dict]:
    cases = []
    for region in v.PHONE_REGIONS:
        for mobile in (True, False):
            for international in (True, False):
                num = v.phone(rnd, region, mobile)
                text, value = _put(rnd.choice(PHONE), v.phone_text(rnd, num, international))
                cases.append({"text": text, "kinds": ["phone"], "values": [value], "region": region})
    return cases


def _secret_forms(rnd: random.Random) -> list[tuple[str, str]]:
    var, key = v.provider_key(rnd)
    while var == "DATABASE_PASSWORD":  # the forms below include bearer and API-key headers: a token shape
        var, key = v.provider_key(rnd)
    low = var.lower()
    user_pw = f"deploy:{v.password(rnd)}"
    return [
        (f"my .env has\n{var}={key}\nDEBUG=false\nand the app still says 401", key),
        (f"config.yaml:\n  {low}: {key}\n  region: eu-west-1", key),
        (f'request body {{"{low}": "{key}", "timeout": 30}} gives a 500', key),
        (f"I ran `export {var}={key}` and python train.py still fails", key),
        (f"curl -H 'Authorization: Bearer {key}' https://api.example.com/v1/models returns 403", key),
        (f"X-API-Key: {key}", key),
        (f"Authorization: Basic {base64.b64encode(user_pw.encode()).decode()}",
         base64.b64encode(user_pw.encode()).decode()),
        (f"here's the token {key}, can you check why it fails?", key),
        (f"{var} = '{key}'", key),
    ]


def secret_cases(rnd: random.Random) -> list[dict]:
    cases = []
    for _ in range(9):
        for text, value in _secret_forms(rnd):
            cases.append({"text": text, "kinds": ["secret"], "values": [value]})
    for _ in range(4):
        pw, token, jwt = v.password(rnd), v.jwt(rnd), v.jwt(rnd)
        aws = v.rand(rnd, 40, v.ALNUM + "+/")
        cases += [
            {"text": f"my password is {pw} if you need to log in", "kinds": ["secret"], "values": [pw]},
            {"text": f"SECRET_KEY = '{(sk := v.rand(rnd, 50, v.ALNUM + '!@#%^&*(-_=+)'))}'", "kinds": ["secret"],
             "values": [sk]},
            {"text": f"STRIPE_WEBHOOK_SECRET: {(wh := 'whsec_' + v.rand(rnd, 32))}", "kinds": ["secret"],
             "values": [wh]},
            {"text": f"session cookie was {token} when it crashed", "kinds": ["secret"], "values": [token]},
            {"text": f"Authorization: Bearer {jwt}", "kinds": ["secret"], "values": [jwt]},
            {"text": f"aws_secret_access_key = {aws}", "kinds": ["secret"], "values": [aws]},
            {"text": f"I pasted my key by mistake:\n{(pem := v.pem_block(rnd))}\nplease delete it",
             "kinds": ["secret"], "values": [pem]},
            {"text": f"git clone https://oauth2:ghp_{(gh := v.rand(rnd, 36))}@github.com/acme/app.git fails",
             "kinds": ["secret"], "values": [f"ghp_{gh}"]},
        ]
    return cases


def _simple(rnd: random.Random, kind: str, templates: list[str], make, n: int, region: str = "US") -> list[dict]:
    out = []
    for _ in range(n):
        text, value = _put(rnd.choice(templates), make(rnd))
        out.append({"text": text, "kinds": [kind], "values": [value], "region": region})
    return out


def _ssn_text(rnd: random.Random) -> str:
    d = v.ssn_number(rnd)
    return rnd.choice([f"{d[:3]}-{d[3:5]}-{d[5:]}", f"{d[:3]} {d[3:5]} {d[5:]}"])


def mixed_cases(rnd: random.Random) -> list[dict]:
    """Several kinds in one message, as support messages often have."""
    out = []
    for _ in range(15):
        mail, num = v.email(rnd), v.phone_text(rnd, v.phone(rnd, "US", True), False)
        ip, card = v.ipv4(rnd), v.card(rnd)
        out.append({"text": f"Hi, it's me ({mail}, {num}). The charge on {card} came from {ip}, not from me.",
                    "kinds": ["email", "phone", "card", "ip"], "values": [mail, num, card, ip], "region": "US"})
    return out


def _case(text: str, kind: str, value: str, region: str = "US") -> dict:
    return {"text": text, "kinds": [kind], "values": [value], "region": region}


def awkward_cases(rnd: random.Random) -> list[dict]:
    """Values glued to punctuation, ports and brackets, or written in less common ways."""
    out = []
    for _ in range(4):
        gb = v.phone_text(rnd, v.phone(rnd, "GB", True), False)
        de = v.phone_text(rnd, v.phone(rnd, "DE", False), True)
        ip4, ip6, hf = v.ipv4(rnd), v.ipv6(rnd), "hf_" + v.rand(rnd, 34)
        card, pw, mail = v.card(rnd).replace(" ", ""), v.password(rnd), v.email(rnd).upper()
        iban = v.iban_number(rnd, rnd.choice(v.IBAN_COUNTRIES)).lower()
        out += [
            _case(f"ring me ({gb}), thanks!", "phone", gb, "GB"),
            _case(f"Büro: {de}.", "phone", de),
            _case(f"it listens on {ip4}:8080 only", "ip", ip4),
            _case(f"curl http://[{ip6}]:443/health hangs", "ip", ip6),
            _case(f"token={hf}.", "secret", hf),
            _case(f"machine api.example.com login ana password {pw}", "secret", pw),
            _case(f"paid with {card}, exp 12/26, and it bounced", "card", card),
            _case(f"IBAN:{iban}.", "iban", iban),
            _case(f"WRITE TO {mail}!", "email", mail),
        ]
    return out


def positives(rnd: random.Random) -> list[dict]:
    cases = phone_cases(rnd) + secret_cases(rnd)
    cases += _simple(rnd, "card", CARD, v.card, 35)
    for country in v.IBAN_COUNTRIES:
        for _ in range(2):
            value = v.iban_text(rnd, v.iban_number(rnd, country))
            cases.append(_case(rnd.choice(IBAN).format(value), "iban", value))
    cases += _simple(rnd, "ssn", SSN, _ssn_text, 25)
    cases += _simple(rnd, "ip", IP, v.ipv4, 20) + _simple(rnd, "ip", IP, v.ipv6, 12)
    cases += _simple(rnd, "email", EMAIL, v.email, 30)
    cases += mixed_cases(rnd) + awkward_cases(rnd)
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description="write the PII test set")
    ap.add_argument("--seed", type=int, default=20240501)
    ap.add_argument("--out", type=Path, default=OUT, help="another seed to another file: a check for overfitting")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    cases = positives(rnd) + negatives(rnd)
    with args.out.open("w", encoding="utf-8") as fh:
        for case in cases:
            case.setdefault("values", [])
            case.setdefault("region", "US")
            fh.write(json.dumps(case, ensure_ascii=False) + "\n")
    pos = sum(bool(c["kinds"]) for c in cases)
    print(f"{args.out}: {pos} positive, {len(cases) - pos} negative cases")


if __name__ == "__main__":
    main()
