"""Data doctor throughput: Banking77 replicated to N rows (default 200,000) with small perturbations and a
planted share of broken, duplicate and PII rows, through `tunewise.data.check` (validate + clean + PII
redaction + token lengths + exact/near dedup + card), streaming to a clean JSONL. Prints rows/s, RSS at
50k/100k/195k rows (a quarter, half, 97.5 % of --rows) with the growth per 1k rows and what stays O(n) by design,
peak RSS, found/planted per kind, and a plain json.loads+dumps pass as the baseline.

    python -m bench.data_throughput [--rows 200000] [--data ../shared/data/banking77]

Run from the repo root (../shared sits beside it). Needs no GPU; uses the embedded model's tokenizer."""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD = {  # kind → share of rows
    "malformed JSON": 0.004,
    "not UTF-8": 0.002,
    "wrong type": 0.003,
    "missing field": 0.002,
    "empty field": 0.001,
    "control characters": 0.001,
    "label outside the declared set": 0.001,
}
REASON = {  # kind → how the quarantine reason of such a row starts
    "malformed JSON": "malformed JSON",
    "not UTF-8": "not UTF-8",
    "wrong type": "wrong type",
    "missing field": "missing field",
    "empty field": "empty field",
    "control characters": "control character",
    "label outside the declared set": "label 'not_a_banking_intent' is not in the declared label set",
}
DUPS = {"exact duplicate": 0.02, "near duplicate": 0.02}
PII = dict.fromkeys(["email", "phone", "card", "iban", "ssn", "ip", "secret"], 0.002)
PLACEHOLDER = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "card": "<CARD>",
    "iban": "<IBAN>",
    "ssn": "<SSN>",
    "ip": "<IP>",
    "secret": "<SECRET>",
}


