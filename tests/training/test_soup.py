"""`python -m evaluation.training.soup`: two checkpoints' weights averaged, as the docstring says."""

from __future__ import annotations

import json

import pytest
import torch

from evaluation.training.soup import main, soup
from kptllm.modeling.model import KptLLMForKeypoints


@pytest.fixture(scope="module")
def ingredients(tiny_dir, tmp_path_factory):
    """(A, B): the tiny model, and a copy with every weight moved (as a training stage would)."""
    root = tmp_path_factory.mktemp("soup")
    b = root / "b"
    model = KptLLMForKeypoints.from_pretrained(tiny_dir, dtype=torch.float32)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    import shutil

    shutil.copytree(tiny_dir, b)
    model.save_pretrained(b)
    return tiny_dir, b


def _weights(path):
    return KptLLMForKeypoints.from_pretrained(path, dtype=torch.float32).state_dict()


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_the_soup_is_the_interpolation_of_its_ingredients(ingredients, tmp_path, weight):
    a, b = ingredients
    out = soup(a, b, weight, tmp_path / "soup")
    wa, wb, ws = _weights(a), _weights(b), _weights(out)
    moved = [k for k in wa if wa[k].is_floating_point() and not torch.equal(wa[k], wb[k])]
    assert moved  # the check can tell the ingredients apart
    for k in moved:
        assert torch.allclose(ws[k], (1 - weight) * wa[k] + weight * wb[k], atol=1e-6), k
    recipe = json.loads((out / "soup.json").read_text())
    assert recipe["weight_of_b"] == weight and recipe["a"] == str(a) and len(recipe["b_sha256"]) == 64
    assert (out / "tokenizer.json").is_file()  # B's other files come along


def test_float16_ingredients_give_a_float16_soup(ingredients, tmp_path):
    a, b = ingredients
    half = tmp_path / "half"
    import shutil

    shutil.copytree(b, half)
    KptLLMForKeypoints.from_pretrained(b, dtype=torch.float32).to(torch.float16).save_pretrained(half)
    out = soup(a, half, 0.5, tmp_path / "soup")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes


def test_a_bad_weight_another_architecture_or_an_ingredient_as_out_is_refused(ingredients, tmp_path, capsys):
    a, b = ingredients
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        soup(a, b, 1.5, tmp_path / "x")
    with pytest.raises(ValueError, match="new folder"):
        soup(a, b, 0.5, b)
    other = tmp_path / "other"
    import shutil

    shutil.copytree(b, other)
    config = json.loads((other / "config.json").read_text())
    config["image_size"] = config.get("image_size", 96) + 32
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not the same architecture"):
        soup(a, other, 0.5, tmp_path / "x")
    with pytest.raises(SystemExit) as stopped:
        main([str(a), str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert stopped.value.code == 2 and "not a saved model folder" in capsys.readouterr().err
