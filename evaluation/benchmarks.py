"""Benchmarks: which work units a benchmark has, how a model answers one, and how answers become metrics.

A work unit is the smallest resumable piece: one GT instance (text-prompt benchmarks, semantic
understanding) or one query of one MP-100 episode (visual prompts). `plan_unit` turns a unit into a
request to the engine (`kptllm.decoding.engine`), `finish_unit` its answers into a json-able prediction; `score`
turns all predictions into metric values and breakdowns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kptllm.protocols import catalog

from kptllm.image import square_crop

from .data import KeypointDataset, ap10k_cross_species, clean_bbox, make_episodes
from .data.semantic_labels import SemanticLabels, builtin as builtin_semantic_labels
from .metrics import CAPE_THRESHOLDS, cape_pck, keypoint_ap, pck, semantic_accuracy, semantic_errors

# benchmark name -> (catalog key of its keypoints, protocol text)
GENERIC = {
    "coco": ("coco", "COCO val, GT boxes, text prompts of the 17 COCO keypoints; OKS AP with COCO sigmas"),
    "humanart": ("humanart", "Human-Art, GT boxes, text prompts; OKS AP"),
    "ap10k": ("ap10k", "AP-10K, GT boxes, text prompts; OKS AP with AP-10K sigmas"),
    "macaque": ("macaque", "MacaquePose, GT boxes, text prompts; OKS AP"),
    "animalpose": ("animalpose", "AnimalPose (unseen), GT boxes, text prompts; PCK@0.2 of max(w, h) (X-Pose protocol)"),
    "animal_kingdom": ("animal_kingdom", "Animal Kingdom, GT boxes, text prompts; headline PCK@0.05 of max(w, h) "
                                         "(mmpose's Animal Kingdom metric), also PCK@0.2 and AP"),
    "carfusion": ("carfusion", "CarFusion, GT boxes, text prompts; PCK@0.2 of max(w, h) (no OKS sigmas defined)"),
    "ap10k-different-order": ("ap10k", "AP-10K cross-species (CLAMP): test family Canidae; OKS AP"),
    "ap10k-same-order": ("ap10k", "AP-10K cross-species (CLAMP): test family Felidae; OKS AP"),
}
BENCHMARKS = ["mp100", *GENERIC, "keypointworld"]
HEADLINE = {"animal_kingdom": "PCK@0.05", "animalpose": "PCK@0.2", "carfusion": "PCK@0.2", "mp100": "PCK@0.2",
            "keypointworld": "PCK@0.2"}  # default: AP where OKS sigmas exist; semantic tasks: accuracy

# MP-100 cross-supercategory (POMNet / paper Table 3): paper label -> test categories, chosen by the catalog's
# supercategory ("person" holds the human body and the two face categories) and category name
CROSS_SUPERCATEGORIES = {
    "Human Body": lambda name, sup: sup == "person" and name != "face",
    "Human Face": lambda name, sup: sup == "person" and name == "face",
    "Vehicle": lambda name, sup: sup == "vehicle",
    "Furniture": lambda name, sup: sup == "furniture",
}
# mmpose CocoMetric defaults for AP with detected boxes
KEYPOINT_SCORE_THR = 0.2
OKS_NMS_THR = 0.9
BOX_PADDING = 1.25
TASKS = {"mp100": ("visual", "semantic"), **{name: ("text",) for name in GENERIC},
         "keypointworld": ("text", "visual", "semantic")}


@dataclass
class Benchmark:
    """A benchmark bound to its annotation file and run settings."""

    name: str
    dataset: KeypointDataset
    task: str
    shots: int = 1
    episodes: int = 200
    seed: int = 1
    units: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)  # units left out because an image is not on disk
    partial: bool = False  # a run of part of the units (--limit, missing images): AP on detections then covers their images only
    missing_images: list[str] = field(default_factory=list)  # their file names
    supercategory: str | None = None  # MP-100 cross-supercategory: a key of CROSS_SUPERCATEGORIES
    boxes: list[dict] | None = None  # COCO detection results: units are detected boxes, not GT instances
    semantic_labels: SemanticLabels | None = None  # MP-100 semantic task: what each keypoint is called
    object_boxes: dict | None = None  # ann id -> the detector's xywh box for it, or None (missed); None = GT boxes

    def model_box(self, ann):
        """The box the model gets for `ann`: its ground-truth box, or the detector's (`evaluation.detected_boxes`);
        None when the detector missed it."""
        return ann.bbox if self.object_boxes is None else self.object_boxes.get(ann.id)

    @property
    def headline_metric(self) -> str:
        if self.task == "semantic":
            return "accuracy"
        if self.name in HEADLINE:
            return HEADLINE[self.name]
        return "AP"

    @property
    def protocol(self) -> str:
        if self.boxes is not None:
            return (GENERIC[self.name][1].split(";")[0].replace("GT boxes", "detected boxes") +
                    f"; OKS AP of the detected boxes: instance score = box score x mean keypoint score above "
                    f"{KEYPOINT_SCORE_THR}, OKS-NMS at {OKS_NMS_THR} per image (mmpose CocoMetric)")
        if self.name == "mp100" and self.supercategory:
            return (f"MP-100 cross-supercategory {self.supercategory}: {self.shots}-shot episodes of its categories "
                    f"(POMNet/CapeFormer sampler, seed {self.seed}, {self.episodes} episodes x 15 queries per "
                    "category); PCK of max(w, h) of the sanitised query box")
        if self.name == "mp100":
            if self.task == "semantic":
                return ("MP-100 keypoint semantic understanding: each visible (v=2) keypoint of each test instance of the "
                        f"categories with named keypoints (label set {self.semantic_labels.name}); accuracy of the "
                        "named keypoint")
            return (f"MP-100 {self.shots}-shot episodes (POMNet/CapeFormer sampler, seed {self.seed}, {self.episodes} "
                    f"episodes x 15 queries per category); PCK of max(w, h) of the sanitised query box, keypoints "
                    "visible in the query and every support")
        if self.name == "keypointworld":
            return {"text": "KeypointWorld, GT boxes, the file's keypoint names as text prompts; PCK@0.2 of max(w, h) "
                            "of the box over all labelled keypoints",
                    "visual": f"KeypointWorld, {self.shots}-shot: supports are other instances of the query's category "
                              f"(seed {self.seed}); PCK of max(w, h), keypoints visible in the query and every support",
                    "semantic": "KeypointWorld, every visible (v=2) keypoint of every instance; accuracy of the named keypoint",
                    }[self.task]
        return GENERIC[self.name][1]


def _keypointworld_supports(dataset: KeypointDataset, shots: int, seed: int) -> list[dict]:
    """One unit per instance: `shots` other instances of its category (deterministic in seed and ids)."""
    by_category: dict[int, list[int]] = {}
    for ann in dataset.annotations:
        if not ann.iscrowd and ann.num_keypoints > 0:
            by_category.setdefault(ann.category_id, []).append(ann.id)
    units = []
    for category_id, ids in sorted(by_category.items()):
        if len(ids) <= shots:
            continue
        for ann_id in ids:
            others = [i for i in ids if i != ann_id]
            rng = np.random.default_rng([seed, ann_id])
            support = [others[int(k)] for k in rng.choice(len(others), size=shots, replace=False)]
            units.append({"episode": ann_id, "category_id": category_id, "support_ids": support, "query_id": ann_id})
    return units


def _cross_supercategory_ids(dataset: KeypointDataset, label: str) -> list[int]:
    if label not in CROSS_SUPERCATEGORIES:
        raise ValueError(f"unknown supercategory {label!r}; known: {', '.join(CROSS_SUPERCATEGORIES)}")
    wanted = []
    for cid, category in dataset.categories.items():
        try:
            sup = catalog.mp100_category(category.name).supercategory
        except ValueError:
            sup = category.supercategory
        if CROSS_SUPERCATEGORIES[label](category.name, sup):
            wanted.append(cid)
    if not wanted:
        raise ValueError(f"the annotation file has no {label} categories")
    return wanted


def _detection_units(dataset: KeypointDataset, boxes: list[dict]) -> list[dict]:
    used = {a.category_id for a in dataset.annotations}
    units = []
    for number, det in enumerate(boxes):
        if det.get("image_id") in dataset.images and det.get("category_id", next(iter(used), None)) in used:
            units.append({"det": number, "image_id": det["image_id"], "category_id": det.get("category_id"),
                          "bbox": [float(v) for v in det["bbox"]], "box_score": float(det.get("score", 1.0))})
    return units


def build_benchmark(name: str, dataset: KeypointDataset, task: str | None = None, shots: int = 1,
                    episodes: int = 200, seed: int = 1, supercategory: str | None = None,
                    boxes: list[dict] | None = None, semantic_labels: SemanticLabels | None = None) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    task = task or TASKS[name][0]
    if task not in TASKS[name]:
        raise ValueError(f"benchmark {name} supports tasks {', '.join(TASKS[name])}, not {task!r}")
    if supercategory is not None and (name, task) != ("mp100", "visual"):
        raise ValueError("--supercategory is a setting of mp100 with visual prompts")
    if boxes is not None and (name not in GENERIC or catalog.get(GENERIC[name][0]).sigmas is None):
        raise ValueError(f"--boxes needs a benchmark scored by OKS AP, not {name}")
    if semantic_labels is not None and (name, task) != ("mp100", "semantic"):
        raise ValueError("--semantic-labels is a setting of mp100 with --task semantic")
    if (name, task) == ("mp100", "semantic"):
        semantic_labels = semantic_labels or builtin_semantic_labels()
    bench = Benchmark(name, dataset, task, shots, episodes, seed, supercategory=supercategory, boxes=boxes,
                      semantic_labels=semantic_labels)
    if boxes is not None:
        bench.units = _detection_units(dataset, boxes)
    elif name == "keypointworld" and task == "visual":
        bench.units = _keypointworld_supports(dataset, shots, seed)
    elif name == "mp100" and task == "visual":
        # cross-supercategory: the same episodes as a full run, of that supercategory's categories only
        keep = set(_cross_supercategory_ids(dataset, supercategory)) if supercategory else set(dataset.categories)
        for number, episode in enumerate(make_episodes(dataset, shots, episodes=episodes, seed=seed)):
            if episode.category_id not in keep:
                continue
            for query in episode.query_ids:
                bench.units.append({"episode": number, "category_id": episode.category_id,
                                    "support_ids": list(episode.support_ids), "query_id": query})
    else:
        if name.startswith("ap10k-"):
            annotations = ap10k_cross_species(dataset, name.split("-", 1)[1].replace("-", "_"), "test")
        else:
            annotations = [a for a in dataset.annotations if not a.iscrowd]
        for ann in annotations:
            if ann.num_keypoints == 0:
                continue
            if task == "semantic" and not any(_semantic_names(bench, ann)):
                continue  # numbered categories (and fully left-out ones) have no semantics to name
            bench.units.append({"ann_id": ann.id})
    _set_aside_missing(bench)
    return bench


def _set_aside_missing(bench: Benchmark) -> None:
    """Move units whose query or support images are not on disk to `bench.missing`."""
    ds, kept = bench.dataset, []
    for unit in bench.units:
        if "det" in unit:
            images = [ds.images[unit["image_id"]]]
        else:
            ids = [unit["query_id"], *unit["support_ids"]] if "episode" in unit else [unit["ann_id"]]
            images = [ds.images[ds.annotation(i).image_id] for i in ids]
        absent = [im.file_name for im in images if im.path is None]
        if absent:
            bench.missing.append(unit)
            bench.missing_images += [n for n in absent if n not in bench.missing_images]
        else:
            kept.append(unit)
    bench.units = kept


def unit_key(unit: dict) -> str:
    if "det" in unit:
        return f"det{unit['det']}"
    return f"{unit['episode']}:{unit['query_id']}" if "episode" in unit else str(unit["ann_id"])


FILE_NAMES = SemanticLabels("the file's names")  # semantic benchmarks without a label set (KeypointWorld)


def _semantic_names(bench: Benchmark, ann) -> list[str | None]:
    """Per keypoint of `ann`: the name a semantic answer must give, or None (left out / numbered)."""
    category = bench.dataset.category_of(ann)
    labels = (bench.semantic_labels or FILE_NAMES).labels_for(category.name, category.keypoint_names)
    return labels or [None] * len(category.keypoint_names)


def _semantic_points(bench: Benchmark, predictor, ann) -> tuple[list, list[int], list[tuple[float, float]]]:
    """(names, asked keypoint indices, their pixel points): the visible (v=2), promptable, named keypoints of `ann`.

    Occluded keypoints (v=1) are not asked: the pixel under an occluded point shows something else (the
    occluder, or the object's other side), so "what is this keypoint" has no answer one can see."""
    names = _semantic_names(bench, ann)
    labelled = [k for k, ok in enumerate(_promptable(predictor, bench.dataset.images[ann.image_id], ann))
                if ok and names[k] is not None and ann.keypoints[k, 2] >= 2]
    return names, labelled, [(float(ann.keypoints[k, 0]), float(ann.keypoints[k, 1])) for k in labelled]


def categories_covered(bench: Benchmark) -> list[str]:
    """Names of the categories a semantic benchmark asks about."""
    return sorted({bench.dataset.category_of(bench.dataset.annotation(u["ann_id"])).name for u in bench.units})


def _keypoint_names(bench: Benchmark, ann) -> list[str]:
    if bench.name in GENERIC:
        return list(catalog.get(GENERIC[bench.name][0]).names)
    return [catalog.readable_name(n) for n in bench.dataset.category_of(ann).keypoint_names]


def _promptable(predictor, image, ann, box=None) -> list[bool]:
    """Per keypoint of `ann`: labelled, inside the image and inside the model crop around `box` (default: its
    ground-truth box) — usable as a prompt."""
    crop = square_crop((image.width, image.height), ann.bbox if box is None else box, predictor.processor.image_size,
                       predictor.processor.crop_padding)
    return [bool(v > 0) and 0 <= x <= image.width and 0 <= y <= image.height and crop.contains((x, y))
            for x, y, v in ann.keypoints]


def _whole(image) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(image.width), float(image.height))


