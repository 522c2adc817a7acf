"""Exports shared by the tabs: the annotated PNG and a JSON file with COCO-style keypoints and the prompt."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Sequence

from PIL import Image

EXPORT_DIR_PREFIX = "kptllm-demo-"


def _folder() -> Path:
    return Path(tempfile.mkdtemp(prefix=EXPORT_DIR_PREFIX))


def coco_annotation(results: Sequence[dict], bbox=None, min_score: float = 0.0, category_id: int = 1,
                    image_id: int = 1, annotation_id: int = 1) -> dict:
    """One COCO keypoint annotation: [x, y, v] per keypoint (v=2 located, 0 not located / below `min_score`)."""
    flat, located, scores = [], 0, []
    for r in results:
        if r.get("xy") is not None and r.get("score", 0.0) >= min_score:
            flat += [round(r["xy"][0], 2), round(r["xy"][1], 2), 2]
            located += 1
            scores.append(r["score"])
        else:
            flat += [0, 0, 0]
    annotation = {"id": annotation_id, "image_id": image_id, "category_id": category_id, "keypoints": flat,
                  "num_keypoints": located, "score": round(sum(scores) / len(scores), 4) if scores else 0.0}
    if bbox is not None:
        annotation["bbox"] = [round(float(v), 2) for v in bbox]
    return annotation


def export_json(task: str, prompt: dict, image: Image.Image, instances: Sequence[dict], names: Sequence[str],
                skeleton: Sequence[tuple[int, int]], model: str, min_score: float = 0.0, file_name: str = "query.png") -> dict:
    """The whole export as a dict. `instances`: [{"bbox": xywh | None, "results": [KeypointResult.to_dict()...]}]."""
    return {
        "task": task,
        "prompt": prompt,
        "model": model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "min_score": min_score,
        "images": [{"id": 1, "file_name": file_name, "width": image.width, "height": image.height}],
        "categories": [{"id": 1, "name": prompt.get("category") or "object", "keypoints": list(names),
                        "skeleton": [[a + 1, b + 1] for a, b in skeleton]}],  # COCO skeletons are 1-based
        "annotations": [coco_annotation(inst["results"], inst.get("bbox"), min_score, annotation_id=k + 1)
                        for k, inst in enumerate(instances)],
        "results": [{"bbox": inst.get("bbox"), "keypoints": list(inst["results"])} for inst in instances],
    }


def write_exports(annotated: Image.Image, payload: dict, stem: str = "keypoints") -> tuple[str, str]:
    """(png_path, json_path) in a fresh folder of their own (one per request: nothing shared between users)."""
    folder = _folder()
    png, js = folder / f"{stem}.png", folder / f"{stem}.json"
    annotated.save(png, format="PNG")
    js.write_text(json.dumps(payload, indent=1, default=float))
    return str(png), str(js)
