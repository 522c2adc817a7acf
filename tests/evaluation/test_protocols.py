"""Issue #6.6: Animal Kingdom PCK@0.05, AP with detected boxes (rescoring, OKS-NMS), MP-100 cross-supercategory."""

import json
import math

import numpy as np
import pytest

from evaluation.benchmarks import build_benchmark, oks_iou, oks_nms, rescore
from evaluation.data import KeypointDataset
from evaluation.runner import run_benchmark
from tests.helpers import Oracle
from tests.realdata import REAL

COCO_JSON = REAL / "coco" / "test_coco.json"


def test_rescoring_is_box_score_times_mean_keypoint_score_above_0_2():
    assert rescore([0.1, 0.5, 0.9], 0.8) == pytest.approx(0.8 * 0.7)
    assert rescore([0.2, 0.1], 0.9) == 0.0  # none above 0.2 (strict)
    assert rescore([1.0, 1.0], 0.5) == 0.5


def test_oks_nms_on_a_hand_computed_case():
    # sigmas 0.5 -> variances (2 * 0.5)^2 = 1; areas 1 -> e = d^2 / 1 / 1 / 2
    def inst(x, score):
        return {"keypoints": [[x, 0, 1], [x, 0, 1]], "score": score, "area": 1.0}

    a, b, c, d = inst(0, 0.9), inst(0, 0.8), inst(1, 0.7), inst(math.sqrt(0.1), 0.6)
    g = np.array(a["keypoints"], dtype=float).reshape(-1)
    rows = np.array([np.array(i["keypoints"], dtype=float).reshape(-1) for i in (b, c, d)])
    assert oks_iou(g, rows, 1.0, np.ones(3), [0.5, 0.5]) == pytest.approx([1.0, math.exp(-0.5), math.exp(-0.05)], 1e-6)
    # b (OKS 1) and d (OKS 0.951) overlap a above 0.9: dropped; c (OKS 0.607) stays
    assert oks_nms([d, c, b, a], 0.9, [0.5, 0.5]) == [3, 1]
    assert oks_nms([a, d], 0.96, [0.5, 0.5]) == [0, 1]  # 0.951 <= 0.96: kept
    assert oks_nms([], 0.9, [0.5]) == []


class _Oracle(Oracle):
    """Answers with the ground truth of the labelled instance overlapping the given box most (score 1 if labelled)."""

    def __init__(self, path):
        super().__init__()
        data = KeypointDataset.load(path)
        self.by_file = {}
        for a in data.annotations:
            if a.num_keypoints and not a.iscrowd:
                self.by_file.setdefault(data.images[a.image_id].file_name.split("/")[-1], []).append(a)

    def truth(self, request):
        bbox = request.bbox

        def iou(a):
            x0, y0 = max(a.bbox[0], bbox[0]), max(a.bbox[1], bbox[1])
            x1 = min(a.bbox[0] + a.bbox[2], bbox[0] + bbox[2])
            y1 = min(a.bbox[1] + a.bbox[3], bbox[1] + bbox[3])
            inter = max(0, x1 - x0) * max(0, y1 - y0)
            return inter / (a.bbox[2] * a.bbox[3] + bbox[2] * bbox[3] - inter)

        return max(self.by_file[str(request.image).split("/")[-1]], key=iou).keypoints


def test_ap_with_detected_boxes(tmp_path):
    boxes = REAL / "coco" / "test_coco_det_AP_H_56.json"
    record = run_benchmark("oracle", "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path), boxes=str(boxes),
                           predictor=_Oracle(COCO_JSON), progress=False)
    detections = json.loads(boxes.read_text())
    assert record["counts"]["detections"] == len(detections) and record["boxes_sha256"]
    people = [a for a in json.loads(COCO_JSON.read_text())["annotations"] if a["num_keypoints"] and not a["iscrowd"]]
    # every GT instance is answered by many boxes; OKS-NMS keeps one answer per person
    assert record["counts"]["kept_after_nms"] == len(people)
    assert record["metrics"]["AP"] == pytest.approx(1.0) and "detected boxes" in record["protocol"]
    with pytest.raises(ValueError, match="boxes needs a benchmark scored by OKS AP"):
        run_benchmark("oracle", "mp100", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "x"),
                      boxes=str(boxes), predictor=_Oracle(COCO_JSON), progress=False)


