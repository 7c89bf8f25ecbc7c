"""Dynamic batching: requests that arrive while a batch generates wait in a queue; the next batch takes up to
`max_batch_size` of them that can share one `generate` call (same base model, same sampling settings), left
padded. Each row stops at its own `max_tokens` or end-of-turn token and is trimmed to it.

Why: on CPU one generate call of one request leaves most of the matrix units idle during decoding, and the
per-call overhead of `generate` is paid once per batch instead of once per request (throughput with and
without batching: docs/operate.md, "Load benchmark")."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


@dataclass(eq=False)  # identity: two requests with the same prompt are still two jobs
class Job:
    """One request waiting for generation: its prompt tokens, its own limit and sampling settings."""

    base_key: str
    adapter: str
    ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    owner: Any = None  # the caller's handle on the model (the engine's Served), for run_batch
    result: Future = field(default_factory=Future)

    def group(self) -> tuple:
        """Jobs with equal groups may share a generate call. A seeded sampling request runs alone: its seed
        must give the same text whatever else is in the queue."""
        if self.temperature > 0 and self.seed is not None:
            return ("seeded", id(self))
        sampling = (self.temperature, self.top_p) if self.temperature > 0 else (0.0, 1.0)
        return (self.base_key, *sampling)


class RowLimits(StoppingCriteria):
    """Per-row `max_new_tokens`: a row past its own limit is finished (generate pads it from then on), and the
    call ends as soon as every row is finished, not at the largest limit of the batch."""

    def __init__(self, prompt_width: int, limits: list[int], device: str | torch.device):
        self.prompt_width = prompt_width
        self.limits = torch.tensor(limits, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.prompt_width) >= self.limits


@torch.no_grad()
def generate_rows(model, pad_id: int, stops: list[int], jobs: list[Job],
                  adapter_names: list[str] | None = None) -> list[list[int]]:
    """One left-padded generate call for `jobs` (same sampling settings); each row's new tokens, cut after its
    first stop token or at its own `max_tokens`."""
    device = next(model.parameters()).device
    width = max(len(j.ids) for j in jobs)
    ids = torch.tensor([[pad_id] * (width - len(j.ids)) + j.ids for j in jobs], device=device)
    mask = torch.tensor([[0] * (width - len(j.ids)) + [1] * len(j.ids) for j in jobs], device=device)
    limits = [j.max_tokens for j in jobs]
    first = jobs[0]
    kw = {"input_ids": ids, "attention_mask": mask, "max_new_tokens": max(limits), "eos_token_id": stops,
          "pad_token_id": pad_id, "do_sample": first.temperature > 0,
          "stopping_criteria": StoppingCriteriaList([RowLimits(width, limits, device)])}
    if first.temperature > 0:
        kw.update(temperature=first.temperature, top_p=first.top_p)
        if first.seed is not None:
            torch.manual_seed(first.seed)
    if adapter_names is not None:
        kw["adapter_names"] = adapter_names
    out = model.generate(**kw)[:, width:].tolist()
    rows = []
    for row, limit in zip(out, limits):
        row = row[:limit]
        n = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        rows.append(row[:n])
    return rows


class Batcher:
    """A queue and one worker thread that runs `run_batch` on groups of queued jobs, oldest job first."""

    def __init__(self, run_batch: Callable[[list[Job]], list], max_batch_size: int):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.queue: deque[Job] = deque()
        self.cond = threading.Condition()
        self.worker: threading.Thread | None = None
        self.running: list[Job] = []  # the batch being generated
        self.batch_sizes: list[int] = []  # the last 100 batch sizes, for tests
        self.observe: Callable[[int], None] = lambda size: None  # the server's /metrics histogram

    def submit(self, job: Job):
        """Queue `job` and wait for its result (the worker's exception is raised here)."""
        with self.cond:
            if self.worker is None:
                self.worker = threading.Thread(target=self._loop, name="tunewise-batcher", daemon=True)
                self.worker.start()
            self.queue.append(job)
            self.cond.notify()
        return job.result.result()

    def _take(self) -> list[Job]:
        """The oldest job and the next queued jobs of its group, up to max_batch_size: the oldest job is always
        in the next batch, so no group starves another."""
        key = self.queue[0].group()
        batch = [j for j in self.queue if j.group() == key][: self.max_batch_size]
        for j in batch:
            self.queue.remove(j)
        return batch

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                batch = self.running = self._take()
            self.batch_sizes = [*self.batch_sizes[-99:], len(batch)]
            self.observe(len(batch))
            try:
                results = self.run_batch(batch)
            except Exception as err:  # every waiting request gets the error, the worker lives on
                for j in batch:
                    j.result.set_exception(err)
                self.running = []
                continue
            for j, r in zip(batch, results):
                j.result.set_result(r)
            self.running = []
