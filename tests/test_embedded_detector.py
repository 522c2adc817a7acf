"""The embedded KeypointWorld detector: ships small beside the model, loads offline with no argument, finds the
demo's example objects, and its committed records are what its model card reports."""

import json
from pathlib import Path

import pytest

from kptllm.detection import ClosedSetDetector, box_iou, load_detector
from kptllm.embedded import EMBEDDED_DETECTOR_DIR, embedded_detector_path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def detector():
    return load_detector()


def test_the_embedded_detector_ships_small_and_loads_with_no_argument(detector):
    assert embedded_detector_path() == EMBEDDED_DETECTOR_DIR
    assert isinstance(detector, ClosedSetDetector)
    assert (EMBEDDED_DETECTOR_DIR / "model.safetensors").stat().st_size <= 5 * 2 ** 20
    assert detector.categories == ("person", "quadruped", "face", "car", "chair")
    card = (EMBEDDED_DETECTOR_DIR / "README.md").read_text()
    assert "RESULTS_TABLE" not in card and "Box AP on unseen scenes" in card


def test_a_missing_embedded_detector_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("KPTLLM_EMBEDDED_DETECTOR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="embedded detector"):
        load_detector()


def test_it_finds_the_demo_examples_objects(detector):
    """Every example drawing of the demo (one object each, a different category each) is found: the detection
    of its category with the highest score overlaps the true box by IoU >= 0.5."""
    for meta_file in ("keypointworld.json", "keypointworld_supports.json"):
        for file, entry in json.loads((EXAMPLES / meta_file).read_text()).items():
            found = detector.detect(EXAMPLES / file, entry["category"])
            assert found, f"{file}: no {entry['category']} found"
            assert box_iou(found[0].xywh, entry["bbox"]) >= 0.5, (file, found[0], entry["bbox"])


def test_its_records_are_the_ones_its_card_reports():
    """results/detector/<set>/keypointworld-[offcentre-]detection are the shipped detector's, and the card prints
    their AP / AP50."""
    from evaluation.detected_boxes import detector_sha256

    card = (EMBEDDED_DETECTOR_DIR / "README.md").read_text()
    for set_name in ("decision", "test"):
        for variant in ("detection", "offcentre-detection"):
            record = json.loads((ROOT / "results" / "detector" / set_name / f"keypointworld-{variant}" / "record.json").read_text())
            assert record["checkpoint_sha256"] == detector_sha256(None) and record["set"] == set_name
            assert f"{record['metrics']['AP']:.3f} / {record['metrics']['AP50']:.3f}" in card, (set_name, variant)
