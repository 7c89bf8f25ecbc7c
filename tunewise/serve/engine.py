"""Models in memory: one copy of each base model, with every requested adapter loaded onto it by name
(peft `load_adapter` / `set_adapter`), so serving several fine-tunes costs one base model of memory.

Generation is serialised with a lock: adapters are switched on the shared model, and on CPU one generate call
already uses every core."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tunewise.config import TaskConfig
from tunewise.data.prompt import fine_tuned_labels, prompt_messages
from tunewise.data.records import Record
from tunewise.models import load_model, load_tokenizer
from tunewise.registry import ModelRecord
from tunewise.train.tokenize import encode_prompt


@dataclass
class Served:
    """A registered model ready to generate: the shared base, the adapter's name on it, its task framing."""

    record: ModelRecord
    base_key: str
    adapter: str
    task: TaskConfig
    labels: list[str] | None


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
    def __init__(self, max_adapters: int = 8, device: str = "cpu"):
        self.device = device
        self.max_adapters = max_adapters
        self.bases: dict[str, list] = {}  # base path -> [model (PeftModel once an adapter is on), tokenizer]
        self.adapters: OrderedDict[str, str] = OrderedDict()  # adapter name -> base path, least recent first
        self.lock = threading.Lock()

    def prepare(self, record: ModelRecord, task: TaskConfig, labels: list[str] | None) -> Served:
        from peft import PeftModel

        name = f"model-{record.id}"
        key = str(record.base_model["path"])
        with self.lock:
            if key not in self.bases:
                self.bases[key] = [load_model(Path(key), self.device), load_tokenizer(Path(key))]
            entry = self.bases[key]
            if name not in self.adapters:
                if isinstance(entry[0], PeftModel):
                    entry[0].load_adapter(str(record.artifact_path), adapter_name=name)
                else:
                    entry[0] = PeftModel.from_pretrained(entry[0], str(record.artifact_path), adapter_name=name)
                entry[0].eval()
                self.adapters[name] = key
                self._evict(keep=name)
            self.adapters.move_to_end(name)
        return Served(record, key, name, task, labels)

    def _evict(self, keep: str) -> None:
        while len(self.adapters) > self.max_adapters:
            old = next(a for a in self.adapters if a != keep)
            base = self.bases[self.adapters.pop(old)][0]
            if old in base.peft_config:
                base.delete_adapter(old)

    def loaded(self) -> list[str]:
        return list(self.adapters)

    def _inputs(self, served: Served, messages: list[dict]) -> tuple[object, torch.Tensor]:
        model, tok = self.bases[served.base_key]
        ids = encode_prompt(tok, chat_to_prompt(messages, served.task, served.labels))
        return tok, torch.tensor([ids], device=self.device)

    def _gen_kwargs(self, tok, model, ids, max_tokens: int, temperature: float, top_p: float, seed) -> dict:
        eos = getattr(model.generation_config, "eos_token_id", None)
        stops = [t for t in {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])} if t is not None]
        kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "max_new_tokens": max_tokens,
              "eos_token_id": stops, "pad_token_id": tok.pad_token_id, "do_sample": temperature > 0}
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p)
            if seed is not None:
                torch.manual_seed(seed)
        return kw

    @torch.no_grad()
    def complete(self, served: Served, messages: list[dict], max_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> Completion:
        with self.lock:
            model, tok = self.bases[served.base_key]
            model.set_adapter(served.adapter)
            tok, ids = self._inputs(served, messages)
            kw = self._gen_kwargs(tok, model, ids, max_tokens, temperature, top_p, seed)
            out = model.generate(**kw)[0, ids.shape[1]:].tolist()
        n = next((i + 1 for i, t in enumerate(out) if t in kw["eos_token_id"]), len(out))
        finish = "stop" if n < len(out) or (out and out[-1] in kw["eos_token_id"]) else "length"
        text = tok.decode(out[:n], skip_special_tokens=True).strip()
        return Completion(text, ids.shape[1], n, finish)

    def stream(self, served: Served, messages: list[dict], max_tokens: int, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None) -> Iterator[str | Completion]:
        """Yield text pieces as they are generated, then the finished Completion."""
        from transformers import TextIteratorStreamer

        self.lock.acquire()
        try:
            model, tok = self.bases[served.base_key]
            model.set_adapter(served.adapter)
            tok, ids = self._inputs(served, messages)
            kw = self._gen_kwargs(tok, model, ids, max_tokens, temperature, top_p, seed)
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
        n = next((i + 1 for i, t in enumerate(out) if t in kw["eos_token_id"]), len(out))
        finish = "stop" if n < len(out) or (out and out[-1] in kw["eos_token_id"]) else "length"
        yield Completion("".join(pieces).strip(), ids.shape[1], n, finish)