def _inside_crop(predictor, image, box, indices: list[int], points) -> list[int]:
    """The `indices` whose `points` lie inside the model crop around `box`."""
    crop = square_crop((image.width, image.height), box, predictor.processor.image_size, predictor.processor.crop_padding)
    return [k for k, point in zip(indices, points) if crop.contains(point)]


def _as_rows(results, count: int) -> list[list[float]]:
    """[K, 3] rows x, y, score; unparsed keypoints become (0, 0, 0)."""
    rows = [[0.0, 0.0, 0.0] for _ in range(count)]
    for index, r in results:
        if r.parsed and r.xy is not None:
            rows[index] = [float(r.xy[0]), float(r.xy[1]), float(r.score)]
    return rows


def plan_unit(bench: Benchmark, predictor, unit: dict):
    """What the model is asked about one work unit: (a `kptllm.decoding.engine.Request` or None when there is nothing
    to ask, what `finish_unit` needs to build the unit's prediction from the answers). The episode number is
    the support key (supports encoded once per episode)."""
    from kptllm.decoding.engine import Request
    from kptllm.protocols.protocol import Task

    ds = bench.dataset
    if "episode" in unit:
        query = ds.annotation(unit["query_id"])
        supports = [ds.annotation(i) for i in unit["support_ids"]]
        count = len(query.keypoints)
        # a support the detector missed is shown whole (what the demo does when nothing is found)
        boxes = [bench.model_box(s) or _whole(ds.images[s.image_id]) for s in supports]
        usable = [_promptable(predictor, ds.images[s.image_id], s, box) for s, box in zip(supports, boxes)]
        shown = [k for k in range(count) if any(u[k] for u in usable)]
        context = {"shown": shown, "count": count}
        if not shown or bench.model_box(query) is None:  # nothing to ask, or the detector missed the query
            return None, context
        points = [[(float(s.keypoints[k, 0]), float(s.keypoints[k, 1])) if u[k] else None for k in shown]
                  for s, u in zip(supports, usable)]
        support = ([ds.images[s.image_id].path for s in supports], points, boxes)
        return Request(ds.images[query.image_id].path, bench.model_box(query), Task.VISUAL, [None] * len(shown),
                       supports=support, support_key=("episode", unit["episode"])), context
    if "det" in unit:
        names = list(catalog.get(GENERIC[bench.name][0]).names)
        return Request(ds.images[unit["image_id"]].path, tuple(unit["bbox"]), Task.TEXT, names), {"count": len(names)}
    ann = ds.annotation(unit["ann_id"])
    box = bench.model_box(ann)
    if bench.task == "semantic":
        names, labelled, points = _semantic_points(bench, predictor, ann)
        # the same points are asked with any box; one outside a detected box's crop (or all, when the detector
        # missed the object) gets no answer, which counts as wrong
        asked = [] if box is None else _inside_crop(predictor, ds.images[ann.image_id], box, labelled, points)
        context = {"labelled": labelled, "names": names, "asked": asked}
        if not asked:
            return None, context
        return Request(ds.images[ann.image_id].path, box, Task.SEMANTIC, [None] * len(asked),
                       points=[points[labelled.index(k)] for k in asked]), context
    names = _keypoint_names(bench, ann)
    context = {"count": len(names)}
    if box is None:
        return None, context
    return Request(ds.images[ann.image_id].path, box, Task.TEXT, names), context


