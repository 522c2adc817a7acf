"""MP-100 semantic labels: the built-in names for the animal faces, user label sets, what the record says."""

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.benchmarks import _semantic_names, build_benchmark, categories_covered
from evaluation.data import KeypointDataset
from evaluation.data.semantic_labels import ANIMAL_FACE, builtin, load
from evaluation.runner import run_benchmark

DATA = Path(__file__).resolve().parents[1] / "data"
MP100 = DATA / "mp100" / "mp100_split1_test.json"
REAL = DATA / "real"


def _at(name: str) -> int:
    return ANIMAL_FACE.index(name)


def test_animal_face_names_follow_the_annotated_geometry():
    """The built-in names imply where each point lies; the split-1 annotations must agree (frontal faces
    dominate: the animal's right is the image's left). Reordering ANIMAL_FACE turns this red."""
    data = json.loads(MP100.read_text())
    faces = {c["id"] for c in data["categories"] if c["name"].endswith("_face")}
    kpts = np.stack([np.asarray(a["keypoints"], float).reshape(-1, 3) for a in data["annotations"]
                     if a["category_id"] in faces])
    assert len(kpts) >= 400

    def share(a, b, axis):  # fraction of faces with point a before point b along x (0) or y (1)
        both = (kpts[:, a, 2] > 0) & (kpts[:, b, 2] > 0)
        return float((kpts[both, a, axis] < kpts[both, b, axis]).mean())

    x, y = 0, 1
    assert share(_at("right eye outer corner"), _at("right eye inner corner"), x) > 0.7
    assert share(_at("right eye inner corner"), _at("left eye inner corner"), x) > 0.85
    assert share(_at("left eye inner corner"), _at("left eye outer corner"), x) > 0.7
    assert share(_at("right mouth corner"), _at("left mouth corner"), x) > 0.8
    assert share(_at("right eye outer corner"), _at("nose tip"), y) > 0.95
    assert share(_at("nose tip"), _at("upper lip"), y) > 0.85
    assert share(_at("upper lip"), _at("lower lip"), y) > 0.9


def test_builtin_set_names_the_animal_faces_and_leaves_numbered_objects_out():
    dataset = KeypointDataset.load(MP100)
    bench = build_benchmark("mp100", dataset, "semantic")
    bench.units += bench.missing  # no MP-100 images here: every unit was set aside as missing
    covered = categories_covered(bench)
    assert {"klipspringer_face", "alpaca_face", "dassie_face", "horse_body", "Woodpecker"} <= set(covered)
    assert not {"swivelchair", "bed", "long_sleeved_outwear", "short_sleeved_dress"} & set(covered)
    face = next(a for a in dataset.annotations if dataset.category_of(a).name == "klipspringer_face")
    assert _semantic_names(bench, face) == list(ANIMAL_FACE)
    horse = next(a for a in dataset.annotations if dataset.category_of(a).name == "horse_body")
    assert "left front paw" in _semantic_names(bench, horse)  # the file's own names, made readable
    assert "kptllm-mp100-v1" in bench.protocol and builtin().sha256 is None


def test_builtin_set_covers_77_of_the_100_categories():
    """The coverage the README states: 47 named categories + 30 animal faces; 23 left out."""
    from kptllm.protocols import catalog

    labels = builtin()
    assert len(labels.categories) == 30
    covered = [n for n in catalog.mp100_categories()
               if labels.labels_for(n, catalog.mp100_category(n).names)]
    assert len(covered) == 77


def _person_mp100(tmp_path, numbered=False):
    data = json.loads((REAL / "coco" / "test_coco.json").read_text())
    people = [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 5][:4]
    category = dict(data["categories"][0], skeleton=[])
    if numbered:
        category["keypoints"] = [str(i) for i in range(len(category["keypoints"]))]
    path = tmp_path / "mp100_split1_test.json"
    path.write_text(json.dumps({"images": data["images"], "annotations": people, "categories": [category]}))
    return path, category


def test_a_user_label_set_renames_and_leaves_out(tiny_dir, tmp_path):
    annotations, category = _person_mp100(tmp_path)
    labels = [None if "ear" in n else n.replace("_", " ") for n in category["keypoints"]]
    labels[0] = "tip of the nose"
    label_file = tmp_path / "labels.json"
    label_file.write_text(json.dumps({"name": "test-set", "categories": {category["name"]: labels}}))
    record = run_benchmark(str(tiny_dir), "mp100", str(annotations), str(REAL / "coco"), str(tmp_path / "out"),
                           task="semantic", progress=False, semantic_labels=str(label_file))
    expected = [e for chunk in (tmp_path / "out" / "chunks").glob("*.json")
                for p in json.loads(chunk.read_text())["predictions"] for e in p["expected"]]
    assert "tip of the nose" in expected and not any("ear" in e for e in expected)
    assert record["semantic_labels"]["name"] == "test-set" and len(record["semantic_labels"]["sha256"]) == 64
    assert record["categories_covered"] == [category["name"]]
    # the same run with the built-in set would ask about the ears: another set is another run
    with pytest.raises(ValueError, match="other settings"):
        run_benchmark(str(tiny_dir), "mp100", str(annotations), str(REAL / "coco"), str(tmp_path / "out"),
                      task="semantic", progress=False)


def test_numbered_categories_have_nothing_to_ask(tiny_dir, tmp_path):
    annotations, _ = _person_mp100(tmp_path, numbered=True)
    with pytest.raises(ValueError, match="no work units"):
        run_benchmark(str(tiny_dir), "mp100", str(annotations), str(REAL / "coco"), str(tmp_path / "out"),
                      task="semantic", progress=False)


@pytest.mark.parametrize("content,message", [
    ("{not json", "cannot read a JSON file"),
    ('{"categories": []}', "expected"),
    ('{"categories": {"person": ["nose", 3]}}', "list of names or nulls"),
    ('{"categories": {"person": ["nose", "  "]}}', "list of names or nulls"),
])
def test_malformed_label_files_are_refused(tmp_path, content, message):
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load(path)


def test_label_count_must_match_the_category(tmp_path):
    dataset = KeypointDataset.load(MP100)
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"categories": {"klipspringer_face": ["nose tip"]}}))
    with pytest.raises(ValueError, match="9 keypoints in the annotation file but 1 labels"):
        build_benchmark("mp100", dataset, "semantic", semantic_labels=load(path))
    with pytest.raises(ValueError, match="semantic-labels is a setting of mp100"):
        build_benchmark("mp100", dataset, "visual", semantic_labels=load(path))
