"""What the detector's operating score costs the chain: objects found and unmatched boxes per image, by score.

    PYTHONPATH=. python -m benchmarks.detector_operating_point results/detector/decision/keypointworld-detection
    PYTHONPATH=. python -m benchmarks.detector_operating_point --annotations A.json --detections D.json

Reads a detection record's folder (its detections.json and the annotation file its record.json names) or the two
files. For each score threshold: how many annotated objects the chain's rule finds (`match_objects`: a detection of
the object's category with IoU >= 0.5, kept at that score), and how many kept detections match no object of their
category (what a visitor would see as a wrong box). The chain and the demo take boxes at 0.3
(`evaluation.detected_boxes.BOX_THRESHOLD`, `demo.boxes.EMBEDDED_BOX_THRESHOLD`); tab (a) at 0.2. Choose an
operating point on scenes no decision uses (the validation seed), not on the decision or test set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kptllm.detection import box_iou

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def operating_points(ground_truth: dict, detections: list[dict], thresholds=THRESHOLDS) -> list[dict]:
    """One row per threshold: objects found (the chain's rule), unmatched detections, both per image.

    `ground_truth`: a COCO file's dict; `detections`: COCO results (xywh boxes in the images' pixels)."""
    from evaluation.data import KeypointDataset
    from evaluation.detected_boxes import match_objects

    dataset = KeypointDataset(ground_truth)
    objects_of: dict[tuple[int, int], list] = {}
    for a in dataset.annotations:
        objects_of.setdefault((a.image_id, a.category_id), []).append(a.bbox)
    images = max(len(dataset.images), 1)
    rows = []
    for threshold in thresholds:
        found = sum(box is not None for box in match_objects(dataset, detections, box_threshold=threshold).values())
        kept = [d for d in detections if d["score"] >= threshold]
        unmatched = sum(not any(box_iou(d["bbox"], b) >= 0.5 for b in objects_of.get((d["image_id"], d["category_id"]), ()))
                        for d in kept)
        rows.append({"threshold": threshold, "found": found, "objects": len(dataset.annotations),
                     "found_share": found / max(len(dataset.annotations), 1), "unmatched_per_image": unmatched / images})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| score >= | objects found | share | unmatched boxes per image |", "|---|---|---|---|"]
    lines += [f"| {r['threshold']:g} | {r['found']} of {r['objects']} | {r['found_share']:.3f} | {r['unmatched_per_image']:.2f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", nargs="?", help="a detection record's folder (detections.json, record.json)")
    parser.add_argument("--annotations", help="the COCO annotation file (default: the one the record names)")
    parser.add_argument("--detections", help="COCO detection results (default: RECORD/detections.json)")
    args = parser.parse_args(argv)
    if not args.record and not (args.annotations and args.detections):
        parser.error("give a record folder, or --annotations and --detections")
    detections = Path(args.detections) if args.detections else Path(args.record) / "detections.json"
    record = Path(args.record or ".") / "record.json"
    if not detections.is_file() or not (args.annotations or record.is_file()):
        parser.error(f"{detections if not detections.is_file() else record} not found (a detection record's folder "
                     "has detections.json and record.json)")
    annotations = args.annotations or json.loads(record.read_text())["annotations"]
    if not Path(annotations).is_file():
        parser.error(f"annotation file {annotations} not found (render the set, or give --annotations)")
    print(table(operating_points(json.loads(Path(annotations).read_text()), json.loads(detections.read_text()))))


if __name__ == "__main__":
    main()
