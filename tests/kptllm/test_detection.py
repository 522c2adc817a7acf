"""GroundingDINO wrapper (kptllm.detection): the frame of its boxes, its query limit, on a tiny random detector."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from kptllm.detection import tiny_random_detector
from kptllm.image import load_image


@pytest.fixture(scope="module")
def detector():
    return tiny_random_detector(seed=0)


def _boxes(detector, image, query="person. dog."):
    return [d.xyxy for d in detector.detect(image, query, box_threshold=0.0, text_threshold=0.0)]


def test_boxes_are_in_the_exif_rotated_frame_the_predictor_uses(detector, tmp_path):
    """A phone photo stored 300x100 with Orientation=6 is 100x300 for the predictor: the detector must see (and
    box) the same 100x300 picture, whether given the path or the opened file."""
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 300, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert upright.size == (100, 300)
    expected = _boxes(detector, upright)
    assert expected and all(x2 <= 100 and y2 <= 300 for _, _, x2, y2 in expected)
    assert _boxes(detector, path) == expected
    assert _boxes(detector, Image.open(path)) == expected


def test_a_16_bit_image_is_scaled_as_the_predictor_scales_it(detector):
    ramp = (np.linspace(0, 65535, 64 * 96).reshape(64, 96)).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I")
    assert _boxes(detector, image) == _boxes(detector, load_image(image))
    assert _boxes(detector, image) != _boxes(detector, image.convert("RGB"))  # what a plain convert would give


def test_a_query_longer_than_the_detector_reads_is_one_clear_error(detector):
    limit = detector.max_query_tokens
    with pytest.raises(ValueError, match=rf"tokens long; the detector reads at most {limit}"):
        detector.detect(load_image(np.zeros((32, 32, 3), np.uint8)), "person. " * limit)
    with pytest.raises(ValueError, match="no object phrase"):
        detector.detect(np.zeros((32, 32, 3), np.uint8), " . ; ")


def test_detect_sets_off_no_deprecation_warning(detector):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _boxes(detector, np.zeros((40, 60, 3), np.uint8))
    assert not [w for w in caught if "labels" in str(w.message)]
