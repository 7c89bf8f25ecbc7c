"""Models in memory: one copy of each base model, with every requested adapter loaded onto it by name
(peft `load_adapter` / `set_adapter`), so serving several fine-tunes costs one base model of memory. A full
fine-tune or a soup (registered kind "full") is a model of its own, loaded from its safetensors.

Plain requests are batched (tunewise.serve.batch): one worker thread runs a generate call at a time for all
queued requests of one base model, with a mix of adapters routed per row by peft's `adapter_names`. A
streamed request takes the model for itself (one at a time): tokens are pushed to its client as they come."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tunewise.config import TaskConfig
from tunewise.data.encode import encode_prompt
from tunewise.data.prompt import fine_tuned_labels, prompt_messages
from tunewise.data.records import Record
from tunewise.models import check_full_model, load_adapter, load_model, load_tokenizer
from tunewise.registry import ModelRecord
from tunewise.serve.batch import Batcher, Job, generate_rows


@dataclass
class Served:
    """A registered model ready to generate: the model in memory it runs on, its name there, its task framing."""

    record: ModelRecord
    base_key: str  # the model in memory: the shared base of an adapter, or a full model's own weights
    adapter: str  # its name in the pool; an adapter's name on its base
    task: TaskConfig
    labels: list[str] | None

    @property
    def full(self) -> bool:
        return self.record.kind == "full"


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def chat_to_prompt(messages: list[dict], task: TaskConfig, labels: list[str] | None) -> list[dict]:
    """The prompt exactly as training built it: the conversation becomes a record (the request's last user turn
    is its input) and goes through the same `prompt_messages` / `fine_tuned_labels` training and evaluation use."""
    record = Record([*messages, {"role": "assistant", "content": ""}])
    return prompt_messages(record, task, fine_tuned_labels(task, labels))


class ModelPool:
    def __init__(self, max_adapters: int = 8, device: str = "cpu", max_batch_size: int = 16):
        self.device = device
        self.max_adapters = max_adapters
        self.bases: dict[str, list] = {}  # base path -> [model (PeftModel once an adapter is on), tokenizer]
        self.adapters: OrderedDict[str, str] = OrderedDict()  # adapter name -> base path, least recent first
        self.lock = threading.Lock()  # the models: loading adapters, batches and streams take turns
        # Fast tokenizers raise "Already borrowed" when request threads encode on one tokenizer at once.
        self.tokenizer_lock = threading.Lock()
        self.batcher = Batcher(self._run_batch, max_batch_size)

    def prepare(self, record: ModelRecord, task: TaskConfig, labels: list[str] | None) -> Served:
        key = record.artifact_path if record.kind == "full" else record.base_model["path"]
        served = Served(record, str(key), f"model-{record.id}", task, labels)
        if served.adapter in self.adapters:
            # Loaded already: no lock, which a running batch holds, so the request queues for the next batch
            # now (the worker reloads it, under the lock, if it is evicted meanwhile).
            return served
        with self.lock:
            self._load(served, keep={served.adapter})
        return served

    def _load(self, served: Served, keep: set[str]) -> None:
        """Put `served`'s adapter on its base, or load its full weights (called with the lock held); models in
        `keep` are not evicted."""
        key, name = served.base_key, served.adapter
        if key not in self.bases:
            model = load_model(check_full_model(Path(key)) if served.full else Path(key), self.device)
            self.bases[key] = [model, load_tokenizer(self._tokenizer_dir(served))]
        entry = self.bases[key]
        if name not in self.adapters:
            if not served.full:
                entry[0] = load_adapter(entry[0], served.record.artifact_path, name)
            entry[0].eval()
            self.adapters[name] = key
            self._evict(keep)
        self.adapters.move_to_end(name)

    @staticmethod
    def _tokenizer_dir(served: Served) -> Path:
        # A full fine-tune or soup carries its tokenizer; an adapter uses its base's.
        own = served.record.artifact_path
        if served.full and (own / "tokenizer_config.json").is_file():
            return own
        return Path(served.record.base_model["path"])

    def _evict(self, keep: set[str]) -> None:
        for old in [a for a in self.adapters if a not in keep][: max(0, len(self.adapters) - self.max_adapters)]:
            key = self.adapters.pop(old)
            base = self.bases[key][0]
            if old in getattr(base, "peft_config", {}):
                base.delete_adapter(old)
            elif not hasattr(base, "peft_config"):  # a full model: its weights are all it is
                del self.bases[key]

    def loaded(self) -> list[str]:
        return list(self.adapters)

    def _encode(self, served: Served, messages: list[dict]) -> list[int]:
        tok = self.bases[served.base_key][1]
        with self.tokenizer_lock:
            return encode_prompt(tok, chat_to_prompt(messages, served.task, served.labels))

    def _stops(self, served: Served) -> list[int]:
        model, tok = self.bases[served.base_key]
        eos = getattr(model.generation_config, "eos_token_id", None)
        return [t for t in {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])} if t is not None]

    def complete(self, served: Served, messages: list[dict], max_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> Completion:
        """Generate one answer; concurrent calls are batched (see tunewise.serve.batch)."""
        ids = self._encode(served, messages)
        return self.batcher.submit(Job(served.base_key, served.adapter, ids, max_tokens, temperature, top_p, seed,
                                       owner=served))

    def _run_batch(self, jobs: list[Job]) -> list[Completion]:
        with self.lock:
            names = {j.adapter for j in jobs}
            for j in jobs:
                self._load(j.owner, keep=names)
            model, tok = self.bases[jobs[0].base_key]
            stops = self._stops(jobs[0].owner)
            if jobs[0].owner.full:  # a batch shares one model: a full model's batch holds only its own requests
                rows = generate_rows(model, tok.pad_token_id, stops, jobs)
            elif len(names) == 1:
                model.set_adapter(jobs[0].adapter)
                rows = generate_rows(model, tok.pad_token_id, stops, jobs)
            else:  # several adapters in one batch: peft routes each row through its own adapter's LoRA
                rows = generate_rows(model, tok.pad_token_id, stops, jobs, [j.adapter for j in jobs])
        with self.tokenizer_lock:
            texts = [tok.decode(r, skip_special_tokens=True).strip() for r in rows]
        return [Completion(text, len(j.ids), len(r), "stop" if r and r[-1] in stops else "length")
                for j, r, text in zip(jobs, rows, texts)]

    def stream(self, served: Served, messages: list[dict], max_tokens: int, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None) -> Iterator[str | Completion]:
        """Yield text pieces as they are generated, then the finished Completion. Streams are not batched: a
        stream holds the model for its whole generation (batches wait, and go on after it)."""
        from transformers import TextIteratorStreamer  # heavy

        ids = torch.tensor([self._encode(served, messages)], device=self.device)
        self.lock.acquire()
        try:
            self._load(served, keep={served.adapter})
            model, tok = self.bases[served.base_key]
            if not served.full:
                model.set_adapter(served.adapter)
            stops = self._stops(served)
            kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "max_new_tokens": max_tokens,
                  "eos_token_id": stops, "pad_token_id": tok.pad_token_id, "do_sample": temperature > 0}
            if temperature > 0:
                kw.update(temperature=temperature, top_p=top_p)
                if seed is not None:
                    torch.manual_seed(seed)
            streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=120)
            result: dict = {}

            def run() -> None:
                try:
                    with torch.no_grad():
                        result["ids"] = model.generate(**kw, streamer=streamer)[0, ids.shape[1]:].tolist()
                finally:
                    self.lock.release()

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
        except BaseException:
            self.lock.release()
            raise
        pieces = []
        for piece in streamer:
            if piece:
                pieces.append(piece)
                yield piece
        thread.join()  # it finishes just after the streamer's end marker
        if "ids" not in result:
            raise RuntimeError("generation failed (see the server log)")
        out = result["ids"]
        n = next((i + 1 for i, t in enumerate(out) if t in stops), len(out))
        finish = "stop" if out[:n] and out[n - 1] in stops else "length"
        yield Completion("".join(pieces).strip(), ids.shape[1], n, finish)
