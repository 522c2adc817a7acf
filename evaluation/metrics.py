"""Keypoint metrics with the semantics of the community's reference code.

PCK, EPE, NME and AUC follow mmpose's `top_down_eval` (the code POMNet and CapeFormer call):
distances are stored in float32 before the strict `<` comparison, a sample whose normaliser has a zero
in any axis is left out, and negative normalisers become 1e6. OKS AP/AR is computed by xtcocotools'
`COCOeval`, exactly as mmpose's `CocoMetric` calls it.

Shapes: N instances, K keypoints. Coordinates in pixels of the original images.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

CAPE_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25)
COCO_STATS = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")


def _as_arrays(pred, gt, mask):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if pred.ndim != 3 or pred.shape != gt.shape or pred.shape[2] != 2:
        raise ValueError(f"pred and gt must both be [N, K, 2]; got {pred.shape} and {gt.shape}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must be [N, K] = {pred.shape[:2]}; got {mask.shape}")
    return pred, gt, mask


def normalized_distances(pred, gt, mask, norm) -> np.ndarray:
    """`||(pred - gt) / norm||` per point as float32 `[N, K]`; -1 where the point does not count.

    A point counts where `mask` is True and its sample's `norm [N, 2]` has no zero; norms <= 0 are
    replaced by 1e6 (mmpose's handling of invalid values).
    """
    pred, gt, mask = _as_arrays(pred, gt, mask)
    norm = np.array(norm, dtype=np.float64, copy=True)
    if norm.shape != (pred.shape[0], 2):
        raise ValueError(f"norm must be [N, 2] = {(pred.shape[0], 2)}; got {norm.shape}")
    counted = mask.copy()
    counted[(norm == 0).any(axis=1)] = False
    norm[norm <= 0] = 1e6
    distances = np.full(mask.shape, -1, dtype=np.float32)
    distances[counted] = np.linalg.norm(((pred - gt) / norm[:, None, :])[counted], axis=-1)
    return distances


def pck(pred, gt, mask, norm, thr: float) -> tuple[np.ndarray, float, int]:
    """Percentage of correct keypoints (mmpose `keypoint_pck_accuracy`).

    Args:
        pred, gt: `[N, K, 2]`; mask: `[N, K]` bool; norm: `[N, 2]` per-axis normaliser; thr: threshold.
    Returns:
        per_keypoint `[K]` (accuracy over instances, -1 where no point counts), average (mean over
        keypoints with accuracy >= 0, 0.0 when there is none), count (number of such keypoints).
    """
    thr = float(thr)  # a Python float compares against float32 distances in float32, as in mmpose
    distances = normalized_distances(pred, gt, mask, norm)
    valid = distances != -1
    counts = valid.sum(axis=0)
    hits = ((distances < thr) & valid).sum(axis=0)
    per_keypoint = np.where(counts > 0, hits / np.maximum(counts, 1), -1.0)
    kept = per_keypoint[per_keypoint >= 0]
    return per_keypoint, float(kept.mean()) if len(kept) else 0.0, int(len(kept))


def epe(pred, gt, mask) -> float:
    """End-point error in pixels: mean distance over the masked points (0 if none)."""
    pred, gt, mask = _as_arrays(pred, gt, mask)
    distances = normalized_distances(pred, gt, mask, np.ones((pred.shape[0], 2)))
    valid = distances[distances != -1]
    return float(valid.sum() / max(1, len(valid)))


def nme(pred, gt, mask, norm) -> float:
    """Normalised mean error: mean of `||(pred - gt) / norm||` over the counted points (0 if none)."""
    distances = normalized_distances(pred, gt, mask, norm)
    valid = distances[distances != -1]
    return float(valid.sum() / max(1, len(valid)))


def auc(pred, gt, mask, norm: float, num_steps: int = 20) -> float:
    """Area under the PCK curve for thresholds 0, 1/num_steps, ..., (num_steps-1)/num_steps of a scalar normaliser (pixels)."""
    pred, gt, mask = _as_arrays(pred, gt, mask)
    norms = np.tile(np.array([[norm, norm]], dtype=np.float64), (pred.shape[0], 1))
    return float(sum(pck(pred, gt, mask, norms, i / num_steps)[1] for i in range(num_steps)) / num_steps)


@dataclass(frozen=True)
class CapeScores:
    """MP-100 (category-agnostic) PCK at each threshold, their mean, and how many query instances."""

    pck: dict[float, float]
    mean: float
    num_queries: int
    # per keypoint index, pooled over the instances where it counts: hits at PCK@0.2 and how many counted
    # (a diagnosis of which keypoints move; the protocol's score is the per-instance mean above)
    keypoint_hits: tuple[int, ...] = ()
    keypoint_counted: tuple[int, ...] = ()


def cape_pck(pred, gt, query_visible, support_visible, bboxes, thresholds: Sequence[float] = CAPE_THRESHOLDS) -> CapeScores:
    """Category-agnostic PCK, the POMNet / CapeFormer protocol.

    For each query instance a keypoint counts when visible in the query and in every support; the
    distance is normalised by max(w, h) of the query's box; the instance's PCK is the mean over its
    counted keypoints (0 when none counts, as in the reference code); the score is the mean over
    instances.

    Args:
        pred, gt: `[N, K, 2]` predictions and ground truth of N query instances (K may be padded).
        query_visible: `[N, K]` bool. support_visible: `[N, S, K]` bool (S supports per query) or `[N, K]`.
        bboxes: `[N, 4]` query boxes xywh (the protocol uses the sanitised box, see `evaluation.data.clean_bbox`).
    """
    pred, gt, query_visible = _as_arrays(pred, gt, query_visible)
    support_visible = np.asarray(support_visible, dtype=bool)
    if support_visible.ndim == 2:
        support_visible = support_visible[:, None]
    if support_visible.shape[0] != pred.shape[0] or support_visible.shape[2] != pred.shape[1]:
        raise ValueError(f"support_visible must be [N, S, K]; got {support_visible.shape}")
    bboxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    if len(bboxes) != len(pred):
        raise ValueError("one query box per instance is needed")
    mask = query_visible & support_visible.all(axis=1)
    side = bboxes[:, 2:].max(axis=1)
    # each instance's PCK is `pck` on that instance alone (hits over its counted keypoints, 0 when none
    # counts); done for all instances at once: the hits are 0/1, so the sums and ratios are the same numbers
    distances = normalized_distances(pred, gt, mask, np.stack([side, side], axis=1))
    valid = distances != -1
    counted = valid.sum(axis=1)
    scores = {}
    for thr in thresholds:
        hits = ((distances < float(thr)) & valid).sum(axis=1)
        per_instance = np.where(counted > 0, hits / np.maximum(counted, 1), 0.0)
        scores[float(thr)] = float(np.mean(per_instance)) if len(per_instance) else 0.0
    keypoint_hits = ((distances < 0.2) & valid).sum(axis=0)
    return CapeScores(scores, float(np.mean(list(scores.values()))) if scores else 0.0, int(len(pred)),
                      tuple(int(v) for v in keypoint_hits), tuple(int(v) for v in valid.sum(axis=0)))


def keypoint_ap(ground_truth, results: list[dict], sigmas=None, use_area: bool = True) -> dict[str, float]:
    """The 10 COCO keypoint statistics (AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL) by xtcocotools.

    Args:
        ground_truth: a COCO keypoint json path or an already loaded dict.
        results: COCO keypoint results: `{"image_id", "category_id", "keypoints": [x, y, score]*K, "score"}`.
        sigmas: per-keypoint OKS sigmas (`kptllm.protocols.catalog` has them per dataset); None = COCO's 17.
        use_area: use the annotations' `area` (False: 0.53 * box area, for data without areas).
    With no results at all every statistic is 0.0.
    """
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
    except ImportError as err:  # the PyPI wheel is built for numpy 1: build it from source
        raise ImportError("keypoint_ap needs xtcocotools: pip install numpy cython && "
                          "pip install --no-binary xtcocotools --no-build-isolation xtcocotools") from err
    with contextlib.redirect_stdout(io.StringIO()):
        coco = _coco(COCO, ground_truth)
        if not results:
            return {name: 0.0 for name in COCO_STATS}
        num_keypoints = len(results[0]["keypoints"]) // 3
        if sigmas is None and num_keypoints != 17:
            raise ValueError(f"results have {num_keypoints} keypoints: give their OKS sigmas")
        if sigmas is not None and len(sigmas) != num_keypoints:
            raise ValueError(f"{len(sigmas)} OKS sigmas for results with {num_keypoints} keypoints")
        if not all(np.isfinite(np.asarray(r["keypoints"], dtype=np.float64)).all() for r in results):
            # COCOeval's `ious < threshold` is never true for a NaN OKS: the result would match at every threshold
            raise ValueError("results hold non-finite keypoint values (NaN/inf); write unparsed keypoints as 0, 0, 0")
        detections = coco.loadRes(_copy_json(list(results)))
        evaluator = COCOeval(coco, detections, "keypoints", None if sigmas is None else np.asarray(sigmas, dtype=np.float64),
                             use_area=use_area)
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_STATS, evaluator.stats)}


BOX_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def box_ap(ground_truth, detections: list[dict]) -> dict[str, float]:
    """The 12 COCO box statistics (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl) by
    pycocotools' COCOeval ("bbox").

    Args:
        ground_truth: a COCO json path or an already loaded dict (`annotations` with xywh `bbox` and `area`).
        detections: COCO detection results `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`.
    With no detections every statistic is 0.0. A statistic COCOeval leaves undefined (-1: no ground truth
    in that area range) stays -1.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = _coco(COCO, ground_truth)
        if not detections:
            return {name: 0.0 for name in BOX_STATS}
        if not all(np.isfinite(np.asarray(d["bbox"], dtype=np.float64)).all() for d in detections):
            raise ValueError("detections hold non-finite box values (NaN/inf)")
        evaluator = COCOeval(coco, coco.loadRes(_copy_json(list(detections))), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(BOX_STATS, evaluator.stats)}


def _coco(coco_class, ground_truth):
    """A COCO object (xtcocotools' or pycocotools' class) of a json path or an already loaded dict (copied:
    COCO's loaders mutate what they are given)."""
    if not isinstance(ground_truth, Mapping):
        return coco_class(str(ground_truth))
    coco = coco_class()
    coco.dataset = _copy_json(ground_truth)
    coco.createIndex()
    return coco


def _copy_json(value):
    """Deep copy of plain json data (COCO's loaders mutate what they are given)."""
    if isinstance(value, Mapping):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy_json(v) for v in value]
    return value