def test_a_person_in_an_image_the_detector_missed_counts_against_ap(tmp_path):
    """mmpose's CocoMetric scores detections against the whole annotation file: drop every box of one image
    and that image's people are misses (AR = the share of people left), not left out of the ground truth."""
    detections = json.loads((REAL / "coco" / "test_coco_det_AP_H_56.json").read_text())
    gt = json.loads(COCO_JSON.read_text())
    people = [a for a in gt["annotations"] if a["num_keypoints"] and not a["iscrowd"]]
    missed = people[0]["image_id"]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([d for d in detections if d["image_id"] != missed]))
    record = run_benchmark("oracle", "coco", str(COCO_JSON), str(REAL / "coco"), str(tmp_path / "run"), boxes=str(boxes),
                           predictor=_Oracle(COCO_JSON), progress=False)
    found = sum(a["image_id"] != missed for a in people)
    assert record["metrics"]["AR"] == pytest.approx(found / len(people))
    assert record["metrics"]["AP"] < 1.0


def test_gt_box_ap_ranks_instances_as_mmpose_does(tmp_path):
    """GT boxes (box score 1): an instance's score is the mean of its keypoint scores above 0.2, as in mmpose's
    CocoMetric. An exact answer with half its keypoints scored 0.1 must outrank a poor one scored 0.5 all over
    (AP 0.505); ranked by the plain mean (0.476 < 0.5) it came second (AP 0.2525)."""
    from PIL import Image

    from evaluation.benchmarks import score
    from evaluation.metrics import keypoint_ap
    from kptllm.protocols import catalog

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    images, anns = [], []
    for i in (1, 2):
        Image.new("RGB", (200, 200)).save(tmp_path / "img" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        kp = [v for _ in range(17) for v in (float(50 + rng.uniform(0, 100)), float(30 + rng.uniform(0, 140)), 2)]
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [50, 30, 100, 140], "area": 9000.0,
                     "iscrowd": 0, "num_keypoints": 17, "keypoints": kp})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "keypoints": list(catalog.get("coco").names), "skeleton": []}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    bench = build_benchmark("coco", KeypointDataset.load(tmp_path / "gt.json", tmp_path / "img"))
    poor = np.array(anns[0]["keypoints"], dtype=np.float64).reshape(17, 3)
    poor[:, :2] += 25
    poor[:, 2] = 0.5
    exact = np.array(anns[1]["keypoints"], dtype=np.float64).reshape(17, 3)
    exact[:, 2] = [0.9] * 8 + [0.1] * 9
    ours = score(bench, [{"keypoints": p.tolist(), "parsed": [True] * 17} for p in (poor, exact)])["metrics"]["AP"]
    mmpose = keypoint_ap(gt, [{"image_id": 1, "category_id": 1, "keypoints": poor.reshape(-1).tolist(), "score": 0.5},
                              {"image_id": 2, "category_id": 1, "keypoints": exact.reshape(-1).tolist(), "score": 0.9}])["AP"]
    assert ours == pytest.approx(mmpose) and ours == pytest.approx(0.505, abs=1e-3)


def test_animal_kingdom_headline_is_pck_0_05(tmp_path):
    path = REAL / "ak" / "test_animalkingdom.json"
    from tests.evaluation.test_runner import _Oracle as GTOracle

    record = run_benchmark("oracle", "animal_kingdom", str(path), str(path.parent), str(tmp_path),
                           predictor=GTOracle(path), progress=False)
    assert record["headline_metric"] == "PCK@0.05"
    assert record["metrics"]["PCK@0.05"] == 1.0 and record["metrics"]["PCK@0.2"] == 1.0


def test_mp100_cross_supercategory_setting(tmp_path):
    from evaluation.results import load_records, paper_results
    from tests.realdata import MP100_SPLIT1_TEST

    dataset = KeypointDataset.load(MP100_SPLIT1_TEST)
    bench = build_benchmark("mp100", dataset, "visual", 1, 2, supercategory="Furniture")
    names = {dataset.categories[u["category_id"]].name for u in bench.units + bench.missing}
    assert names == {"swivelchair", "bed"} and "cross-supercategory Furniture" in bench.protocol
    full = build_benchmark("mp100", dataset, "visual", 1, 2)
    assert [u for u in full.units + full.missing if u["category_id"] in {u["category_id"] for u in bench.missing}] \
        == bench.units + bench.missing  # the same episodes as the full run
    with pytest.raises(ValueError, match="no Vehicle categories"):
        build_benchmark("mp100", dataset, "visual", 1, 2, supercategory="Vehicle")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "record.json").write_text(json.dumps(
        {"model": "m", "benchmark": "mp100", "task": "visual", "shots": 1, "supercategory": "Furniture",
         "annotations": "mp100_all.json", "metrics": {"PCK@0.2": 0.5}}))
    row = load_records(tmp_path).iloc[0]
    paper = paper_results()
    assert ((paper["dataset"] == row["dataset"]) & (paper["setting"] == row["setting"])).sum() == 6
