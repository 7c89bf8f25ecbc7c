"""tunewise.soup.weights: the mean of tiny saved models, compared with a mean computed here tensor by tensor."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunewise.errors import ConfigError
from tunewise.soup.weights import resolve_ingredient, write_soup
from tunewise.testing import save_tiny_model


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingredients")
    return [save_tiny_model(root / f"m{seed}", seed=seed) for seed in range(3)]


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_uniform_soup_is_the_elementwise_mean_and_loads_and_generates(tiny_models, tmp_path, tiny_tokenizer):
    from tunewise.models import load_model

    out = tmp_path / "soup"
    write_soup(tiny_models, out)
    soup, parts = _weights(out), [_weights(m) for m in tiny_models]
    assert soup.keys() == parts[0].keys()
    for name, tensor in soup.items():
        expected = torch.stack([p[name].float() for p in parts]).mean(0).to(parts[0][name].dtype)
        assert tensor.dtype == parts[0][name].dtype
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-7)
    # A complete model folder: config, tokenizer and generation config came along.
    assert {"config.json", "tokenizer.json", "generation_config.json"} <= {p.name for p in out.iterdir()}
    model = load_model(out, "cpu")
    ids = tiny_tokenizer("the match", return_tensors="pt")["input_ids"]
    generated = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 3


def test_a_model_averaged_with_itself_is_unchanged(tiny_models, tmp_path):
    write_soup([tiny_models[0], tiny_models[0]], tmp_path / "soup")
    soup, orig = _weights(tmp_path / "soup"), _weights(tiny_models[0])
    assert soup.keys() == orig.keys()
    assert all(torch.equal(soup[k], orig[k]) for k in orig)


def test_bf16_ingredients_are_summed_in_fp32_and_written_in_bf16(tiny_models, tmp_path):
    folders = []
    for i, m in enumerate(tiny_models[:2]):
        folder = shutil.copytree(m, tmp_path / f"bf16-{i}")
        save_file({k: v.bfloat16() for k, v in _weights(m).items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
        folders.append(folder)
    write_soup(folders, tmp_path / "soup")
    a, b, soup = _weights(folders[0]), _weights(folders[1]), _weights(tmp_path / "soup")
    for k in soup:
        assert soup[k].dtype == torch.bfloat16
        assert torch.equal(soup[k], ((a[k].float() + b[k].float()) / 2).bfloat16())


def _broken_copy(src, dst, edit):
    folder = shutil.copytree(src, dst)
    weights = _weights(folder)
    edit(weights)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("edit, words", [
    (lambda w: w.update({"model.norm.weight": w["model.norm.weight"][:-1].clone()}), "shape"),
    (lambda w: w.pop("model.norm.weight"), "has no tensor model.norm.weight"),
    (lambda w: w.update({"extra.weight": torch.zeros(2)}), "extra.weight"),
])
def test_mismatched_tensors_are_a_config_error_naming_the_folder_and_tensor(tiny_models, tmp_path, edit, words):
    bad = _broken_copy(tiny_models[1], tmp_path / "bad", edit)
    with pytest.raises(ConfigError, match=words) as err:
        write_soup([tiny_models[0], bad], tmp_path / "soup")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_another_architecture_is_a_config_error(tiny_models, tmp_path):
    other = shutil.copytree(tiny_models[1], tmp_path / "other")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "mistral",
                                                   "architectures": ["MistralForCausalLM"]}))
    with pytest.raises(ConfigError, match="other.*mistral"):
        write_soup([tiny_models[0], other], tmp_path / "soup")


def test_ingredients_resolve_from_run_folders(tiny_models, tmp_path):
    run = tmp_path / "runs" / "r1"
    shutil.copytree(tiny_models[0], run / "model")
    assert resolve_ingredient(run) == run / "model"
    assert resolve_ingredient(tiny_models[0]) == tiny_models[0]
    with pytest.raises(ConfigError, match="not a model folder"):
        resolve_ingredient(tmp_path / "runs")