def shingles(text: str) -> set[str]:
    # Independent of tunewise's code path: plain Python sets of character 5-grams of the casefolded text.
    t = " ".join(text.split()).casefold()
    return {t[i : i + 5] for i in range(max(1, len(t) - 4))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def pii_value(kind: str, rnd: random.Random) -> str:
    from stdnum import iban, luhn

    if kind == "email":
        domain = rnd.choice(["example.com", "mail.co.uk"])
        return f"{rnd.choice(['ann', 'bo', 'chris', 'dee'])}.{rnd.randrange(10**4)}@{domain}"
    if kind == "phone":
        return rnd.choice(
            [
                f"+44 20 7946 {rnd.randrange(10**4):04d}",
                f"(415) 555-{rnd.randrange(10**4):04d}",
                f"+1 212-{rnd.randrange(200, 999)}-{rnd.randrange(10**4):04d}",
            ]
        )
    if kind == "card":
        body = "4" + "".join(str(rnd.randrange(10)) for _ in range(14))
        d = body + luhn.calc_check_digit(body)
        return " ".join(d[i : i + 4] for i in range(0, 16, 4))
    if kind == "iban":
        bban = "WEST" + "".join(str(rnd.randrange(10)) for _ in range(14))
        return iban.format("GB" + iban.calc_check_digits("GB00" + bban) + bban)
    if kind == "ssn":
        return f"{rnd.randrange(1, 666):03d}-{rnd.randrange(1, 100):02d}-{rnd.randrange(1, 10**4):04d}"
    if kind == "ip":
        return f"{rnd.randrange(11, 200)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "AKIA" + "".join(rnd.choice(alphabet) for _ in range(16))


def bad_line(kind: str, text: str, label: str) -> bytes:
    if kind == "malformed JSON":
        return json.dumps({"text": text, "label": label}).encode()[:-7]
    if kind == "not UTF-8":
        return (
            json.dumps({"text": "caf" + "\u00e9 " + text, "label": label}, ensure_ascii=False)
            .encode("utf-8")
            .replace("\u00e9".encode(), b"\xe9")
        )
    row = {
        "wrong type": {"text": len(text), "label": label},
        "missing field": {"label": label},
        "empty field": {"text": "  ", "label": label},
        "control characters": {"text": text + "\u0000", "label": label},
        "label outside the declared set": {"text": text, "label": "not_a_banking_intent"},
    }[kind]
    return json.dumps(row).encode()


def generate(data: Path, n: int, out: Path, seed: int = 0) -> dict:
    """Write the benchmark JSONL; return what was planted where (line numbers, per kind)."""
    rnd = random.Random(seed)
    base = [
        (r["text"], r["category"])
        for f in ("train.csv", "test.csv")
        for r in csv.DictReader((data / f).open(encoding="utf-8"))
    ]
    vocab = sorted({w.strip("?.,!") for t, _ in base for w in t.split() if w.isalpha()})
    plan = [(k, s) for k, s in {**BAD, **DUPS, **PII}.items()]
    planted: dict[str, list] = {k: [] for k, _ in plan}
    planted["luhn-invalid 16 digits (must NOT be flagged)"] = []
    clean_rows: list[tuple[str, str]] = []  # plain rows emitted so far (duplicate sources)
    with out.open("wb") as fh:
        for line in range(1, n + 1):
            text, label = base[rnd.randrange(len(base))]
            # As many random words as the original has: replicas of one original stay far apart (Jaccard ~0.3),
            # so the only near duplicates are the planted ones (and Banking77's own).
            noise = " ".join(rnd.choice(vocab) for _ in range(max(3, len(text.split()))))
            text = f"{text} {noise}"
            r, kind = rnd.random(), None
            for k, share in plan:
                if r < share:
                    kind = k
                    break
                r -= share
            if kind in BAD:
                fh.write(bad_line(kind, text, label) + b"\n")
                planted[kind].append(line)
                continue
            if kind in DUPS and clean_rows:
                src, label = clean_rows[rnd.randrange(len(clean_rows))]
                text = (
                    unicodedata.normalize("NFD", "  " + src.upper() + " ")
                    if kind == "exact duplicate"
                    else next(
                        (
                            v
                            for v in (src + " please", src.rsplit(" ", 1)[0], src + "!!", "hi, " + src)
                            if jaccard(v, src) >= 0.85
                        ),
                        None,
                    )
                )
                if text is None:
                    continue
                planted[kind].append(line)
            elif kind in PII:
                text = f"{text} {pii_value(kind, rnd)}"
                planted[kind].append(line)
            else:
                if rnd.random() < 0.001:
                    digits = "5" + "".join(str(rnd.randrange(10)) for _ in range(15))
                    from stdnum import luhn

                    if not luhn.is_valid(digits):
                        text = f"{text} order {digits}"
                        planted["luhn-invalid 16 digits (must NOT be flagged)"].append(line)
                clean_rows.append((text, label))
            fh.write(json.dumps({"text": text, "label": label}).encode() + b"\n")
    return planted


def rss_mb() -> tuple[float, float, float]:
    """(RSS, PSS) in MiB of this process plus its worker processes, and this process's own RSS. RSS counts
    the pages the forked workers share with the parent once per process, so its sum overstates the machine's
    use; PSS splits each shared page between the processes sharing it, so its sum is what the machine holds."""
    import psutil

    me = psutil.Process()
    rss = pss = 0
    main = me.memory_info().rss
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20, main / 2**20


# What stays in memory per kept row by design (the dtypes in tunewise/data/dedup.py, band_index.py, spill.py,
# clusters.py, scan.py); everything else about a row is on disk or gone once the row is written.
PER_ROW = {"LSH band index (16 bands × 32-bit key + 32-bit slot)": 128,
           "exact index (64-bit key + slot) and digest tail": 20, "row ids (near slot, exact slot)": 16,
           "spill offsets (shingles; file, line, label, preview)": 16, "cluster size": 4,
           "token length + turns (card histogram)": 6}


def print_memory(rss_start: tuple, marks: dict, peak_total: tuple, peak_main: float) -> None:
    print(f"\nmemory before the pass (tokenizer, libraries): RSS / PSS main + workers {rss_start[0]:.0f} / "
          f"{rss_start[1]:.0f} MiB, main RSS {rss_start[2]:.0f} MiB")
    print("| rows read | rows kept | RSS main + workers MiB | PSS main + workers MiB | RSS main MiB |\n"
          "|---:|---:|---:|---:|---:|")
    for m, (kept, (rss, pss, main)) in marks.items():
        print(f"| {m:,} | {kept:,} | {rss:.0f} | {pss:.0f} | {main:.0f} |")
    print(f"peak (sampled every 2,000 rows) RSS / PSS main + workers {peak_total[0]:.0f} / {peak_total[1]:.0f} "
          f"MiB; main process alone: peak RSS {peak_main:.0f} MiB")
    if len(marks) < 2:
        return
    (m0, (k0, a)), (m1, (k1, b)) = list(marks.items())[0], list(marks.items())[-1]
    per_k = [(y - x) * 2**20 / ((m1 - m0) / 1000) for x, y in zip(a, b)]
    print(f"growth {m0:,} → {m1:,} rows: RSS {b[0] - a[0]:+.0f} MiB ({(b[0] - a[0]) / a[0]:+.1%} of RSS at {m0:,}), "
          f"PSS {b[1] - a[1]:+.0f} MiB ({(b[1] - a[1]) / a[1]:+.1%}), main RSS {b[2] - a[2]:+.0f} MiB "
          f"({(b[2] - a[2]) / a[2]:+.1%}); per 1,000 rows read: RSS {per_k[0] / 1024:.0f} KiB, "
          f"PSS {per_k[1] / 1024:.0f} KiB, main RSS {per_k[2] / 1024:.0f} KiB ({per_k[2] / 1000:.0f} bytes a row)")
    total = sum(PER_ROW.values())
    print("O(n) by design, per kept row: " + ", ".join(f"{k} {v} B" for k, v in PER_ROW.items())
          + f" = {total} B: {total * (k1 - k0) / 2**20:.0f} MiB for the {k1 - k0:,} rows kept between the marks. "
          "Shingles, file/line/label/preview and cluster members of kept rows are spilled to temporary files.")


def baseline(path: Path, out: Path) -> float:
    """The plain floor: json.loads every line and json.dumps it back out, nothing checked."""
    t = time.perf_counter()
    with path.open("rb") as src, out.open("w", encoding="utf-8") as dst:
        for raw in src:
            try:
                dst.write(json.dumps(json.loads(raw)) + "\n")
            except ValueError:
                pass
    return time.perf_counter() - t


def score(planted: dict, out: Path) -> list[tuple[str, int, int]]:
    """found / planted per kind, read back from the quarantine and the clean output."""
    quarantine = {}
    for x in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(x)
        quarantine[q["line"]] = q["reason"]
    kept = {}
    with (out / "clean.jsonl").open(encoding="utf-8") as fh:
        for x in fh:
            r = json.loads(x)
            kept[r["meta"]["line"]] = r["messages"][0]["content"]
    rows = []
    for kind, lines in planted.items():
        if kind in BAD:
            found = sum(1 for ln in lines if quarantine.get(ln, "").startswith(REASON[kind]))
        elif kind in DUPS:  # dropped as a duplicate: neither kept nor quarantined
            found = sum(1 for ln in lines if ln not in kept and ln not in quarantine)
        elif kind in PII:  # policy drop: each PII row is quarantined with the kinds found in it
            found = sum(1 for ln in lines if quarantine.get(ln, "").startswith("contains PII") and kind in
                        quarantine[ln].split("(")[1].split(")")[0].split(", "))
        else:  # negative control: found = wrongly flagged as a card
            found = sum(1 for ln in lines if "card" in quarantine.get(ln, ""))
        rows.append((kind, found, len(lines)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--workers", default="auto", help="data.workers: auto, or a number of processes")
    ap.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        planted = generate(args.data, args.rows, args.generate_only)
        args.generate_only.with_suffix(".planted.json").write_text(json.dumps(planted))
        return 0
    from tunewise.config import parse_config
    from tunewise.data import check
    from tunewise.data.tokens import load_counter

    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    src = tmp / "bench.jsonl"
    # Generated in a child process so its lists do not count in this process's RSS. The child inherits the
    # working directory and PYTHONPATH, so `-m` finds this same package.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.data_throughput",
            "--rows",
            str(args.rows),
            "--data",
            str(args.data),
            "--generate-only",
            str(src),
        ],
        check=True,
    )
    planted = json.loads(src.with_suffix(".planted.json").read_text())
    labels = json.loads((args.data / "categories.json").read_text())
    # pii: drop quarantines each PII row with its line, so found/planted is exact per row (redact costs the
    # same: detection runs on every row either way, the replacement only on the 1.4% that match).
    # label_issues off: its cross-validated classifier is timed by bench.label_noise, not by this pass.
    cfg = parse_config({"task": {"labels": labels}, "data": {"paths": [str(src)], "pii": "drop",
                                                                 "workers": args.workers, "label_issues": "off"}})
    counter = load_counter(cfg.model.base)
    # RSS at a quarter, half and all of the rows (50k, 100k, 200k by default). The last sample is taken at
    # 97.5 % (195k): the worker pool exits once the last chunk is back, before the last batch is decided, so a
    # sample at 100 % would miss the workers' memory and look flatter than it is.
    marks, seen = {}, [args.rows // 4, args.rows // 2, args.rows - args.rows // 40]
    peak_total, next_sample = [(0.0, 0.0)], [0]

    def progress(stats) -> None:
        if seen and stats.rows >= seen[0]:
            seen.pop(0)
            marks[stats.rows] = (stats.kept, rss_mb())
        if stats.rows >= next_sample[0]:  # every 2,000 rows: main + workers, the peak the machine sees
            now = rss_mb()
            peak_total[0] = (max(peak_total[0][0], now[0]), max(peak_total[0][1], now[1]))
            next_sample[0] = stats.rows + 2000

    rss_start = rss_mb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    card = check(cfg, tmp / "out", tmp / "out" / "clean.jsonl", counter, progress)
    seconds = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes (reaped when a file ends)
    # CPU seconds (all threads) as well as wall time: on a shared machine wall time mostly measures the neighbours.
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    cpu_workers = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
    cpu_main = cpu
    cpu += cpu_workers
    peak = cpu1.ru_maxrss / 1024
    base_s = baseline(src, tmp / "plain.jsonl")

    tok = counter[0].name if counter[0] else "-"
    print(f"\n{args.rows:,} rows, {src.stat().st_size / 2**20:.0f} MB JSONL, tokenizer {tok}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"data.workers {args.workers}")
    print("| pass | wall s | rows/s (wall) | CPU s | rows per CPU-second |\n|---|---:|---:|---:|---:|")
    print(f"| plain json.loads + dumps (baseline, no checks) | {base_s:.1f} | {args.rows / base_s:,.0f} | - | - |")
    print(
        f"| tunewise data check + clean (validate, clean, PII, tokens, dedup, card) | {seconds:.1f} | "
        f"{args.rows / seconds:,.0f} | {cpu:.1f} | {args.rows / cpu:,.0f} |"
    )
    print(f"CPU s: main process {cpu_main:.1f}, worker processes {cpu_workers:.1f}")
    print_memory(rss_start, marks, peak_total[0], peak)
    print("\n| planted problem | found | planted |\n|---|---:|---:|")
    for kind, found, n in score(planted, tmp / "out"):
        print(f"| {kind} | {found} | {n} |")
    c = card.counts
    print(
        f"\ncard: {c['rows_read']:,} read, {c['quarantined']:,} quarantined, {c['duplicates_removed']:,} "
        f"duplicates removed ({card.duplicates['exact']:,} exact, {card.duplicates['near']:,} near), "
        f"{c['usable']:,} usable; PII occurrences {card.pii['occurrences']}"
    )
    print(f"outputs in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
