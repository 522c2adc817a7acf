"""Metrics against hand-computed values, mmpose edge cases and xtcocotools/pycocotools."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from evaluation.metrics import (CAPE_THRESHOLDS, auc, cape_pck, epe, keypoint_ap, nme, normalize_keypoint_name,
                                normalized_distances, pck, semantic_accuracy, semantic_errors)
from tests.realdata import REAL

COCO_JSON = REAL / "coco" / "test_coco.json"


def test_pck_hand_computed():
    gt = np.zeros((2, 3, 2))
    pred = np.array([[[3, 4], [0, 1], [10, 0]],  # distances 5, 1, 10
                     [[0, 0], [6, 8], [0, 0]]], dtype=float)  # 0, 10, 0
    mask = np.array([[True, True, True], [True, True, False]])
    norm = np.array([[10, 10], [20, 20]], dtype=float)  # normalised: [.5, .1, 1.], [0, .5, -]
    per_kpt, avg, count = pck(pred, gt, mask, norm, 0.5)
    assert per_kpt.tolist() == [0.5, 0.5, 0.0]  # strict <: 0.5 is not < 0.5
    assert avg == pytest.approx(1 / 3) and count == 3
    per_kpt, avg, count = pck(pred, gt, mask, norm, 0.51)
    assert per_kpt.tolist() == [1.0, 1.0, 0.0] and avg == pytest.approx(2 / 3)


def test_pck_per_axis_norm():
    pred, gt = np.array([[[6.0, 8.0]]]), np.zeros((1, 1, 2))
    d = normalized_distances(pred, gt, np.ones((1, 1), bool), np.array([[6.0, 16.0]]))
    assert d[0, 0] == pytest.approx(np.hypot(1.0, 0.5))


def test_pck_edge_cases():
    gt, pred = np.zeros((2, 2, 2)), np.ones((2, 2, 2))
    # zero norm in any axis: that sample does not count at all
    per_kpt, avg, count = pck(pred, gt, np.ones((2, 2), bool), np.array([[0.0, 10], [10, 10]]), 0.5)
    assert per_kpt.tolist() == [1.0, 1.0] and count == 2
    # nothing visible: -1 per keypoint, average 0, count 0
    per_kpt, avg, count = pck(pred, gt, np.zeros((2, 2), bool), np.ones((2, 2)), 0.5)
    assert per_kpt.tolist() == [-1.0, -1.0] and avg == 0.0 and count == 0
    # a keypoint visible nowhere is left out of the macro average
    per_kpt, avg, count = pck(pred, gt, np.array([[True, False], [True, False]]), np.full((2, 2), 10.0), 0.5)
    assert per_kpt.tolist() == [1.0, -1.0] and avg == 1.0 and count == 1
    # negative norm becomes 1e6 (the point counts, and is always correct)
    per_kpt, _, _ = pck(pred[:1], gt[:1], np.ones((1, 2), bool), np.array([[-1.0, -1.0]]), 0.01)
    assert per_kpt.tolist() == [1.0, 1.0]
    # a single keypoint
    per_kpt, avg, count = pck(np.array([[[1.0, 0.0]]]), np.zeros((1, 1, 2)), np.ones((1, 1), bool), np.ones((1, 2)), 1.0)
    assert per_kpt.tolist() == [0.0] and avg == 0.0 and count == 1  # distance 1 is not < 1


def test_pck_float32_comparison_like_mmpose():
    # 0.2 in float32 is 0.20000000298...; a distance of exactly 0.2 (float64) stored as float32 equals it
    pred, gt = np.array([[[0.2, 0.0]]]), np.zeros((1, 1, 2))
    assert pck(pred, gt, np.ones((1, 1), bool), np.ones((1, 2)), 0.2)[1] == 0.0
    assert pck(pred, gt, np.ones((1, 1), bool), np.ones((1, 2)), np.float64(0.2))[1] == 0.0


def test_input_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\[N, K, 2\]"):
        pck(np.zeros((2, 2)), np.zeros((2, 2)), np.ones((2,), bool), np.ones((2, 2)), 0.1)
    with pytest.raises(ValueError, match="mask"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((1, 3), bool), np.ones((1, 2)), 0.1)
    with pytest.raises(ValueError, match="norm"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((1, 2), bool), np.ones((2, 2)), 0.1)


def test_epe_nme_auc():
    gt = np.zeros((1, 3, 2))
    pred = np.array([[[3, 4], [0, 10], [100, 100]]], dtype=float)
    mask = np.array([[True, True, False]])
    assert epe(pred, gt, mask) == pytest.approx(7.5)
    assert nme(pred, gt, mask, np.array([[10.0, 10.0]])) == pytest.approx(0.75)
    assert epe(pred, gt, np.zeros((1, 3), bool)) == 0.0
    # AUC with norm 20: normalised distances .25 and .5; thresholds 0, .05, ..., .95
    # PCK per threshold = (#{.25 < t} + #{.5 < t}) / 2 -> 0 for t <= .25, .5 for .25 < t <= .5, 1 after
    expected = sum((0.25 < t) * 0.5 + (0.5 < t) * 0.5 for t in [i / 20 for i in range(20)]) / 20
    assert auc(pred, gt, mask, 20.0) == pytest.approx(expected)


def test_cape_pck_protocol():
    gt = np.zeros((2, 3, 2))
    pred = np.array([[[1, 0], [3, 0], [0, 0]],
                     [[0, 0], [0, 0], [0, 0]]], dtype=float)
    query_visible = np.array([[True, True, True], [False, False, False]])
    # 2 supports; keypoint 2 is hidden on the second support -> excluded for query 0
    support_visible = np.array([[[True, True, True], [True, True, False]],
                                [[True, True, True], [True, True, True]]])
    boxes = np.array([[0, 0, 10, 20], [0, 0, 5, 5]])  # max side 20 for the first query
    scores = cape_pck(pred, gt, query_visible, support_visible, boxes, thresholds=(0.1, 0.2))
    # query 0: distances / 20 = .05, .15 -> PCK@.1 = .5, PCK@.2 = 1; query 1: nothing counts -> 0
    assert scores.pck == {0.1: pytest.approx(0.25), 0.2: pytest.approx(0.5)}
    assert scores.mean == pytest.approx(0.375) and scores.num_queries == 2
    assert tuple(cape_pck(pred, gt, query_visible, support_visible[:, 0], boxes).pck) == CAPE_THRESHOLDS


def test_semantic_accuracy_normalisation():
    assert normalize_keypoint_name("L_F_Paw") == "left front paw"
    assert normalize_keypoint_name("TailBase") == "tail base"
    assert normalize_keypoint_name("left-eye") == "left eye"
    predicted = ["Left Eye", "tail base", "left hind paw", None, "nose", "right_ear"]
    expected = ["left_eye", "Root of tail", "L_B_Paw", "nose", "mouth", "R_EarBase"]
    assert semantic_accuracy(predicted, expected) == pytest.approx(3 / 6)
    assert semantic_accuracy(predicted, expected, synonyms={"ear base": ("ear",)}) == pytest.approx(4 / 6)
    assert semantic_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        semantic_accuracy(["a"], [])


def test_semantic_errors_sort_wrong_answers_by_kind():
    predicted = ["right eye", "Right_Eye", "left hind paw", "R_F_Paw", "right back paw", "hip", None, "left eye", "nose"]
    expected = ["left eye", "left_eye", "left front paw", "L_B_Paw", "left front paw", "shoulder", "nose", "left eye", "nose"]
    result = semantic_errors(predicted, expected)
    kinds = result["kinds"]
    assert kinds["correct"] == pytest.approx(2 / 9)  # the last two
    assert kinds["mirror"] == pytest.approx(2 / 9)  # left eye -> right eye, both spellings
    assert kinds["front_back"] == pytest.approx(1 / 9)  # left front paw -> left hind (= back) paw
    # right front paw for left back paw swaps both: not one confusion but another keypoint; so is hip for shoulder
    assert kinds["other"] == pytest.approx(3 / 9)
    assert kinds["unparsed"] == pytest.approx(1 / 9)
    assert sum(kinds.values()) == pytest.approx(1.0)
    assert result["confusions"][0] == {"expected": "left eye", "predicted": "right eye", "count": 2}
    assert {"expected": "shoulder", "predicted": "hip", "count": 1} in result["confusions"]
    assert len(semantic_errors(predicted, expected, top=2)["confusions"]) == 2
    assert semantic_accuracy(predicted, expected) == pytest.approx(kinds["correct"])
    # hind / rear are back even where the synonyms table has no entry
    assert semantic_errors(["left hind leg", "rear light"], ["left front leg", "front light"])["kinds"]["front_back"] == 1.0
    # categories keep the same confusion of two categories apart
    grouped = semantic_errors(["right eye", "right eye", "right eye"], ["left eye"] * 3, groups=["face", "face", "person"])
    assert grouped["confusions"] == [{"category": "face", "expected": "left eye", "predicted": "right eye", "count": 2},
                                     {"category": "person", "expected": "left eye", "predicted": "right eye", "count": 1}]
    with pytest.raises(ValueError, match="groups"):
        semantic_errors(["a"], ["a"], groups=[])


# --------------------------------------------------------------------------- OKS AP
def _coco_results(gt, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    results = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0) or ann["num_keypoints"] == 0:
            continue
        kpts = np.array(ann["keypoints"], dtype=float).reshape(-1, 3)
        kpts[:, :2] += rng.normal(0, shift, size=(len(kpts), 2)) if shift else 0
        kpts[:, 2] = 1.0
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "keypoints": kpts.reshape(-1).tolist(), "score": float(rng.uniform(0.5, 1))})
    return results


def _xtcocotools_reference(gt_path, results, sigmas=None, use_area=True):
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "keypoints", sigmas, use_area=use_area)
        ev.params.useSegm = None
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def test_identity_predictions_give_ap_one():
    gt = json.loads(COCO_JSON.read_text())
    stats = keypoint_ap(COCO_JSON, _coco_results(gt))
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


@pytest.mark.parametrize("use_area", [True, False])
def test_perturbed_predictions_equal_xtcocotools(use_area):
    gt = json.loads(COCO_JSON.read_text())
    results = _coco_results(gt, shift=4.0)
    ours = keypoint_ap(gt, results, use_area=use_area)  # a dict is accepted too
    reference = _xtcocotools_reference(COCO_JSON, results, use_area=use_area)
    assert np.allclose(list(ours.values()), reference, atol=1e-9, rtol=0)
    assert 0.05 < ours["AP"] < 0.99


def test_pycocotools_agrees_on_coco():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = json.loads(COCO_JSON.read_text())
    results = _coco_results(gt, shift=3.0, seed=1)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(COCO_JSON))
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "keypoints")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert np.allclose(list(keypoint_ap(COCO_JSON, results).values()), ev.stats, atol=1e-9)


def test_single_instance_ap_by_hand():
    """One GT, one detection at a known OKS: AP is the fraction of the 10 thresholds below the OKS."""
    sigmas = [0.1, 0.1]
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "thing", "keypoints": ["a", "b"], "skeleton": []}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 2500.0,
                           "bbox": [0, 0, 50, 50], "num_keypoints": 2, "keypoints": [10, 10, 2, 30, 30, 2]}]}
    dx = 6.0  # both keypoints off by 6 px in x: OKS = exp(-36 / (2 * 2500 * (2*0.1)^2))
    oks = np.exp(-dx**2 / (2 * 2500 * (2 * 0.1) ** 2))
    result = [{"image_id": 1, "category_id": 1, "keypoints": [10 + dx, 10, 1, 30 + dx, 30, 1], "score": 1.0}]
    stats = keypoint_ap(gt, result, sigmas=sigmas)
    thresholds = np.linspace(0.5, 0.95, 10)
    assert stats["AP"] == pytest.approx(np.mean(oks > thresholds))
    assert stats["AP50"] == pytest.approx(1.0) and stats["APM"] == pytest.approx(stats["AP"]) and stats["APL"] == -1
    assert keypoint_ap(gt, [], sigmas=sigmas)["AP"] == 0.0
    with pytest.raises(ValueError, match="3 OKS sigmas for results with 2 keypoints"):
        keypoint_ap(gt, result, sigmas=[0.1, 0.1, 0.1])
    far = [{**result[0], "keypoints": [1000.0, 1000.0, 1, float("nan"), 30, 1]}]  # COCOeval would match it
    with pytest.raises(ValueError, match="non-finite"):
        keypoint_ap(gt, far, sigmas=sigmas)


def test_crowd_annotations_are_ignored():
    gt = json.loads(COCO_JSON.read_text())
    crowd = copy.deepcopy(gt["annotations"][0])
    crowd.update(id=999999, iscrowd=1)
    gt["annotations"].append(crowd)
    results = _coco_results({"annotations": gt["annotations"][:-1]})
    assert keypoint_ap(gt, results)["AP"] == pytest.approx(1.0)


def test_keypoint_count_needs_sigmas():
    gt = json.loads(COCO_JSON.read_text())
    results = _coco_results(gt)
    for r in results:
        r["keypoints"] = r["keypoints"][:15]
    with pytest.raises(ValueError, match="sigmas"):
        keypoint_ap(gt, results)
