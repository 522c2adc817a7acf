"""The COCO reader on every real dataset folder, the catalog, MP-100 episodes and AP-10K splits."""

import contextlib
import io
import json
import random
import re

import numpy as np
import pytest

from evaluation.data import (KeypointDataset, ap10k_cross_species, cape_objects, clean_bbox, make_episodes,
                             skeleton_to_zero_based)
from kptllm.protocols import catalog
from kptllm.protocols.protocol import MAX_TEXT_CHARS, clean_text
from tests.realdata import MP100_SPLIT1_TEST, REAL

MP100 = MP100_SPLIT1_TEST


def _coco_files():
    out = []
    for path in sorted(REAL.glob("*/*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "annotations" in data:
            out.append(path)
    return out


@pytest.mark.parametrize("path", _coco_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reader_reads_every_real_folder(path):
    raw = json.loads(path.read_text())
    ds = KeypointDataset.load(path)
    assert len(ds.images) == len(raw["images"]) and len(ds.annotations) == len(raw["annotations"])
    for image in ds.images.values():
        assert image.path is not None and image.path.is_file(), image.file_name  # incl. the Human-Art prefix
    for ann in ds.annotations:
        category = ds.category_of(ann)
        k = len(category.keypoint_names)
        assert ann.keypoints.shape == (k, 3)
        assert np.isfinite(ann.keypoints).all() and (ann.keypoints[:, 2] >= 0).all()
        if path.name != "test_keypoint_partition_metric.json":  # that mmpose fixture stores scores in v
            assert set(np.unique(ann.keypoints[:, 2])) <= {0.0, 1.0, 2.0}
        assert all(0 <= a < k and 0 <= b < k for a, b in category.skeleton)
        assert ann.bbox[2] > 0 and ann.bbox[3] > 0
    if path.parent.name == "humanart":
        assert ds.annotations[0].keypoints.shape == (21, 3)  # keypoints_21 matches the 21 names
    if path.parent.name in ("300w", "wflw"):
        assert ds.categories[1].keypoint_names[:3] == ("0", "1", "2")


def test_skeleton_bases():
    assert skeleton_to_zero_based([[1, 2], [2, 3]], 3) == ((0, 1), (1, 2))
    assert skeleton_to_zero_based([[0, 2], [1, 2]], 3) == ((0, 2), (1, 2))
    coco = KeypointDataset.load(REAL / "coco" / "test_coco.json").categories[1]
    assert set(coco.skeleton) == set(catalog.get("coco").skeleton)  # 1-based file == 0-based mmpose facts
    with pytest.raises(ValueError, match="does not fit"):
        skeleton_to_zero_based([[1, 5]], 3)


def test_missing_and_degenerate_boxes_and_crowd(tmp_path):
    data = {"images": [{"id": 1, "file_name": "x/y/a.png", "width": 100, "height": 80}],
            "categories": [{"id": 1, "name": "t", "keypoints": ["a", "b"], "skeleton": [[1, 2]]}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "keypoints": [10, 20, 2, 30, 50, 1]},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10], "keypoints": [0, 0, 0, 0, 0, 0]},
                {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1, "keypoints": [0] * 6},
            ]}
    (tmp_path / "a.png").write_bytes(b"x")
    ds = KeypointDataset(data, image_root=tmp_path)
    first, second, crowd = ds.annotations
    assert first.bbox == (10, 20, 20, 30) and first.bbox_source == "keypoints"
    assert second.bbox == (0, 0, 100, 80) and second.bbox_source == "image"
    assert crowd.iscrowd and ds.images[1].path == tmp_path / "a.png"  # "x/y/" prefix dropped
    assert first.num_keypoints == 2 and second.num_keypoints == 0


@pytest.mark.parametrize("content, message", [("{", "not valid json"), ("[]", "not a COCO keypoint file")])
def test_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        KeypointDataset.load(path)
    with pytest.raises(ValueError, match="not found"):
        KeypointDataset.load(tmp_path / "missing.json")


def _good_file() -> dict:
    return {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
            "categories": [{"id": 1, "name": "t", "keypoints": ["a", "b"], "skeleton": [[1, 2]]}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20],
                             "keypoints": [10, 20, 2, 30, 50, 1]}]}