# --------------------------------------------------------------------------- semantics
_SIDE_WORDS = {"l": "left", "r": "right", "f": "front", "b": "back"}
DEFAULT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "root of tail": ("tail base", "tail root", "base of tail", "base of the tail"),
    "front paw": ("front foot",),
    "back paw": ("back foot", "hind paw", "hind foot", "rear paw", "rear foot"),
    "back knee": ("hind knee", "rear knee"),
    "back elbow": ("hind elbow", "rear elbow"),
    "ear base": ("base of ear", "base of the ear"),
    "withers": ("top of shoulders",),
    "throat": ("neck front",),
}


@functools.lru_cache(maxsize=8192)  # a bootstrap scores the same few hundred names thousands of times
def normalize_keypoint_name(name: str) -> str:
    """Canonical form for comparing keypoint names.

    Lower case; `_`, `-` and `/` become spaces; CamelCase is split; the abbreviations L, R, F, B (as in
    `L_F_Paw`) become left, right, front, back; "the" and "of the" articles are dropped; whitespace collapses.
    e.g. `L_F_Paw` -> "left front paw", `Root of tail` -> "root of tail", `TailBase` -> "tail base".
    """
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(name))
    words = re.sub(r"[_\-/]+", " ", text).lower().split()
    words = [_SIDE_WORDS.get(w, w) for w in words]
    words = [w for w in words if w != "the"]
    return " ".join(words)


