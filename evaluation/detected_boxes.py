"""Boxes from a detector instead of the annotation file: the whole chain scored (detector -> crop -> keypoints).

    detections = detect_images(detector, dataset)          # COCO detection results, every image, all categories
    boxes = match_objects(dataset, detections)             # ann id -> the box the model gets, or None (missed)
    run_detection_benchmark("embedded", annotations, images, out)   # box AP / AP50 of the detector alone

The rule (issue 27): each annotated object gets the detection **of its category** with the highest IoU with
its ground-truth box, if that IoU is at least 0.5; an object with none is missed and scores 0 on all its
keypoints. Everything else is scored exactly as with ground-truth boxes (PCK still normalised by the
ground-truth box, the same keypoints asked). Detections are made once per image and kept in
OUT/detections.json, so a resumed run uses the same boxes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from kptllm.detection import box_iou, load_detector

from .data import KeypointDataset
from .data.keypointworld import description_version
from .data.keypointworld_sets import set_of
from .metrics import box_ap

MATCH_IOU = 0.5
MAX_DETECTIONS = 100  # per image, as COCOeval's maxDets
BOX_THRESHOLD = 0.3  # the chain takes detections at the detector's operating point (the demo's), not every guess


def detector_label(name_or_path: str | None) -> str:
    """What records call the detector: 'embedded', a folder's name, or a hub id."""
    if name_or_path in (None, "embedded"):
        return "embedded"
    path = Path(name_or_path)
    return path.name if path.exists() else str(name_or_path)


def detector_sha256(name_or_path: str | None) -> str | None:
    """sha256 of the detector's weights (the embedded detector's or a folder's), None for a hub id."""
    if name_or_path in (None, "embedded"):
        from kptllm.embedded import embedded_detector_path

        folder = embedded_detector_path()
    else:
        folder = Path(name_or_path)
    weights = folder / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


def coco_detections(detector, images, image_ids, category_ids: dict[str, int], batch: int = 16) -> list[dict]:
    """COCO detection results of `detector` on `images` (paths or PIL images; `image_ids` alike), all categories,
    at most MAX_DETECTIONS per image; `category_ids`: category name -> id. A detector that names a category not in
    `category_ids` is an error."""
    results = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        if hasattr(detector, "detect_batch"):
            found = detector.detect_batch(chunk)
        else:  # an open-vocabulary detector: ask for the categories by name
            query = ". ".join(category_ids)
            found = [detector.detect(image, query, box_threshold=0.05, max_detections=MAX_DETECTIONS) for image in chunk]
        for image_id, detections in zip(image_ids[start:start + batch], found):
            for d in detections[:MAX_DETECTIONS]:
                if d.label not in category_ids:
                    raise ValueError(f"the detector found '{d.label}', a category the annotation file does not have")
                results.append({"image_id": image_id, "category_id": category_ids[d.label],
                                "bbox": [round(v, 2) for v in d.xywh], "score": round(d.score, 5)})
    return results


def detect_images(detector, dataset: KeypointDataset, batch: int = 16) -> list[dict]:
    """`coco_detections` on every image of `dataset` that is on disk, category ids from the dataset's names."""
    images = [im for im in dataset.images.values() if im.path is not None]
    return coco_detections(detector, [im.path for im in images], [im.id for im in images],
                           {c.name: cid for cid, c in dataset.categories.items()}, batch)


def match_objects(dataset: KeypointDataset, detections: list[dict], iou: float = MATCH_IOU,
                  box_threshold: float = BOX_THRESHOLD) -> dict[int, tuple | None]:
    """ann id -> xywh of the detection (score >= `box_threshold`) of its category with the highest IoU >= `iou`,
    or None."""
    by_image: dict[tuple[int, int], list[dict]] = {}
    for d in detections:
        if d["score"] < box_threshold:
            continue
        by_image.setdefault((d["image_id"], d["category_id"]), []).append(d)
    matched = {}
    for ann in dataset.annotations:
        best, best_iou = None, iou
        for d in by_image.get((ann.image_id, ann.category_id), []):
            overlap = box_iou(ann.bbox, d["bbox"])
            if overlap >= best_iou:
                best, best_iou = tuple(float(v) for v in d["bbox"]), overlap
        matched[ann.id] = best
    return matched


def cached_detections(out_dir: Path, detector: str | None, dataset: KeypointDataset) -> list[dict]:
    """OUT/detections.json if it is there (a resumed run), else the detector's results, saved there."""
    path = out_dir / "detections.json"
    if path.is_file():
        return json.loads(path.read_text())
    detections = detect_images(load_detector(detector), dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(detections))
    return detections


def per_category_ap(ground_truth: dict, detections: list[dict]) -> dict[str, dict]:
    """Box AP / AP50 of each category alone (its ground truth and its detections)."""
    out = {}
    for category in ground_truth["categories"]:
        cid = category["id"]
        gt = {**ground_truth, "annotations": [a for a in ground_truth["annotations"] if a["category_id"] == cid]}
        if not gt["annotations"]:
            continue
        stats = box_ap(gt, [d for d in detections if d["category_id"] == cid])
        out[category["name"]] = {"AP": stats["AP"], "AP50": stats["AP50"], "objects": len(gt["annotations"])}
    return out


def run_detection_benchmark(detector: str | None, annotations: str, images: str, out: str, name: str | None = None) -> dict:
    """Box AP of `detector` on a COCO file's images (pycocotools COCOeval, bbox): OUT/record.json + detections.json."""
    from .runner import RECORD_VERSION, annotations_label, code_version, file_sha256, hardware

    dataset = KeypointDataset.load(annotations, image_root=images)
    missing = [im.file_name for im in dataset.images.values() if im.path is None]
    if missing:
        raise ValueError(f"{len(missing)} images of {annotations} are not under {images} (first: {missing[0]})")
    out_dir = Path(out)
    label = detector_label(detector)
    detections = cached_detections(out_dir, detector, dataset)
    ground_truth = json.loads(Path(annotations).read_text())
    ground_truth["annotations"] = [a for a in ground_truth["annotations"] if not a.get("iscrowd")]
    stats = box_ap(ground_truth, detections)
    sha = file_sha256(Path(annotations))
    record = {
        "record_version": RECORD_VERSION, "name": name or f"{label} detector", "model": label, "detector": label,
        "checkpoint_sha256": detector_sha256(detector), "benchmark": "keypointworld" if "KeypointWorld" in str(
            ground_truth.get("info", {}).get("description", "")) else Path(annotations).stem,
        "protocol": "box AP of every category's detections (pycocotools COCOeval, bbox, maxDets 100)",
        "task": "detection", "shots": None, "limit": None, "annotations": str(annotations), "annotations_sha256": sha,
        "annotations_label": annotations_label(annotations, dataset, sha),
        "annotations_description": dataset.description or None, "images": str(images),
        "set": set_of(dataset.description), "world_version": description_version(dataset.description),
        "metrics": {k: stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")},
        "counts": {"images": len(dataset.images), "objects": len(ground_truth["annotations"]), "detections": len(detections)},
        "per_category": per_category_ap(ground_truth, detections), "headline_metric": "AP",
        "units": len(dataset.images), "units_evaluated": len(dataset.images), "units_total": len(dataset.images),
        "hardware": hardware(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
    }
    (out_dir / "record.json").write_text(json.dumps(record, indent=1))
    return record
