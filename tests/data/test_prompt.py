from tunewise.config import TaskConfig
from tunewise.data.prompt import prompt_messages, training_messages
from tunewise.data.records import Record, classification_record

TASK = TaskConfig(instruction="Pick the topic.", system_prompt="Be brief.")
LABELS = ["sport", "tech"]


def test_framing_is_in_the_system_turn_once_even_with_shots():
    shots = [classification_record("goal scored", "sport"), classification_record("new phone", "tech")]
    msgs = prompt_messages(classification_record("team won", "sport"), TASK, LABELS, shots)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == "Be brief.\nPick the topic.\nAnswer with one of: sport, tech."
    assert sum("Answer with one of" in m["content"] for m in msgs) == 1
    assert msgs[-1] == {"role": "user", "content": "team won"}


def test_training_messages_end_with_the_answer():
    msgs = training_messages(classification_record("team won", "sport"), TASK, LABELS)
    assert msgs[-1] == {"role": "assistant", "content": "sport"}
    assert msgs[:-1] == prompt_messages(classification_record("team won", "sport"), TASK, LABELS)


def test_multi_turn_history_and_own_system_prompt_are_kept():
    rec = Record([{"role": "system", "content": "Domain: news."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}, {"role": "user", "content": "q"},
                  {"role": "assistant", "content": "a"}])
    msgs = prompt_messages(rec, TaskConfig(type="generation", instruction="", system_prompt=None), None)
    assert msgs[0] == {"role": "system", "content": "Domain: news."}
    assert [m["content"] for m in msgs[1:]] == ["hi", "hello", "q"]


def test_fine_tuned_prompt_drops_the_label_list_unless_asked():
    from tunewise.data.prompt import fine_tuned_labels

    assert fine_tuned_labels(TASK, LABELS) is None
    msgs = prompt_messages(classification_record("team won", "sport"), TASK, fine_tuned_labels(TASK, LABELS))
    assert msgs[0]["content"] == "Be brief.\nPick the topic."
    keep = TASK.model_copy(update={"list_labels_after_tuning": True})
    assert fine_tuned_labels(keep, LABELS) == LABELS
