"""The prompt path's local read: the support features sampled under the point (prompt_feature_extractor).

If the grid convention were half a cell off, or x and y swapped, or the point read on the wrong support,
a test here goes red.
"""

import json

import pytest
import torch

from kptllm import KptLLMForKeypoints
from kptllm.batch import collate_samples
from kptllm.build import build_tiny
from kptllm.modeling.position import grid_centres
from kptllm.modeling.prompt_feature_extractor import PromptFeatureExtractor, sample_at_points

from .test_modeling import _samples

GRID = (3, 4)  # h, w: not square, so a swapped x/y reads another cell


def test_each_token_is_read_exactly_at_its_grid_centre():
    tokens = torch.randn(2, GRID[0] * GRID[1], 5)
    centres = grid_centres(*GRID)  # row-major, (x, y)
    for m in range(2):
        read = sample_at_points(tokens, GRID, centres, torch.full((len(centres),), m))
        torch.testing.assert_close(read, tokens[m])
    # halfway between two neighbouring centres: their mean (bilinear), along x and along y
    (x0, y0), (x1, _), (_, y1) = centres[0], centres[1], centres[GRID[1]]
    between = torch.tensor([[(x0 + x1) / 2, y0], [x0, (y0 + y1) / 2]])
    read = sample_at_points(tokens, GRID, between, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(read[0], (tokens[0, 0] + tokens[0, 1]) / 2)
    torch.testing.assert_close(read[1], (tokens[0, 0] + tokens[0, GRID[1]]) / 2)
    # beyond the outer centres: the border token (the crop's corners read the corner cells)
    corners = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(sample_at_points(tokens, GRID, corners, torch.zeros(2, dtype=torch.long)),
                               tokens[0, [0, GRID[0] * GRID[1] - 1]])


def test_a_planted_feature_is_read_at_its_point_not_at_its_mirror_or_transpose_or_other_support():
    h, w, dim = 12, 12, 8
    tokens = torch.zeros(2, h * w, dim)
    row, col = 2, 9
    tokens[1, row * w + col, 3] = 1.0  # one patch of support 1 carries the feature
    point = torch.tensor([[(col + 0.5) / w, (row + 0.5) / h]])
    read = lambda p, m: sample_at_points(tokens, (h, w), p, torch.tensor([m]))[0, 3].item()  # noqa: E731
    assert read(point, 1) == pytest.approx(1.0)
    assert read(torch.tensor([[1 - point[0, 0], point[0, 1]]]), 1) == 0.0  # left-right mirror
    assert read(point.flip(-1), 1) == 0.0  # x and y swapped
    assert read(point, 0) == 0.0  # the same point on the other support
    # half a cell away the bilinear read is shared with the neighbour
    assert read(point + torch.tensor([[0.5 / w, 0.0]]), 1) == pytest.approx(0.5)


def test_the_extractor_adds_the_projected_read_to_its_queries():
    extractor = PromptFeatureExtractor(8, 16, 8, (12, 12), num_layers=1, num_heads=2, local_read=True)
    assert torch.count_nonzero(extractor.local_proj.weight) == 0  # starts as the paper's Eq. 2
    with torch.no_grad():
        extractor.local_proj.weight.copy_(torch.eye(8))
    tokens = torch.zeros(1, 144, 8)
    tokens[0, 2 * 12 + 9] = torch.arange(1.0, 9.0)
    prompts = torch.zeros(2, 8)
    points = torch.tensor([[9.5 / 12, 2.5 / 12], [2.5 / 12, 9.5 / 12]])
    queries = extractor._queries(prompts, tokens, torch.zeros(2, dtype=torch.long), points)
    torch.testing.assert_close(queries[0], torch.arange(1.0, 9.0))
    torch.testing.assert_close(queries[1], torch.zeros(8))
    with pytest.raises(ValueError, match="points"):
        extractor(prompts, tokens, torch.zeros(2, dtype=torch.long))


def test_a_checkpoint_saved_without_the_local_read_loads_with_identical_outputs(tmp_path, instances):
    old, processor = build_tiny(seed=5, prompt_local_read=False)
    old.eval()
    assert old.prompt_feature_extractor.local_proj is None
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["prompt_local_read"]  # a config written before the field existed: the default (on) applies
    (tmp_path / "config.json").write_text(json.dumps(config))
    new = KptLLMForKeypoints.from_pretrained(tmp_path).eval()
    assert new.config.prompt_local_read and new.prompt_feature_extractor.local_proj is not None
    # transformers initialises missing weights with _init_weights (N(0, 0.02) for a Linear): ours stays zero
    assert torch.count_nonzero(new.prompt_feature_extractor.local_proj.weight) == 0
    assert torch.count_nonzero(new.prompt_feature_extractor.local_proj.bias) == 0
    batch = collate_samples(processor, _samples(processor, instances))
    with torch.no_grad():
        torch.testing.assert_close(new(**batch).logits, old(**batch).logits, rtol=0, atol=1e-6)
    # ...and once training moves the read, the prompted rows' answers change
    with torch.no_grad():
        new.prompt_feature_extractor.local_proj.weight.normal_(0, 0.5)
        changed = (new(**batch).logits - old(**batch).logits).abs().amax(dim=(1, 2))
    text_row = 1  # the text-prompt sample has no <kpt> token
    assert changed[text_row] < 1e-6 and (changed[[0, 2, 3]] > 1e-3).all()
