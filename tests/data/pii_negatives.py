"""Hard negatives for the PII test set: numbers and tokens that look like PII or secrets but are not (see the
decisions in make_pii_cases.py). Each template is filled with fresh random values, so the set is not tuned to
a handful of strings; a third of them are read with a non-US phone region."""

from __future__ import annotations

import random
import string
import uuid

from stdnum import ean, isbn, luhn

from tests.data.pii_values import rand

D = string.digits
HEX = "0123456789abcdef"


def _n(rnd: random.Random, k: int) -> str:
    return rand(rnd, 1, "123456789") + rand(rnd, k - 1, D)


def _us_like(rnd: random.Random) -> str:
    """Ten digits that are also a valid US phone number: what makes an invoice number hard."""
    return f"{rnd.choice(['212', '415', '312', '617', '303', '206'])}{rnd.randint(200, 999)}{_n(rnd, 4)}"


def _isbn(rnd: random.Random) -> str:
    body = "978" + rand(rnd, 9, D)
    return isbn.format(body + ean.calc_check_digit(body))  # ISBN-13 is an EAN-13


def _luhn_invalid(rnd: random.Random) -> str:
    body = "4" + rand(rnd, 14, D)
    bad = str((int(luhn.calc_check_digit(body)) + rnd.randint(1, 9)) % 10)
    return " ".join((body + bad)[i:i + 4] for i in range(0, 16, 4))


TEMPLATES = [
    lambda r: f"Order #{_n(r, r.choice([8, 9, 10]))} hasn't arrived yet",
    lambda r: f"order {_n(r, 3)}-{_n(r, 7)}-{_n(r, 7)} was cancelled without notice",
    lambda r: f"my order number is {_us_like(r)} and it's two weeks late",
    lambda r: f"Invoice INV-{r.randint(2019, 2025)}-{_n(r, 5)} is overdue",
    lambda r: f"invoice no. {_us_like(r)} was paid on the 3rd",
    lambda r: f"Invoice #{_us_like(r)} shows the wrong VAT",
    lambda r: f"UPS tracking 1Z{rand(r, 6, string.ascii_uppercase + D)}{_n(r, 10)} says delivered",
    lambda r: f"FedEx tracking number {_n(r, 12)}, still in transit",
    lambda r: f"USPS tracking {_n(r, 22)}",
    lambda r: f"reference {_us_like(r)} on the bank statement",
    lambda r: f"upgraded to v{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 20)} and it broke",
    lambda r: f"Python 3.{r.randint(8, 13)}.{r.randint(0, 12)} with transformers=="
              f"{r.randint(4, 5)}.{r.randint(0, 60)}.0",
    lambda r: f"Windows 10.0.{_n(r, 5)}.{_n(r, 4)} after the update",
    lambda r: f"version {r.randint(1, 12)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)} fixes the crash",
    lambda r: f"the book (ISBN {_isbn(r)}) never came",
    lambda r: f"charged on {r.randint(2019, 2025)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} and again on "
              f"{r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(2019, 2025)}",
    lambda r: f"from {r.randint(1, 28):02d}.{r.randint(1, 12):02d}.{r.randint(2019, 2025)} to "
              f"{r.randint(1, 28):02d}.{r.randint(1, 12):02d}.{r.randint(2019, 2025)}",
    lambda r: f"it failed at {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} UTC",
    lambda r: f"I was charged ${r.randint(1, 99)},{_n(r, 3)}.{r.randint(0, 99):02d} instead of "
              f"${r.randint(10, 999)}.{r.randint(0, 99):02d}",
    lambda r: f"Betrag: {r.randint(1, 999)}.{_n(r, 3)},{r.randint(0, 99):02d} EUR",
    lambda r: f"we have {r.randint(1, 9)},{_n(r, 3)},{_n(r, 3)},{_n(r, 3)} rows in the table",
    lambda r: f"meet at {r.uniform(-80, 80):.6f}, {r.uniform(-170, 170):.6f}",
    lambda r: f"fixed in commit {rand(r, 40, HEX)}",
    lambda r: f"see {rand(r, 7, HEX)} on main",
    lambda r: f"request id {uuid.UUID(int=r.getrandbits(128))} failed",
    lambda r: f"sha256:{rand(r, 64, HEX)}",
    lambda r: f"SKU {rand(r, 2, string.ascii_uppercase)}-{_n(r, 5)}-{r.choice(['S', 'M', 'XL'])} is out of stock",
    lambda r: f"part no. {_us_like(r)}",
    lambda r: f"ZIP {_n(r, 5)}, postcode {r.choice(['SW1A 1AA', 'EC1A 1BB', 'M1 1AE', 'W1A 0AX'])}",
    lambda r: f"{_n(r, 5)} Paris or {_n(r, 5)} Berlin?",
    lambda r: r.choice(["I forgot my password and the reset link expired",
                        "Password: must contain at least 8 characters", "the api key field is empty",
                        "Where do I find my API key?", "my password is correct but login fails",
                        "token: expired, please sign in again", "secret: nobody knows the recipe",
                        "password reset: not received", "The auth token is missing from the header",
                        "a small token of appreciation for the support team"]),
    lambda r: f"card {_luhn_invalid(r)} was declined",
    lambda r: f"MAC {':'.join(rand(r, 2, HEX.upper()) for _ in range(6))} is not on the allow list",
    lambda r: f"use colour #{rand(r, 6, HEX)} for the button",
    lambda r: f"flight LH{_n(r, 4)} gate B{r.randint(1, 60)}, seat {r.randint(1, 40)}C",
    lambda r: f"see https://docs.example.com/guide/getting-started?page={r.randint(2, 40)}&ref=nav",
    lambda r: f"https://github.com/acme/tunewise/pull/{_n(r, 5)}#discussion_r{_n(r, 10)}",
    lambda r: f"/var/log/nginx/access.log.{r.randint(2019, 2025)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}.gz",
    lambda r: f"the score was {r.randint(0, 9)}-{r.randint(0, 9)} and {r.randint(10, 99)}% of fans left early",
    lambda r: f"room {_n(r, 4)}, building {r.randint(1, 9)}, floor {r.randint(1, 30)}",
    lambda r: f"account {_n(r, 8)}, sort code {_n(r, 2)}-{_n(r, 2)}-{_n(r, 2)}",
    lambda r: f"Ticket {r.choice(['JIRA', 'OPS', 'SUP'])}-{_n(r, 5)} and case {_us_like(r)}",
    lambda r: f"the model scored {r.random():.4f} on {r.randint(1000, 99999)} examples in {r.randint(2, 999)} s",
    lambda r: "pi is 3.14159265358979 and e is 2.718281828459",
]


def negatives(rnd: random.Random, per_template: int = 6) -> list[dict]:
    out = []
    for template in TEMPLATES:
        for _ in range(per_template):
            region = rnd.choice(["US", "US", "US", "GB", "DE", "IN", "FR"])
            out.append({"text": template(rnd), "kinds": [], "region": region})
    return out
