"""Build the shipped general multiple-choice set, general_mc.jsonl: the questions written for tunewise by hand
(rows with "source": "written", kept as they are) plus questions generated here by rules that compute their
answers (arithmetic, unit conversions, calendar, comparisons, letters). Deterministic: a re-run rewrites the
same file (a test checks it).

    python -m tunewise.evaluate.general_mc_build
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

PATH = Path(__file__).with_name("general_mc.jsonl")
SEED = 0
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
MONTH_DAYS = {"January": 31, "March": 31, "April": 30, "May": 31, "June": 30, "July": 31, "August": 31,
              "September": 30, "October": 31, "November": 30, "December": 31}  # February: 28 or 29, left out
UNITS = [("metres", "kilometres", 1000), ("centimetres", "metres", 100), ("grams", "kilograms", 1000),
         ("millilitres", "litres", 1000), ("minutes", "hours", 60), ("seconds", "minutes", 60),
         ("hours", "days", 24), ("days", "weeks", 7), ("months", "years", 12), ("eggs", "dozen", 12)]
WORDS = ["garden", "window", "banana", "orange", "pencil", "rabbit", "yellow", "kitchen", "mountain", "river",
         "bottle", "candle", "forest", "island", "ladder", "planet", "silver", "winter", "butter", "castle",
         "doctor", "engine", "flower", "guitar", "hammer", "jacket", "lemon", "market", "napkin", "pocket",
         "rocket", "spider", "tomato", "violin", "wallet", "zebra", "chair", "table", "house", "basket"]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _row(rng: random.Random, question: str, answer, wrong: list) -> dict:
    """Four distinct choices in random order: the answer and the first three distinct wrong ones."""
    others = [w for w in dict.fromkeys(str(w) for w in wrong) if w != str(answer)][:3]
    if len(others) < 3:
        raise ValueError(f"{question}: fewer than three wrong choices")
    choices = [str(answer), *others]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": str(answer), "source": "generated"}


def _near(rng: random.Random, answer: int, steps: list[int]) -> list[int]:
    wrong = [answer + s for s in steps if answer + s >= 0]
    rng.shuffle(wrong)
    return wrong


def arithmetic(rng: random.Random) -> Iterator[dict]:
    for _ in range(22):
        a, b = rng.randint(11, 89), rng.randint(11, 89)
        yield _row(rng, f"What is {a} + {b}?", a + b, _near(rng, a + b, [-10, -2, -1, 1, 2, 10]))
    for _ in range(22):
        a = rng.randint(30, 99)
        b = rng.randint(5, a - 1)
        yield _row(rng, f"What is {a} - {b}?", a - b, _near(rng, a - b, [-10, -2, -1, 1, 2, 10]))
    for _ in range(22):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        yield _row(rng, f"What is {a} times {b}?", a * b, _near(rng, a * b, [-a, -b, -1, 1, a, b, 10]))
    for _ in range(18):
        q, d = rng.randint(2, 12), rng.randint(2, 9)
        yield _row(rng, f"What is {q * d} divided by {d}?", q, _near(rng, q, [-2, -1, 1, 2, d]))


def units(rng: random.Random) -> Iterator[dict]:
    for small, big, factor in UNITS:
        for n in rng.sample(range(2, 10), 3):
            answer = n * factor
            wrong = [(n + 1) * factor, (n - 1) * factor, n * factor * 10, n + factor, n * factor + factor // 2]
            rng.shuffle(wrong)
            question = (f"How many eggs are in {n} dozen?" if big == "dozen"
                        else f"How many {small} are in {n} {big}?")
            yield _row(rng, question, answer, wrong)


def calendar(rng: random.Random) -> Iterator[dict]:
    for start in DAYS:
        for n in rng.sample(range(2, 7), 2):
            answer = DAYS[(DAYS.index(start) + n) % 7]
            yield _row(rng, f"Which day of the week comes {n} days after {start}?", answer,
                       rng.sample([d for d in DAYS if d != answer], 6))
    for start in rng.sample(MONTHS, 8):
        n = rng.randint(2, 5)
        answer = MONTHS[(MONTHS.index(start) + n) % 12]
        yield _row(rng, f"Which month comes {n} months after {start}?", answer,
                   rng.sample([m for m in MONTHS if m != answer], 11))
    for month, days in MONTH_DAYS.items():
        yield _row(rng, f"How many days are there in {month}?", days, [28, 29, 30, 31, 32])


def comparisons(rng: random.Random) -> Iterator[dict]:
    for word, pick in (("largest", max), ("smallest", min)):
        for _ in range(15):
            numbers = rng.sample(range(10, 1000), 4)
            listed = ", ".join(map(str, numbers[:3])) + f" or {numbers[3]}"
            yield _row(rng, f"Which number is the {word}: {listed}?", pick(numbers),
                       [n for n in numbers if n != pick(numbers)])


def letters(rng: random.Random) -> Iterator[dict]:
    words = rng.sample(WORDS, len(WORDS))
    for word in words[:12]:
        yield _row(rng, f"What is the first letter of the word '{word}'?", word[0].upper(),
                   rng.sample([c for c in LETTERS if c.lower() != word[0]], 5))
    for word in words[12:24]:
        yield _row(rng, f"What is the last letter of the word '{word}'?", word[-1].upper(),
                   rng.sample([c for c in LETTERS if c.lower() != word[-1]], 5))
    for word in words[24:36]:
        yield _row(rng, f"How many letters are in the word '{word}'?", len(word),
                   _near(rng, len(word), [-2, -1, 1, 2]))
    for letter in rng.sample(LETTERS[1:-1], 14):
        i = LETTERS.index(letter)
        after = rng.random() < 0.5
        answer = LETTERS[i + 1] if after else LETTERS[i - 1]
        wrong = [LETTERS[j] for j in (i - 2, i + 2, i - 1, i + 1, i) if 0 <= j < 26]
        yield _row(rng, f"Which letter comes right {'after' if after else 'before'} {letter} in the alphabet?",
                   answer, wrong)


def build(written: list[dict], seed: int = SEED) -> list[dict]:
    """The written rows, then every generated row whose question is not already in the set."""
    rng = random.Random(seed)
    seen = {r["question"] for r in written}
    out = list(written)
    for make in (arithmetic, units, calendar, comparisons, letters):
        for row in make(rng):
            if row["question"] not in seen:
                seen.add(row["question"])
                out.append(row)
    return out


def written_rows(path: Path = PATH) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("source") == "written"]


def main() -> None:
    rows = build(written_rows())
    PATH.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{PATH}: {len(rows)} questions ({sum(r['source'] == 'written' for r in rows)} written)")


if __name__ == "__main__":
    main()
