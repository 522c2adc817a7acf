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


# ----------------------------------------------------------------------------- the pixel read
def test_a_pixel_window_is_centred_on_its_point_in_the_pixel_centre_convention():
    """Pixel i's centre is (i + 0.5) / S: a point there reads pixel i at the window's centre, its neighbours one
    pixel apart around it, zero beyond the crop; on the right crop, not mirrored or transposed."""
    from kptllm.modeling.prompt_feature_extractor import sample_windows

    size, side = 10, 3
    pixels = torch.zeros(2, 3, size, size)
    pixels[1, 0] = torch.arange(size * size, dtype=torch.float32).reshape(size, size)  # value = 10 * row + col
    row, col = 2, 7
    point = torch.tensor([[(col + 0.5) / size, (row + 0.5) / size]])
    window = sample_windows(pixels, point, torch.tensor([1]), side).reshape(3, side, side)
    expected = torch.tensor([[10.0 * r + c for c in (col - 1, col, col + 1)] for r in (row - 1, row, row + 1)])
    torch.testing.assert_close(window[0], expected)
    assert window[1:].abs().sum() == 0
    assert sample_windows(pixels, point, torch.tensor([0]), side).abs().sum() == 0  # the other crop
    mirror = sample_windows(pixels, torch.tensor([[1 - point[0, 0], point[0, 1]]]), torch.tensor([1]), side)
    assert mirror.reshape(3, side, side)[0, 1, 1] == 10 * row + (size - 1 - col)
    transposed = sample_windows(pixels, point.flip(-1), torch.tensor([1]), side)
    assert transposed.reshape(3, side, side)[0, 1, 1] == 10 * col + row
    # half a pixel to the right: the mean of two neighbours; at the corner: zeros outside the crop
    half = sample_windows(pixels, point + torch.tensor([[0.5 / size, 0.0]]), torch.tensor([1]), side)
    assert half.reshape(3, side, side)[0, 1, 1] == pytest.approx(10 * row + col + 0.5)
    corner = sample_windows(pixels, torch.tensor([[0.5 / size, 0.5 / size]]), torch.tensor([1]), side)
    corner = corner.reshape(3, side, side)[0]
    assert corner[0].abs().sum() == 0 and corner[:, 0].abs().sum() == 0  # the row and column outside the crop
    assert corner[2, 2] == pytest.approx(11.0, abs=1e-4)  # pixel (1, 1)


def test_the_pixel_read_goes_into_the_query_and_needs_the_pixels():
    extractor = PromptFeatureExtractor(8, 16, 8, (12, 12), num_layers=1, num_heads=2, local_read=False, pixel_read=3)
    assert torch.count_nonzero(extractor.pixel_proj.weight) == 0 and extractor.pixel_proj.in_features == 27
    with torch.no_grad():
        extractor.pixel_proj.weight.zero_()
        extractor.pixel_proj.weight[0, 4] = 1.0  # channel 0, the window's centre pixel
    pixels = torch.zeros(1, 3, 96, 96)
    pixels[0, 0, 20, 70] = 5.0
    points = torch.tensor([[70.5 / 96, 20.5 / 96], [20.5 / 96, 70.5 / 96]])
    ids = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        queries = extractor._queries(torch.zeros(2, 8), torch.zeros(1, 144, 8), ids, points, pixels)
    assert float(queries[0, 0]) == pytest.approx(5.0, abs=1e-4) and float(queries[1, 0]) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="support_pixels"):
        extractor(torch.zeros(2, 8), torch.zeros(1, 144, 8), ids, points)


def test_a_checkpoint_continued_with_the_pixel_read_starts_with_identical_outputs(tmp_path, instances):
    """The training recipe's `model.kptllm: {prompt_pixel_read: 7}` on a checkpoint without it: the new layer is
    zero, so the outputs are the checkpoint's until training moves it; then the prompted rows change."""
    from evaluation.training.model import build_model

    old, processor = build_tiny(seed=6)
    old.eval()
    old.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    new, _ = build_model({"type": "checkpoint", "path": str(tmp_path), "kptllm": {"prompt_pixel_read": 7}})
    new.eval()
    assert new.config.prompt_pixel_read == 7 and torch.count_nonzero(new.prompt_feature_extractor.pixel_proj.weight) == 0
    batch = collate_samples(processor, _samples(processor, instances))
    with torch.no_grad():
        torch.testing.assert_close(new(**batch).logits, old(**batch).logits, rtol=0, atol=1e-6)
        new.prompt_feature_extractor.pixel_proj.weight.normal_(0, 0.5)
        changed = (new(**batch).logits - old(**batch).logits).abs().amax(dim=(1, 2))
    assert changed[1] < 1e-6 and (changed[[0, 2, 3]] > 1e-3).all()
    new.save_pretrained(tmp_path / "again")
    assert KptLLMForKeypoints.from_pretrained(tmp_path / "again").config.prompt_pixel_read == 7
    with pytest.raises(ValueError, match="prompt_pixel_read"):
        build_tiny(seed=6, prompt_pixel_read=-1)
