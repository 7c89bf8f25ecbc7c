"""Safe loading: adapters and full models from safetensors only, one-line errors for anything else."""

import shutil

import pytest
import torch

from tests.fixtures.runs import tiny_adapter
from tunewise.errors import ModelError
from tunewise.models import load_adapter, load_model, load_weights, weights_kind


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """The same adapter saved twice: as safetensors, and as a pickled adapter_model.bin only."""
    from peft import PeftModel

    root = tmp_path_factory.mktemp("adapters")
    safe = tiny_adapter(tiny_model_dir, root / "safe", seed=1)
    PeftModel.from_pretrained(load_model(tiny_model_dir, "cpu"), safe).save_pretrained(
        root / "pickled", safe_serialization=False)
    assert (root / "pickled" / "adapter_model.bin").is_file()
    return safe, root / "pickled"


def test_a_safetensors_adapter_loads_and_changes_the_model(adapters, tiny_model_dir):
    ids = torch.tensor([[5, 9, 17]])
    tuned = load_weights(adapters[0], tiny_model_dir, "cpu")
    base = load_model(tiny_model_dir, "cpu")
    assert weights_kind(adapters[0]) == "adapter"
    assert not torch.allclose(tuned(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-4)


def test_a_pickled_adapter_is_refused_with_one_line(adapters, tiny_model_dir):
    with pytest.raises(ModelError, match=r"pickled: only adapter_model.bin; .*safetensors only") as err:
        load_adapter(load_model(tiny_model_dir, "cpu"), adapters[1])
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="safetensors only"):
        load_weights(adapters[1], tiny_model_dir, "cpu")


def test_the_evaluation_loader_refuses_a_pickled_adapter(adapters, tiny_model_dir):
    from tunewise.evaluate import load_fine_tuned
    from tunewise.models import ResolvedModel

    with pytest.raises(ModelError, match="only adapter_model.bin"):
        load_fine_tuned(ResolvedModel("tiny", tiny_model_dir, "sha"), adapters[1])


def test_a_full_model_folder_needs_safetensors(tiny_model_dir, tmp_path):
    assert weights_kind(tiny_model_dir) == "full"
    pickled = shutil.copytree(tiny_model_dir, tmp_path / "pickled")
    torch.save(load_model(tiny_model_dir, "cpu").state_dict(), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"only pytorch_model.bin; "):
        load_weights(pickled, tiny_model_dir, "cpu")
    with pytest.raises(ModelError, match="neither a PEFT adapter"):
        weights_kind(tmp_path)


def test_causal_lm_class_is_what_load_model_builds_read_from_config_json_alone(tiny_model_dir, tmp_path):
    from tunewise.models import causal_lm_class

    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder)
    assert causal_lm_class(folder) is type(load_model(tiny_model_dir, "cpu"))
