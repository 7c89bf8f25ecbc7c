"""Turn a record into the chat messages a model sees. Training, baselines and serving share this, so the
prompt a fine-tuned model is trained on is exactly the prompt it is evaluated with.

The task framing (instruction, label set) goes once into the system turn; user turns carry the input only.
So a few-shot prompt is framing + k (input, answer) exchanges + the question, not k copies of a 77-label list."""

from __future__ import annotations

from tunewise.config import TaskConfig
from tunewise.data.records import Record


def task_framing(task: TaskConfig, labels: list[str] | None) -> str:
    parts = [task.instruction] if task.instruction else []
    if task.type == "classification" and labels:
        parts.append("Answer with one of: " + ", ".join(labels) + ".")
    if task.type == "extraction":
        parts.append("Answer with one JSON object only.")
    return "\n".join(parts)


def prompt_messages(
    record: Record, task: TaskConfig, labels: list[str] | None, shots: list[Record] = ()
) -> list[dict[str, str]]:
    """System turn (system prompt + task framing), each few-shot example as a user/assistant exchange, then the
    record's own conversation up to its answer."""
    framing = task_framing(task, labels)
    own_system = [m["content"] for m in record.prompt_messages if m["role"] == "system"]
    system = "\n".join(s for s in [task.system_prompt, *own_system, framing] if s)
    messages = [{"role": "system", "content": system}] if system else []
    for shot in shots:
        messages.append({"role": "user", "content": shot.input_text})
        messages.append({"role": "assistant", "content": shot.answer})
    messages.extend(m for m in record.prompt_messages if m["role"] != "system")
    return messages


def fine_tuned_labels(task: TaskConfig, labels: list[str] | None) -> list[str] | None:
    """The label list a fine-tuned model's prompt carries: none by default, since the model has learnt the
    labels and a 77-label list costs ~500 prompt tokens on every request. Training, evaluation and serving
    of a fine-tuned model must all call this, so they format prompts identically."""
    return labels if task.list_labels_after_tuning else None


def training_messages(record: Record, task: TaskConfig, labels: list[str] | None) -> list[dict[str, str]]:
    return [*prompt_messages(record, task, labels), {"role": "assistant", "content": record.answer}]
