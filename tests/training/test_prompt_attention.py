"""The prompt-attention diagnostic (evaluation/training/prompt_attention.py): its frame and its run."""

from __future__ import annotations

import json

import pytest
import torch

from evaluation.training.prompt_attention import localisation, main, measure
from kptllm.modeling.position import grid_centres

GRID = (4, 6)  # rows, cols: not square, so a swapped x/y lands elsewhere


def _one_hot(points: torch.Tensor, swap: bool = False) -> torch.Tensor:
    """Attention `[1, P, N]` all on the patch holding each point (or on the patch of (y, x) with `swap`)."""
    rows, cols = GRID
    xy = points.flip(-1) if swap else points
    index = (xy[:, 1] * rows).long().clamp(max=rows - 1) * cols + (xy[:, 0] * cols).long().clamp(max=cols - 1)
    return torch.nn.functional.one_hot(index, rows * cols).float()[None]


def test_localisation_reads_the_row_major_grid_in_patches():
    points = torch.tensor([[0.05, 0.9], [0.9, 0.1], [0.5, 0.3], [0.2, 0.6]])
    right = localisation(_one_hot(points), points, GRID)
    assert right["within_1"] == [1.0] and right["distance"][0] <= 0.5 * 2 ** 0.5 and right["top_weight"] == [1.0]
    assert right["follows_x"][0] > 0.9 and right["follows_y"][0] > 0.9
    swapped = localisation(_one_hot(points, swap=True), points, GRID)
    assert swapped["within_1"][0] < 0.5 and swapped["distance"][0] > 1.5
    assert swapped["follows_x"][0] < 0.5 and swapped["follows_y"][0] < 0.5
    rows_only = points.clone()
    rows_only[:, 0] = 0.5  # a head that looks at the point's row, always in the middle column
    assert localisation(_one_hot(rows_only), points, GRID)["follows_x"][0] == 0.0
    uniform = localisation(torch.full((2, 4, 24), 1 / 24), points, GRID)
    assert uniform["top_weight"] == pytest.approx([1 / 24] * 2)
    # chance: the median distance from the points to every patch centre, in patches
    centres = grid_centres(*GRID)
    every = ((centres[None] - points[:, None]) * torch.tensor([6.0, 4.0])).norm(dim=-1)
    assert right["chance"] == pytest.approx(float(every.median()))


def test_measure_and_cli_on_a_tiny_model(tiny_dir, capsys):
    from kptllm import KeypointPredictor

    predictor = KeypointPredictor.from_pretrained(tiny_dir, device="cpu")
    result = measure(predictor, objects=2)
    layers = predictor.model.prompt_feature_extractor.layers
    heads = layers[0].attn.num_heads
    assert result["points"] > 0 and len(result["layers"]) == len(layers)
    for layer in result["layers"]:
        assert len(layer["distance"]) == heads and all(0 <= w <= 1 for w in layer["within_1"] + layer["top_weight"])
    main(["--model", str(tiny_dir), "--objects", "1", "--device", "cpu", "--json"])
    assert set(json.loads(capsys.readouterr().out)) == {"points", "chance", "layers"}


def test_the_ablation_zeroes_what_the_extractor_reads_and_leaves_the_model_as_it_was(tiny_dir, capsys):
    from kptllm import KeypointPredictor
    from evaluation.training.prompt_attention import semantic_accuracy, without_attended_content

    predictor = KeypointPredictor.from_pretrained(tiny_dir, device="cpu")
    extractor = predictor.model.prompt_feature_extractor
    rows, cols = extractor.grid
    width, ids = extractor.position_proj.out_features, torch.zeros(3, dtype=torch.long)
    prompts, points = torch.randn(3, width), torch.rand(3, 2)
    one, other = torch.randn(1, rows * cols, width), torch.randn(1, rows * cols, width)
    assert extractor.local_proj is not None
    with torch.no_grad():  # a trained local read (the tiny model's starts at zero): the ablation must silence it too
        extractor.local_proj.weight.normal_(0, 0.5)
    before = extractor(prompts, one, ids, points)
    assert not torch.allclose(before, extractor(prompts, other, ids, points))  # normally the support image matters
    with without_attended_content(extractor):  # with nothing read, it cannot
        assert torch.equal(extractor(prompts, one, ids, points), extractor(prompts, other, ids, points))
        assert 0 <= semantic_accuracy(predictor, objects=1) <= 1
    assert torch.equal(extractor(prompts, one, ids, points), before)
    assert not extractor.local_proj._forward_hooks and all(not layer.attn._forward_hooks for layer in extractor.layers)
    main(["--model", str(tiny_dir), "--objects", "1", "--device", "cpu", "--ablate"])
    assert "with the attention outputs and local read zeroed" in capsys.readouterr().out