def _canonical_map(synonyms: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    if not synonyms:
        return dict(_default_canonical_map())
    return _build_canonical_map(synonyms)


@functools.lru_cache(maxsize=1)
def _default_canonical_map() -> tuple[tuple[str, str], ...]:
    return tuple(_build_canonical_map(None).items())


def _build_canonical_map(synonyms: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    table = {**DEFAULT_SYNONYMS, **(synonyms or {})}
    mapping = {}
    for canonical, alternatives in table.items():
        canon = normalize_keypoint_name(canonical)
        for alternative in alternatives:
            mapping[normalize_keypoint_name(alternative)] = canon
    return mapping


def _canonical(name: str, mapping: dict[str, str]) -> str:
    normalized = normalize_keypoint_name(name)
    for alternative, canonical in mapping.items():  # also inside a sided name: "left hind paw"
        if normalized == alternative:
            return canonical
        if normalized.endswith(" " + alternative):
            return normalized[: -len(alternative)] + canonical
    return normalized


def semantic_accuracy(predicted: Sequence[str | None], expected: Sequence[str],
                      synonyms: Mapping[str, Sequence[str]] | None = None) -> float:
    """Fraction of predictions naming the expected keypoint after `normalize_keypoint_name` and the synonyms table.

    `synonyms` maps a canonical name to alternatives and extends `DEFAULT_SYNONYMS`. A None prediction
    (an unparsed answer) is wrong. Empty input gives 0.0.
    """
    return semantic_errors(predicted, expected, synonyms, top=0)["kinds"]["correct"]


_SWAPS = {"mirror": {"left": "right", "right": "left"}, "front_back": {"front": "back", "back": "front"}}
_BACK_WORDS = {"hind": "back", "rear": "back"}  # "left hind leg" is the back leg, whatever the synonyms table says
SEMANTIC_ERROR_KINDS = ("correct", "mirror", "front_back", "other", "unparsed")


def _swapped(name: str, table: Mapping[str, str]) -> str:
    return " ".join(table.get(word, word) for word in name.split())


def semantic_errors(predicted: Sequence[str | None], expected: Sequence[str],
                    synonyms: Mapping[str, Sequence[str]] | None = None, top: int = 10,
                    groups: Sequence[str] | None = None) -> dict:
    """What the answers are, after `normalize_keypoint_name` and the synonyms table (`semantic_accuracy` is `correct`).

    Returns {"kinds": fraction of answers per kind, "confusions": the `top` most frequent wrong
    (expected, predicted) pairs with counts}. Kinds (they sum to 1 for a non-empty input): `correct`;
    `mirror`, the same keypoint of the other side (left <-> right only); `front_back`, front <-> back only
    (hind and rear count as back); `other`, any other answer (a neighbour, a name of another category, free
    text); `unparsed`, no answer. `groups` (one per answer, e.g. the object's category) keeps confusions
    of different categories apart and adds a `category` field to each.
    """
    if len(predicted) != len(expected) or (groups is not None and len(groups) != len(expected)):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} expected names"
                         + ("" if groups is None else f" and {len(groups)} groups"))
    mapping = _canonical_map(synonyms)
    canonical: dict[str, str] = {}  # each distinct name resolved once per call
    counts = dict.fromkeys(SEMANTIC_ERROR_KINDS, 0)
    pairs: dict[tuple[str, str, str], int] = {}
    for i, (p, e) in enumerate(zip(predicted, expected)):
        if p is None:
            counts["unparsed"] += 1
            continue
        for name in (p, e):
            if name not in canonical:
                canonical[name] = _canonical(name, mapping)
        answer, truth = canonical[p], canonical[e]
        if answer == truth:
            counts["correct"] += 1
            continue
        answer_sides, truth_sides = _swapped(answer, _BACK_WORDS), _swapped(truth, _BACK_WORDS)
        kind = next((k for k, table in _SWAPS.items() if _swapped(truth_sides, table) == answer_sides), "other")
        counts[kind] += 1
        key = ("" if groups is None else str(groups[i]), truth, answer)
        pairs[key] = pairs.get(key, 0) + 1
    total = max(len(expected), 1)
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {"kinds": {k: v / total for k, v in counts.items()},
            "confusions": [{**({} if groups is None else {"category": g}), "expected": t, "predicted": a, "count": n}
                           for (g, t, a), n in ranked]}
