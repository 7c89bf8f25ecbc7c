"""Load test of `tunewise serve` on CPU with the embedded model: C concurrent clients × R requests each.

    python -m bench.serve_load                      # 32 clients × 200 requests (the issue's target)
    python -m bench.serve_load --requests 3         # scaled down for a shared 2-core machine

Each request is what a topic classifier's client sends: one short news headline as the user turn and a small
max_tokens (a label is 1-3 tokens). Prints errors, p50/p95 latency, requests/s, the mean batch size and the
server's memory (RSS) before the load and after each quarter of the requests, beside the plain baseline: the
same generation in-process, one request at a time, without HTTP. Traffic goes to 127.0.0.1 only and every loop
is bounded. With --config, serves that workspace's production model instead of a fresh one."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

# As `tunewise serve` does, so that the in-process baseline runs under the same OpenMP settings as the server.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
LAUNCH = "import sys; from tunewise.cli import app; sys.argv[0] = 'tunewise'; app()"
PROMPT = "Bank shares rose after a strong profit report"
HEADLINES = [PROMPT, "Striker scores twice as United win derby", "Minister resigns over expenses row",
             "New phone chip doubles battery life", "Oscar nominations announced", "Oil prices fall as supply grows",
             "Tennis star pulls out of open", "Election date set for May", "Software update fixes security flaw",
             "Band announces reunion tour", "Retail sales slump in December", "Coach sacked after cup defeat",
             "Parliament votes on new tax bill", "Start-up raises funds for AI chips", "Film festival opens in Cannes",
             "Airline profits soar on holiday demand"]


def fresh_workspace(folder: Path, max_batch_size: int = 16) -> Path:
    """A registry whose production model is the embedded model with an untrained LoRA adapter (B = 0, so it
    answers exactly like the base): what is measured is serving, not a particular fine-tune."""
    from tunewise.config import LoraConfig, OperateConfig, RegistryConfig
    from tunewise.models import load_model, resolve_model
    from tunewise.registry import Registry
    from tunewise.train.lora import apply_lora

    base = resolve_model("embedded:smollm2-135m-instruct")
    run = folder / "runs" / "bench"
    apply_lora(load_model(base.path, "cpu"), LoraConfig(r=8, alpha=16)).save_pretrained(run / "adapter")
    (run / "data").mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "business"}],
           "label": "business"}
    for split in ("train", "val", "test"):
        (run / "data" / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    (run / "manifest.json").write_text(json.dumps({
        "name": "bench", "task": "classification", "seed": 0, "base_model": {"id": base.model_id, "sha256": base.sha256,
                                                                             "path": str(base.path)},
        "dataset": {"content_hash": "b" * 64, "counts": {"train": 1, "val": 1, "test": 1}, "labels": ["business"]}}))
    (run / "metrics.json").write_text(json.dumps({"test": {"fine_tuned": {"accuracy": 1.0}}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "bench", "data": {"builtin": "bbc_news"}}))
    (run / "predictions.jsonl").write_text(json.dumps({"input": PROMPT, "reference": "business",
                                                       "correct": {"fine_tuned": True}}) + "\n")
    cfg = OperateConfig(registry=RegistryConfig(workspace=folder / "ws"))
    reg = Registry(cfg.registry)
    reg.register_run(run)
    reg.promote()
    path = folder / "operate.yaml"
    path.write_text(yaml.safe_dump({"registry": {"workspace": str(folder / "ws")}, "serve": {"max_tokens": 8,
                                                                                  "max_batch_size": max_batch_size}}))
    return path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(config: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", "--config", str(config), "--port", str(port),
                             "--no-auth"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not come up")


def client(url: str, n: int, max_tokens: int, lat: list, errors: list, i: int) -> None:
    with httpx.Client(base_url=url, timeout=600) as c:
        for k in range(n):
            t = time.perf_counter()
            try:
                messages = [{"role": "user", "content": HEADLINES[(i * n + k) % len(HEADLINES)]}]
                r = c.post("/v1/chat/completions",
                           json={"model": "production", "max_tokens": max_tokens, "messages": messages})
                (lat if r.status_code == 200 else errors).append(time.perf_counter() - t if r.status_code == 200
                                                                 else r.status_code)
            except httpx.HTTPError as err:
                errors.append(type(err).__name__)


def baseline(config: Path, n: int, max_tokens: int) -> list[float]:
    """The same generation in-process, sequentially: what the HTTP server adds on top is the difference."""
    from tunewise.config import TaskConfig, load_operate_config
    from tunewise.registry import open_registry
    from tunewise.serve.engine import ModelPool

    cfg = load_operate_config(config)
    reg = open_registry(cfg.registry)

    m = reg.model("production")
    pool = ModelPool()
    served = pool.prepare(m, TaskConfig.model_validate(reg.run_record(m.run_id)["config"].get("task", {})),
                          reg.dataset_record(m.dataset_hash)["card"].get("labels"))
    pool.complete(served, [{"role": "user", "content": PROMPT}], max_tokens)  # warm-up, as for the server
    out = []
    for k in range(n):
        t = time.perf_counter()
        pool.complete(served, [{"role": "user", "content": HEADLINES[k % len(HEADLINES)]}], max_tokens)
        out.append(time.perf_counter() - t)
    return out


def watch(proc: subprocess.Popen, threads: list[threading.Thread], done: list, total: int) -> list[float]:
    """Server RSS before the load and when each quarter of the requests has been answered."""
    mem = [rss_mib(proc.pid)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        while len(mem) < 5 and sum(map(len, done)) >= total * len(mem) / 4:
            mem.append(rss_mib(proc.pid))
    return mem + [rss_mib(proc.pid)] * (5 - len(mem))


def mean_batch(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    value = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("tunewise_batch_size_")}
    return value.get("tunewise_batch_size_sum", 0) / max(1, value.get("tunewise_batch_size_count", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--max-batch-size", type=int, default=16, help="serve.max_batch_size of the fresh workspace")
    ap.add_argument("--config", type=Path, help="operate config of a workspace with a production model")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    config = args.config or fresh_workspace(Path(tmp.name), args.max_batch_size)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start(config, port)
    url = f"http://127.0.0.1:{port}"
    total = args.clients * args.requests
    print(f"{args.clients} clients × {args.requests} requests, max_tokens={args.max_tokens}; each request is one "
          f"user turn, cycling through these {len(HEADLINES)} headlines:")
    for h in HEADLINES:
        print(f"  {h!r}")
    load0 = os.getloadavg()
    try:
        client(url, 2, args.max_tokens, [], [], -1)  # warm-up: adapter load, first-call overheads
        lat, errors = [], []
        threads = [threading.Thread(target=client, args=(url, args.requests, args.max_tokens, lat, errors, i))
                   for i in range(args.clients)]
        t0 = time.perf_counter()
        mem = watch(proc, threads, [lat, errors], total)
        wall = time.perf_counter() - t0
        batch = mean_batch(url)
    finally:
        proc.kill()
        proc.wait()
    load1 = os.getloadavg()
    base = baseline(config, min(20, max(5, args.requests)), args.max_tokens)
    p = np.percentile
    loads = [" / ".join(f"{x:.1f}" for x in la) for la in (load0, load1)]
    print(f"\nCPU, {os.cpu_count()} cores, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; load average "
          f"(1/5/15 min) {loads[0]} before, {loads[1]} after; wall {wall:.0f} s; mean batch {batch:.1f}")
    print(f"{'':28}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'req/s':>8}")
    print(f"{'plain in-process (serial)':28}{len(base):>9}{0:>8}{p(base, 50) * 1e3:>9.0f}{p(base, 95) * 1e3:>9.0f}"
          f"{len(base) / sum(base):>8.1f}")
    print(f"{'tunewise serve (HTTP)':28}{total:>9}{len(errors):>8}{p(lat, 50) * 1e3:>9.0f}{p(lat, 95) * 1e3:>9.0f}"
          f"{len(lat) / wall:>8.1f}")
    marks = ("before load", "after 25%", "50%", "75%", "100%")
    print("server RSS MiB: " + ", ".join(f"{q} {m:.0f}" for q, m in zip(marks, mem))
          + f"; growth from 25% to 100%: {mem[4] - mem[1]:+.0f} MiB")
    if errors:
        print(f"errors: {sorted(set(map(str, errors)))[:5]}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