def _broken(change):
    data = _good_file()
    change(data)
    return data


@pytest.mark.parametrize("change, where, message", [
    (lambda d: d["images"][0].pop("file_name"), "images[0]", "missing field 'file_name'"),
    (lambda d: d["images"][0].update(width="100"), "images[0]", "positive numbers"),
    (lambda d: d.update(images={"1": "a.png"}), "the file", "'images' must be a list"),
    (lambda d: d.update(annotations=None), "the file", "'annotations' must be a list"),
    (lambda d: d["annotations"][0].pop("image_id"), "annotations[0] (id 7)", "missing field 'image_id'"),
    (lambda d: d["annotations"][0].pop("category_id"), "annotations[0]", "missing field 'category_id'"),
    (lambda d: d["annotations"][0].update(bbox=["a", "b", "c", "d"]), "annotations[0]", "could not convert"),
    (lambda d: d["annotations"][0].update(bbox=[500, 5, 20, 20]), "annotations[0]", "does not overlap its 100x80 image"),
    (lambda d: d["annotations"][0].update(keypoints=[1, 2]), "annotations[0]", "multiple of 3"),
    (lambda d: d["annotations"].append(5), "annotations[1]", "int"),
])
def test_malformed_entries_name_where_and_what(tmp_path, change, where, message):
    """A broken field is one clear ValueError naming the entry, never a KeyError / TypeError traceback."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_broken(change)))
    with pytest.raises(ValueError, match=f"bad.json: malformed COCO keypoint file at {re.escape(where)}.*: .*{re.escape(message)}"):
        KeypointDataset.load(path)
    assert KeypointDataset(_good_file()).annotations[0].bbox == (5, 5, 20, 20)  # the unbroken file loads


def test_clean_bbox_matches_reference_convention():
    assert clean_bbox((10, 20, 30, 40), 100, 100) == (10, 20, 29, 39)
    assert clean_bbox((-5, -5, 200, 200), 100, 50) == (0, 0, 99, 49)
    assert clean_bbox((10, 10, 1, 5), 100, 100) is None


# --------------------------------------------------------------------------- catalog
def test_catalog_covers_the_paper_datasets():
    expected = {"coco": 17, "humanart": 17, "humanart21": 21, "ap10k": 17, "animalpose": 20, "macaque": 17,
                "animal_kingdom": 23, "carfusion": 14}
    assert {k: catalog.get(k).num_keypoints for k in expected} == expected
    for key in expected:
        kset = catalog.get(key)
        assert len(kset.descriptions) == len(kset.names) == len(kset.source_names)
        for name, description in zip(kset.names, kset.descriptions):
            assert clean_text(name) == name and clean_text(description) == description  # usable as prompts
            assert len(description) <= MAX_TEXT_CHARS and description.endswith(".")
        for a, b in kset.flip_pairs:
            left, right = kset.names[a], kset.names[b]
            assert left.replace("left", "right") == right or right.replace("left", "right") == left, (key, left, right)
        if kset.sigmas is not None:
            assert len(kset.sigmas) == kset.num_keypoints
    assert catalog.get("ap10k").names[7] == "left front paw"
    assert catalog.get("coco").descriptions[1] == "The centre of the person's left eye."
    assert catalog.get("coco").sigmas[0] == pytest.approx(0.026)
    with pytest.raises(ValueError, match="unknown dataset"):
        catalog.get("imagenet")


def test_catalog_mp100_and_real_file_names_agree():
    assert len(catalog.mp100_categories()) == 100
    horse = catalog.mp100_category("horse_body")
    assert horse.names[0] == "left eye" and horse.splits["split1"] == "test"
    assert catalog.mp100_category(2).key == "mp100/horse_body"  # by id
    ap10k_file = KeypointDataset.load(REAL / "ap10k" / "test_ap10k.json").categories
    first = next(iter(ap10k_file.values()))
    assert [catalog.readable_name(n) for n in first.keypoint_names] == list(catalog.get("ap10k").names)
    with pytest.raises(ValueError):
        catalog.mp100_category("unicorn")


# --------------------------------------------------------------------------- episodes
def _reference_episodes(path, shots, episodes, queries):
    """An independent transcription of the reference sampler on xtcocotools' COCO API."""
    from xtcocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    cat2obj = {i: [] for i in coco.getCatIds()}
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        for obj in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)):
            if "bbox" not in obj:
                continue
            x, y, w, h = obj["bbox"]
            x1, y1 = max(0, x), max(0, y)
            x2, y2 = min(info["width"] - 1, x1 + max(0, w - 1)), min(info["height"] - 1, y1 + max(0, h - 1))
            if not (("area" not in obj or obj["area"] > 0) and x2 > x1 and y2 > y1):
                continue
            if "keypoints" not in obj or max(obj["keypoints"]) == 0 or obj.get("num_keypoints", 1) == 0:
                continue
            cat2obj[obj["category_id"]].append(obj["id"])
    random.seed(1)
    out = []
    for cls in coco.getCatIds():
        for _ in range(episodes):
            shots_ids = random.sample(cat2obj[cls], shots + queries)
            out.append((cls, tuple(shots_ids[:shots]), tuple(shots_ids[shots:])))
    return out