def finish_unit(bench: Benchmark, unit: dict, context: dict, results) -> dict:
    """The json-able prediction of a unit from its request's results (`plan_unit`'s context)."""
    results = results or []
    if "episode" in unit:
        return {"key": unit_key(unit), "keypoints": _as_rows(zip(context["shown"], results), context["count"]),
                "parsed": [r.parsed for r in results], "raw": [r.raw for r in results]}
    if bench.task == "semantic":
        # a point not asked (outside the detected box's crop, or the object missed) has no answer: wrong
        answers = dict(zip(context.get("asked", context["labelled"]), (r.text for r in results)))
        predicted = [answers.get(k) for k in context["labelled"]]
        return {"key": unit_key(unit), "indices": context["labelled"], "predicted": predicted,
                "expected": [context["names"][k] for k in context["labelled"]]}
    return {"key": unit_key(unit), "keypoints": _as_rows(enumerate(results), context["count"]),
            "parsed": [r.parsed for r in results], "raw": [r.raw for r in results]}


def score(bench: Benchmark, predictions: list[dict], with_ap: bool = True) -> dict:
    """Metric values, counts and breakdowns of a finished run (`with_ap=False`: skip OKS AP, e.g. when
    resampling instances, which COCOeval cannot take twice)."""
    if bench.task == "semantic":
        return {**_score_semantic(bench, predictions), "headline_metric": "accuracy"}  # metrics["accuracy"]
    if bench.boxes is not None:
        scored = _score_detected(bench, predictions)
    elif bench.name == "keypointworld":
        scored = _score_cape(bench, predictions) if bench.task == "visual" else _score_keypointworld(bench, predictions)
    elif bench.name == "mp100":
        scored = _score_cape(bench, predictions)
    else:
        scored = _score_generic(bench, predictions, with_ap)
    if "PCK@0.2" in scored["metrics"]:  # the lower-case key scripts read, for every PCK benchmark
        scored["metrics"]["pck@0.2"] = scored["metrics"]["PCK@0.2"]
    scored["headline_metric"] = bench.headline_metric
    return scored


