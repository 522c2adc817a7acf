"""KeypointWorld versions (issue 28): v2 draws a quadruped's hind legs as a real animal's; v1 stays byte for byte."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.cli import main
from evaluation.data.keypointworld import (DEFAULT_VERSION, QUADRUPED, describe, description_version, make_quadruped, parse_description,
                                           render_scene, write_dataset)
from evaluation.results import keypointworld_dataset
from evaluation.training.data import KeypointWorldSource, list_sources

RESULTS = Path(__file__).resolve().parents[2] / "results"


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# the decision set's plain annotation file as version 1 draws it: what every record up to stage 15 was scored on
# (results/decision/*/record.json before stage 16 shipped with version 2)
V1_DECISION_SHA256 = "6b9a1fae0aaee84f51c67f7d22164b03c441967750b91450776898f405ec9cee"


def test_the_records_were_scored_on_the_default_version_and_version_1_is_unchanged(tmp_path):
    """The records name their world version, and it is the default one: rendering the set again with the default
    gives their file byte for byte; version 1 still renders the file the earlier records were scored on."""
    record = json.loads((RESULTS / "decision" / "keypointworld-text" / "record.json").read_text())
    n, seed, offcentre = parse_description(record["annotations_description"])
    assert description_version(record["annotations_description"]) == DEFAULT_VERSION == 2
    assert _sha(write_dataset(tmp_path / "default", n, seed, offcentre=offcentre)) == record["annotations_sha256"]
    assert _sha(write_dataset(tmp_path / "v1", n, seed, offcentre=offcentre, version=1)) == V1_DECISION_SHA256


def test_version_2_renders_deterministically_and_names_itself(tmp_path):
    for folder in ("a", "b"):
        assert main(["synth", "--out", str(tmp_path / folder), "--n", "8", "--seed", "4242", "--world-version", "2"]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all(_sha(tmp_path / "a" / f) == _sha(tmp_path / "b" / f) for f in files)
    text = json.loads((tmp_path / "a" / "annotations.json").read_text())["info"]["description"]
    assert text == describe(8, 4242, False, 2) == "KeypointWorld v2, 8 images, seed 4242"
    assert parse_description(text) == (8, 4242, False) and description_version(text) == 2
    assert keypointworld_dataset({"annotations_description": text}) == "KeypointWorld v2 seed 4242"
    assert keypointworld_dataset({"annotations_description": describe(8, 4242, version=1)}) == "KeypointWorld seed 4242"
    with pytest.raises(ValueError, match="versions 1, 2"):
        render_scene(np.random.default_rng(0), version=3)
    assert main(["synth", "--out", str(tmp_path / "c"), "--n", "1", "--seed", "1", "--world-version", "7"]) == 2


def test_version_2_changes_quadrupeds_only():
    """Scenes without a quadruped are pixel for pixel the same in both versions; with one they differ."""
    same = differ = 0
    for i in range(40):
        a, b = (render_scene(np.random.default_rng([99, i]), version=v) for v in (1, 2))
        if any(o.category.name == "quadruped" for o in a.objects):
            differ += not np.array_equal(np.asarray(a.image), np.asarray(b.image))
        else:
            assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
            same += 1
    assert same >= 10 and differ >= 10


def test_version_2_hind_legs_differ_from_forelegs_as_an_animals_do():
    """In the canonical frame (facing +x): the stifle (knee) is ahead of the hip and the paw behind the knee,
    a thigh is drawn; forelegs stand under the shoulder. v1 draws both alike (the knee anywhere)."""
    k = {n: i for i, n in enumerate(QUADRUPED)}
    v1_knee_behind = 0
    for seed in range(50):
        spec = make_quadruped(np.random.default_rng(seed), 2)
        p = spec.keypoints
        for side in ("left", "right"):
            assert p[k[f"{side} knee"], 0] > p[k[f"{side} hip"], 0]
            assert p[k[f"{side} back paw"], 0] < p[k[f"{side} knee"], 0]
            assert abs(p[k[f"{side} elbow"], 0] - p[k[f"{side} shoulder"], 0]) < 0.07
        assert sum(s.kind == "poly" and s.side is not None for s in spec.shapes) == 2  # the two thighs
        old = make_quadruped(np.random.default_rng(seed), 1).keypoints
        v1_knee_behind += old[k["left knee"], 0] < old[k["left hip"], 0]
        assert not any(s.kind == "poly" and s.side is not None for s in make_quadruped(np.random.default_rng(seed), 1).shapes)
    assert v1_knee_behind >= 10  # v1's knees fall either side of the hip


def test_training_sources_take_a_version_and_category_weights():
    (source,), _ = list_sources([{"type": "keypointworld", "version": 2, "category_weights": {"quadruped": 4}}])
    assert source.version == 2
    rng = np.random.default_rng(0)
    picked = [source.sample(rng, 0)[0].names == tuple(QUADRUPED) for _ in range(200)]
    assert 0.4 < np.mean(picked) < 0.8  # 4 / 8 expected; uniform would give 0.2
    with pytest.raises(ValueError, match="category_weights"):
        KeypointWorldSource(category_weights={"dragon": 1})
    with pytest.raises(ValueError, match="versions 1, 2"):
        KeypointWorldSource(version=5)