@pytest.mark.parametrize("shots", [1, 5])
def test_episodes_reproduce_the_reference_sampler(shots):
    ds = KeypointDataset.load(MP100)
    ours = make_episodes(ds, shots=shots, episodes=20)
    assert [(e.category_id, e.support_ids, e.query_ids) for e in ours] == _reference_episodes(MP100, shots, 20, 15)


def test_episodes_are_deterministic_and_follow_the_rules():
    ds = KeypointDataset.load(MP100)
    a, b = make_episodes(ds, shots=5, episodes=10, seed=3), make_episodes(ds, shots=5, episodes=10, seed=3)
    assert a == b and a != make_episodes(ds, shots=5, episodes=10, seed=4)
    assert len(a) == 10 * len(ds.categories)
    for episode in a:
        ids = episode.support_ids + episode.query_ids
        assert len(ids) == len(set(ids)) == 20
        for ann_id in ids:
            ann = ds.annotation(ann_id)
            assert ann.category_id == episode.category_id and not ann.iscrowd and ann.num_keypoints > 0
    with pytest.raises(ValueError, match="usable instances"):
        make_episodes(ds, shots=1, episodes=1, queries=500)


def test_episodes_skip_crowd_and_unlabelled(tmp_path):
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 50, "height": 50} for i in range(4)],
            "categories": [{"id": 7, "name": "t", "keypoints": ["a"], "skeleton": []}],
            "annotations": [
                {"id": 0, "image_id": 0, "category_id": 7, "bbox": [1, 1, 20, 20], "area": 400, "keypoints": [5, 5, 2]},
                {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 20, 20], "area": 400, "keypoints": [0, 0, 0]},
                {"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 1, 20, 20], "area": 400, "iscrowd": 1,
                 "keypoints": [5, 5, 2]},
                {"id": 3, "image_id": 3, "category_id": 7, "bbox": [1, 1, 20, 20], "area": 400, "keypoints": [6, 6, 2]},
            ]}
    assert cape_objects(KeypointDataset(data)) == {7: [0, 3]}


def test_ap10k_cross_species_families():
    ds = KeypointDataset.load(REAL / "ap10k" / "test_ap10k.json")
    families = {ds.categories[a.category_id].supercategory for a in ds.annotations}
    for setting in ("different_order", "same_order"):
        for part in ("train", "test"):
            picked = ap10k_cross_species(ds, setting, part)
            assert all(ds.categories[a.category_id].supercategory in families for a in picked)
    bovidae = ap10k_cross_species(ds, "different_order", "train")
    assert all(ds.categories[a.category_id].supercategory == "Bovidae" for a in bovidae)
    assert len(bovidae) == sum(ds.categories[a.category_id].supercategory == "Bovidae" for a in ds.annotations)
    with pytest.raises(ValueError, match="unknown setting"):
        ap10k_cross_species(ds, "other", "train")
