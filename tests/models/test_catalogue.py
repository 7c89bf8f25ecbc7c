import pytest

from tunewise.errors import ModelError
from tunewise.models import resolve_model


def test_local_folder_resolves_with_a_stable_hash(tiny_model_dir):
    a = resolve_model(str(tiny_model_dir))
    b = resolve_model(str(tiny_model_dir))
    assert a.path == tiny_model_dir
    assert len(a.sha256) == 64 and a.sha256 == b.sha256


def test_hub_ids_are_never_downloaded(tmp_path):
    with pytest.raises(ModelError, match="hub ids are not downloaded"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="never loads pickle"):
        resolve_model(str(tmp_path))


def test_unknown_embedded_name(tmp_path):
    with pytest.raises(ModelError, match="unknown embedded model"):
        resolve_model("embedded:gpt-17", tmp_path)
