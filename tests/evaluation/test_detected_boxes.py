"""Box AP (pycocotools) and the whole chain scored with a detector's boxes (evaluation.detected_boxes)."""

from __future__ import annotations

import json

import pytest

from evaluation.cli import main
from evaluation.data import KeypointDataset
from evaluation.detected_boxes import match_objects
from evaluation.metrics import box_ap
from evaluation.runner import run_benchmark


def _ground_truth():
    """Two images, three objects of two categories (xywh boxes)."""
    return {"images": [{"id": 1, "width": 200, "height": 100, "file_name": "a.jpg"},
                       {"id": 2, "width": 200, "height": 100, "file_name": "b.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 80], "area": 4000, "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 20, 80, 40], "area": 3200, "iscrowd": 0},
                            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [30, 5, 60, 90], "area": 5400, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}


def _detections(shift_fraction: float = 0.0):
    """Each ground-truth box as a detection, moved right by `shift_fraction` of its width."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
             "bbox": [a["bbox"][0] + shift_fraction * a["bbox"][2], *a["bbox"][1:]]} for a in _ground_truth()["annotations"]]


def test_a_perfect_detector_scores_one_and_a_shifted_one_what_its_iou_allows():
    assert box_ap(_ground_truth(), _detections())["AP"] == pytest.approx(1.0)
    # moved by 1/4 of the width: IoU = 0.75 / 1.25 = 0.6, a hit at thresholds 0.50, 0.55, 0.60 of the ten
    shifted = box_ap(_ground_truth(), _detections(0.25))
    assert shifted["AP50"] == pytest.approx(1.0)
    assert shifted["AP"] == pytest.approx(0.3, abs=1e-6)
    assert box_ap(_ground_truth(), [])["AP"] == 0.0
    # xyxy written where xywh belongs is not a perfect detector
    as_xyxy = [{**d, "bbox": [d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]}
               for d in _detections()]
    assert box_ap(_ground_truth(), as_xyxy)["AP"] < 0.6


def test_an_object_takes_the_best_overlapping_box_of_its_own_category(tmp_path):
    path = tmp_path / "gt.json"
    data = _ground_truth()
    for a in data["annotations"]:
        a["keypoints"], a["num_keypoints"] = [], 0
    path.write_text(json.dumps(data))
    dataset = KeypointDataset.load(path)
    detections = [
        {"image_id": 1, "category_id": 2, "bbox": [10, 10, 50, 80], "score": 0.99},  # exact, but a car: not for object 1
        {"image_id": 1, "category_id": 1, "bbox": [12, 10, 50, 80], "score": 0.5},  # IoU ~0.92
        {"image_id": 1, "category_id": 1, "bbox": [20, 10, 50, 80], "score": 0.9},  # IoU ~0.67, higher score
        {"image_id": 1, "category_id": 2, "bbox": [150, 20, 80, 40], "score": 0.9},  # IoU 0.25 with object 2: no match
        {"image_id": 2, "category_id": 1, "bbox": [30, 5, 60, 90], "score": 0.1},  # below the operating threshold
    ]
    boxes = match_objects(dataset, detections)
    assert boxes == {1: (12.0, 10.0, 50.0, 80.0), 2: None, 3: None}
    assert match_objects(dataset, detections, box_threshold=0.0)[3] == (30.0, 5.0, 60.0, 90.0)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("kw-chain")
    assert main(["synth", "--out", str(out), "--n", "6", "--seed", "616161"]) == 0
    return out


def _true_boxes(annotations_path, drop: int | None = None) -> list[dict]:
    data = json.loads(annotations_path.read_text())
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in data["annotations"] if a["id"] != drop]


@pytest.mark.parametrize("task", ["text", "semantic", "visual"])
def test_the_chain_with_the_true_boxes_scores_as_the_ground_truth_boxes_and_a_miss_scores_zero(scenes, tmp_path, task):
    from kptllm.embedded import embedded_model_path

    model = str(embedded_model_path())
    annotations, images = scenes / "annotations.json", scenes / "images"
    plain = run_benchmark(model, "keypointworld", str(annotations), str(images), str(tmp_path / "gt"), task=task,
                          batch=8, progress=False)
    # the detector's output is cached in OUT/detections.json: a detector that returns exactly the true boxes
    (tmp_path / "chain").mkdir()
    (tmp_path / "chain" / "detections.json").write_text(json.dumps(_true_boxes(annotations)))
    chain = run_benchmark(model, "keypointworld", str(annotations), str(images), str(tmp_path / "chain"), task=task,
                          batch=8, progress=False, detector="a-detector")
    assert chain["metrics"] == plain["metrics"]
    assert chain["detector"] == "a-detector" and chain["objects_detected"] == chain["objects"]

    # one object missed: its keypoints all count as wrong, every other prediction is unchanged
    first = json.loads(annotations.read_text())["annotations"][0]["id"]
    (tmp_path / "miss").mkdir()
    (tmp_path / "miss" / "detections.json").write_text(json.dumps(_true_boxes(annotations, drop=first)))
    missed = run_benchmark(model, "keypointworld", str(annotations), str(images), str(tmp_path / "miss"), task=task,
                           batch=8, progress=False, detector="a-detector")
    assert missed["objects_detected"] == missed["objects"] - 1
    headline = plain["headline_metric"]
    assert missed["metrics"][headline] < plain["metrics"][headline]
    rows = {}
    for name in ("gt", "miss"):
        chunks = sorted((tmp_path / name / "chunks").glob("*.json"))
        rows[name] = {p["key"]: p for c in chunks for p in json.loads(c.read_text())["predictions"]}
    dropped = [k for k in rows["gt"] if k.split(":")[-1] == str(first)]
    assert dropped
    # in 1-shot units the missed object may also be another unit's support: that support is then shown whole
    from evaluation.benchmarks import build_benchmark, unit_key

    units = build_benchmark("keypointworld", KeypointDataset.load(annotations, image_root=images), task).units
    involved = {unit_key(u) for u in units if first in u.get("support_ids", ())}
    for key, prediction in rows["miss"].items():
        if key in dropped:
            if task == "semantic":
                assert prediction["predicted"] == [None] * len(prediction["expected"])
            else:
                assert all(row == [0.0, 0.0, 0.0] for row in prediction["keypoints"])
        elif key not in involved:
            assert prediction == rows["gt"][key]


def test_task_detection_writes_a_box_ap_record(scenes, tmp_path, monkeypatch):
    from evaluation.training.detector import DetectorSpec, build_detector

    folder = tmp_path / "det"
    build_detector(DetectorSpec(image_size=64, embedding_size=8, hidden_sizes=[8, 16, 16, 32], d_model=16, ffn_dim=32,
                                heads=2, decoder_layers=1, num_queries=10, num_denoising=0)).save_pretrained(folder)
    out = tmp_path / "record"
    assert main(["eval", "--benchmark", "keypointworld", "--task", "detection", "--detector", str(folder),
                 "--annotations", str(scenes / "annotations.json"), "--images", str(scenes / "images"),
                 "--out", str(out)]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["task"] == "detection" and record["detector"] == "det" and record["headline_metric"] == "AP"
    assert 0.0 <= record["metrics"]["AP"] <= record["metrics"]["AP50"] <= 1.0
    assert set(record["per_category"]) <= {"person", "quadruped", "face", "car", "chair"}
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    # the record shows in the results table as its own row
    from evaluation.results import load_records

    table = load_records(tmp_path)
    assert set(table[table["metric"] == "AP"]["setting"]) == {"box AP"}


def test_the_scoring_command_adds_the_detectors_records_apart_from_the_sets_report(tiny_dir, tmp_path, monkeypatch):
    from evaluation.data.keypointworld_sets import SETS, KeypointWorldSet
    from evaluation.results import set_report
    from evaluation.training.detector import DetectorSpec, build_detector
    from evaluation.training.score_records import TASKS, detector_folder, score_records

    monkeypatch.setitem(SETS, "decision", KeypointWorldSet("decision", SETS["decision"].seed, 3, SETS["decision"].job))
    folder = tmp_path / "det"
    build_detector(DetectorSpec(image_size=64, embedding_size=8, hidden_sizes=[8, 16, 16, 32], d_model=16, ffn_dim=32,
                                heads=2, decoder_layers=1, num_queries=10, num_denoising=0)).save_pretrained(folder)
    out = tmp_path / "out"
    done = score_records(str(tiny_dir), out, sets=["decision"], data=tmp_path / "data", samples=20, progress=False,
                         detector=str(folder))
    for task in TASKS:
        record = json.loads((detector_folder(out, "decision", task) / "record.json").read_text())
        assert record["detector"] == "det" and record["set"] == "decision" and str(detector_folder(out, "decision", task)) in done
    for off in (False, True):
        record = json.loads((detector_folder(out, "decision", "detection", off) / "record.json").read_text())
        assert record["task"] == "detection" and record["set"] == "decision"
    report = set_report(out, "decision")
    assert len(report[report["category"] == "all"]) == 6  # the set's own six records only
