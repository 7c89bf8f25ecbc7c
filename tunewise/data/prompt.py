"""Turn a record into the chat messages a model sees. Training, baselines and serving share this, so the
prompt a fine-tuned model is trained on is exactly the prompt it is evaluated with."""

from __future__ import annotations

from tunewise.config import TaskConfig
from tunewise.data.records import Record


def user_turn(record: Record, task: TaskConfig, labels: list[str] | None) -> str:
    if task.type == "classification":
        choices = ", ".join(labels or [])
        return f"{task.instruction}\nAnswer with one of: {choices}.\n\n{record.input_text}"
    return f"{task.instruction}\n\n{record.input_text}" if task.instruction else record.input_text


def prompt_messages(
    record: Record, task: TaskConfig, labels: list[str] | None, shots: list[Record] = ()
) -> list[dict[str, str]]:
    """System prompt, then each few-shot example as a user/assistant exchange, then the question."""
    messages = []
    if task.system_prompt is not None:
        messages.append({"role": "system", "content": task.system_prompt})
    # Earlier turns of a multi-turn record stay; only the last user turn gets the task framing.
    history = record.prompt_messages[:-1]
    messages.extend(m for m in history if m["role"] != "system" or task.system_prompt is None)
    for shot in shots:
        messages.append({"role": "user", "content": user_turn(shot, task, labels)})
        messages.append({"role": "assistant", "content": shot.answer})
    messages.append({"role": "user", "content": user_turn(record, task, labels)})
    return messages


def training_messages(record: Record, task: TaskConfig, labels: list[str] | None) -> list[dict[str, str]]:
    return [*prompt_messages(record, task, labels), {"role": "assistant", "content": record.answer}]