def rescore(keypoint_scores, box_score: float, threshold: float = KEYPOINT_SCORE_THR) -> float:
    """mmpose's 'bbox_keypoint' score: box score x the mean of the keypoint scores above `threshold` (0 if none)."""
    kept = [float(s) for s in keypoint_scores if s > threshold]
    return box_score * (sum(kept) / len(kept) if kept else 0.0)


def oks_iou(g, d, a_g, a_d, sigmas) -> np.ndarray:
    """mmpose `oks_iou`: OKS of one instance `g` ([K*3] x, y, score) with each row of `d` ([M, K*3])."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    variances = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(len(d), dtype=np.float32)
    for n in range(len(d)):
        dx, dy = d[n, 0::3] - xg, d[n, 1::3] - yg
        e = (dx ** 2 + dy ** 2) / variances / ((a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        ious[n] = np.sum(np.exp(-e)) / len(e) if len(e) else 0.0
    return ious


def oks_nms(instances: list[dict], thr: float, sigmas) -> list[int]:
    """mmpose `oks_nms`: indices kept, highest score first; an instance is dropped when its OKS with a kept,
    higher-scoring one is above `thr`. Each instance: {"keypoints": [K, 3], "score", "area"}."""
    if not instances:
        return []
    scores = np.array([i["score"] for i in instances])
    kpts = np.array([np.asarray(i["keypoints"], dtype=np.float64).reshape(-1) for i in instances])
    areas = np.array([i["area"] for i in instances], dtype=np.float64)
    order = scores.argsort()[::-1]
    keep = []
    while len(order) > 0:
        i = order[0]
        keep.append(int(i))
        overlap = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas)
        order = order[np.where(overlap <= thr)[0] + 1]
    return keep


def _ranked_results(instances, sigmas) -> list[dict]:
    """mmpose CocoMetric's scoring of top-down instances `(image_id, category_id, keypoints [K, 3], box_score,
    bbox xywh)`: score = box score x the mean keypoint score above KEYPOINT_SCORE_THR, OKS-NMS at OKS_NMS_THR
    per image (area: the box padded by BOX_PADDING per side, mmpose's bbox_scale area) -> COCO keypoint results."""
    by_image: dict[int, list[dict]] = {}
    for image_id, category_id, keypoints, box_score, bbox in instances:
        rows = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
        by_image.setdefault(image_id, []).append({
            "image_id": image_id, "category_id": category_id, "keypoints": rows,
            "score": rescore(rows[:, 2], box_score), "area": bbox[2] * bbox[3] * BOX_PADDING ** 2})
    return [{"image_id": inst["image_id"], "category_id": inst["category_id"],
             "keypoints": inst["keypoints"].reshape(-1).tolist(), "score": inst["score"]}
            for group in by_image.values() for inst in (group[i] for i in oks_nms(group, OKS_NMS_THR, sigmas))]


def _coco_ground_truth(ds, annotations, image_ids, k: int) -> dict:
    """A COCO keypoint ground-truth dict for xtcocotools: the images `image_ids`, every category with its
    first `k` keypoint names, and `annotations` cut to their first `k` keypoints."""
    labelled = lambda a: int((a.keypoints[:k, 2] > 0).sum())  # noqa: E731
    return {"images": [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
                       for i in ds.images.values() if i.id in image_ids],
            "categories": [{"id": c.id, "name": c.name, "keypoints": list(c.keypoint_names[:k])}
                           for c in ds.categories.values()],
            "annotations": [{"id": a.id, "image_id": a.image_id, "category_id": a.category_id,
                             "keypoints": a.keypoints[:k].reshape(-1).tolist(), "bbox": list(a.bbox),
                             "area": a.area, "iscrowd": int(a.iscrowd), "num_keypoints": labelled(a)}
                            for a in annotations]}


def _score_detected(bench, predictions):
    """OKS AP with detected boxes, as mmpose's CocoMetric scores a top-down model on detections: rescoring,
    OKS-NMS per image (area: the detection box's w*h padded by 1.25 in each side, mmpose's bbox_scale area),
    then xtcocotools against every annotation of the file, so that a person in an image where the detector
    found nobody counts as missed (a partial run, `bench.partial`: of the images it evaluated)."""
    ds = bench.dataset
    kset = catalog.get(GENERIC[bench.name][0])
    k = kset.num_keypoints
    results = _ranked_results([(unit["image_id"], unit["category_id"] or 1, pred["keypoints"], unit["box_score"], unit["bbox"])
                               for unit, pred in zip(bench.units, predictions)], kset.sigmas)
    images = {unit["image_id"] for unit in bench.units} if bench.partial else set(ds.images)
    subset = _coco_ground_truth(ds, [a for a in ds.annotations if a.image_id in images], images, k)
    metrics = keypoint_ap(subset, results, sigmas=kset.sigmas)
    return {"metrics": metrics,
            "counts": {"detections": len(predictions), "kept_after_nms": len(results), "images": len(images),
                       "unparsed": sum(not ok for p in predictions for ok in p["parsed"])},
            "per_category": {}}


def _score_keypointworld(bench, predictions):
    """Text prompts over categories with different keypoint sets: PCK@0.2 of max(w, h), pooled over all
    labelled keypoints (strict <), with per-category and per-keypoint ("category/name") breakdowns."""
    ds = bench.dataset
    hits: dict[tuple[str, str], list[bool]] = {}
    for unit, pred in zip(bench.units, predictions):
        ann = ds.annotation(unit["ann_id"])
        category = ds.category_of(ann)
        rows = np.asarray(pred["keypoints"], dtype=np.float64)
        norm = max(ann.bbox[2], ann.bbox[3])
        for k, (x, y, v) in enumerate(ann.keypoints):
            if v <= 0:
                continue
            ok = rows[k, 2] > 0 and np.hypot(rows[k, 0] - x, rows[k, 1] - y) / norm < 0.2
            hits.setdefault((category.name, category.keypoint_names[k]), []).append(bool(ok))
    every = [h for v in hits.values() for h in v]
    per_category: dict[str, list[bool]] = {}
    for (category, _), v in hits.items():
        per_category.setdefault(category, []).extend(v)
    return {"metrics": {"PCK@0.2": float(np.mean(every)) if every else 0.0},
            "counts": {"instances": len(predictions), "keypoints": len(every),
                       "unparsed": sum(not ok for p in predictions for ok in p["parsed"])},
            "per_keypoint": {f"{c}/{n}": float(np.mean(v)) for (c, n), v in hits.items()},
            "per_category": {c: {"PCK@0.2": float(np.mean(v)), "keypoints": len(v)} for c, v in per_category.items()}}


def _score_semantic(bench, predictions):
    predicted = [p for pred in predictions for p in pred["predicted"]]
    expected = [e for pred in predictions for e in pred["expected"]]
    categories = [bench.dataset.category_of(bench.dataset.annotation(unit["ann_id"])).name
                  for unit, pred in zip(bench.units, predictions) for _ in pred["expected"]]

    def accuracy_by(keys) -> dict[str, tuple[float, int]]:  # key -> (accuracy, answers)
        groups: dict[str, tuple[list, list]] = {}
        for key, answer, truth in zip(keys, predicted, expected):
            group = groups.setdefault(key, ([], []))
            group[0].append(answer)
            group[1].append(truth)
        return {k: (semantic_accuracy(*v), len(v[1])) for k, v in groups.items()}

    errors = semantic_errors(predicted, expected, groups=categories)
    return {"metrics": {"accuracy": errors["kinds"]["correct"]},
            "counts": {"instances": len(predictions), "keypoints": len(expected),
                       "unparsed": sum(p is None for p in predicted)},
            "errors": errors["kinds"], "confusions": errors["confusions"],
            "per_category": {k: {"accuracy": a, "keypoints": n} for k, (a, n) in accuracy_by(categories).items()},
            "per_keypoint": {k: a for k, (a, _) in accuracy_by(f"{c}/{e}" for c, e in zip(categories, expected)).items()}}


def _score_cape(bench, predictions):
    ds = bench.dataset
    by_category: dict[int, list] = {}
    for unit, pred in zip(bench.units, predictions):
        query = ds.annotation(unit["query_id"])
        supports = np.stack([ds.annotation(i).visible for i in unit["support_ids"]])
        image = ds.images[query.image_id]
        box = clean_bbox(query.bbox, image.width, image.height) or query.bbox
        by_category.setdefault(unit["category_id"], []).append(
            (np.asarray(pred["keypoints"])[:, :2], query.keypoints[:, :2], query.visible, supports, box))

    def cape(items):
        return cape_pck(np.stack([i[0] for i in items]), np.stack([i[1] for i in items]),
                        np.stack([i[2] for i in items]), np.stack([i[3] for i in items]),
                        np.array([i[4] for i in items]))

    per_category = {ds.categories[cid].name: cape(items) for cid, items in by_category.items()}
    per_keypoint = {f"{name}/{ds.categories[cid].keypoint_names[k]}": hits / counted
                    for cid, name in ((cid, ds.categories[cid].name) for cid in by_category)
                    for k, (hits, counted) in enumerate(zip(per_category[name].keypoint_hits,
                                                            per_category[name].keypoint_counted)) if counted}
    # categories differ in K, so cape_pck runs per category; the overall score is the mean over all
    # queries, as in the reference (per-category means weighted by their query counts)
    total = sum(s.num_queries for s in per_category.values())
    overall = {thr: sum(s.pck[thr] * s.num_queries for s in per_category.values()) / max(total, 1)
               for thr in CAPE_THRESHOLDS}
    metrics = {f"PCK@{thr:g}": v for thr, v in overall.items()}
    metrics["mPCK"] = float(np.mean(list(overall.values())))
    return {"metrics": metrics,
            "counts": {"queries": len(predictions), "episodes": len({u["episode"] for u in bench.units}),
                       "categories": len(per_category), "prompted_keypoints": sum(len(p["parsed"]) for p in predictions),
                       "unparsed": sum(not ok for p in predictions for ok in p["parsed"])},
            "per_category": {name: {**{f"PCK@{t:g}": v for t, v in s.pck.items()}, "queries": s.num_queries}
                             for name, s in per_category.items()},
            "per_keypoint": per_keypoint}


def _score_generic(bench, predictions, with_ap: bool = True):
    ds = bench.dataset
    kset = catalog.get(GENERIC[bench.name][0])
    pred = np.array([p["keypoints"] for p in predictions], dtype=np.float64).reshape(len(predictions), -1, 3)
    anns = [ds.annotation(u["ann_id"]) for u in bench.units]
    k = kset.num_keypoints  # Human-Art files also carry 21 keypoints: the benchmark scores the first 17 (COCO's)
    if any(len(a.keypoints) < k for a in anns):
        raise ValueError(f"{bench.name} needs {k} keypoints per annotation")
    gt = np.stack([a.keypoints[:k] for a in anns]) if anns else np.zeros((0, k, 3))
    side = np.array([[max(a.bbox[2:]), max(a.bbox[2:])] for a in anns]).reshape(-1, 2)
    per_kpt, pck02, _ = pck(pred[..., :2], gt[..., :2], gt[..., 2] > 0, side, 0.2) if anns else ([], 0.0, 0)
    metrics = {"PCK@0.2": pck02}
    if bench.name == "animal_kingdom":
        metrics["PCK@0.05"] = pck(pred[..., :2], gt[..., :2], gt[..., 2] > 0, side, 0.05)[1] if anns else 0.0
    if kset.sigmas is not None and with_ap:
        # as mmpose's CocoMetric with GT boxes (box score 1); an instance with nothing parsed has no result
        # (it could not match anyway)
        results = _ranked_results([(a.image_id, a.category_id, p, 1.0, a.bbox) for a, p in zip(anns, pred)
                                   if p[:, 2].max() > 0], kset.sigmas)
        # ground truth: the evaluated instances plus what COCOeval ignores on their images (crowd regions,
        # instances without labelled keypoints), so a --limit run is scored like the full protocol
        evaluated_images = {a.image_id for a in anns}
        ignored = [a for a in ds.annotations if a.image_id in evaluated_images and (a.iscrowd or a.num_keypoints == 0)]
        subset = _coco_ground_truth(ds, anns + ignored, evaluated_images, k)
        metrics.update(keypoint_ap(subset, results, sigmas=kset.sigmas))
    unparsed = sum(not ok for p in predictions for ok in p["parsed"])
    return {"metrics": metrics,
            "counts": {"instances": len(anns), "keypoints": int((gt[..., 2] > 0).sum()), "unparsed": unparsed},
            "per_keypoint": {name: float(v) for name, v in zip(kset.names, per_kpt)},
            "per_category": _per_category_pck(ds, anns, pred, gt, side)}


def _per_category_pck(ds, anns, pred, gt, side):
    out = {}
    for cid in sorted({a.category_id for a in anns}):
        rows = [i for i, a in enumerate(anns) if a.category_id == cid]
        _, value, _ = pck(pred[rows, :, :2], gt[rows, :, :2], gt[rows, :, 2] > 0, side[rows], 0.2)
        out[ds.categories[cid].name] = {"PCK@0.2": value, "instances": len(rows)}
    return out


def coco_results(bench: Benchmark, predictions: list[dict]) -> list[dict]:
    """Raw predictions as COCO keypoint results (one per query instance / GT instance)."""
    out = []
    for unit, pred in zip(bench.units, predictions):
        if "keypoints" not in pred:
            continue
        rows = np.asarray(pred["keypoints"], dtype=np.float64)
        if "det" in unit:
            out.append({"image_id": unit["image_id"], "category_id": unit["category_id"] or 1,
                        "keypoints": rows.reshape(-1).tolist(), "bbox": unit["bbox"], "box_score": unit["box_score"],
                        "score": rescore(rows[:, 2], unit["box_score"])})
            continue
        ann = bench.dataset.annotation(unit.get("query_id", unit.get("ann_id")))
        out.append({"image_id": ann.image_id, "category_id": ann.category_id, "keypoints": rows.reshape(-1).tolist(),
                    "score": float(rows[:, 2].mean()) if len(rows) else 0.0, "annotation_id": ann.id})
    return out
