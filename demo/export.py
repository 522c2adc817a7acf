"""Exports shared by the tabs: the annotated PNG and a JSON file with COCO-style keypoints and the prompt.

Files a request offers for download are written to a folder of their own under one export root
(`$KPTLLM_EXPORT_DIR`, else `<system temp>/kptllm-demo-exports-<uid>`). Gradio copies a returned file into
its own cache before the response goes out, so ours are only a staging copy: every new request folder first
deletes the request folders older than `EXPORT_MAX_AGE_S`, and a demo that runs for months keeps at most an
hour of them. (Gradio's cache is pruned by `Blocks(delete_cache=...)` in `demo.app`.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from PIL import Image

EXPORT_DIR_ENV = "KPTLLM_EXPORT_DIR"
EXPORT_MAX_AGE_S = 3600.0


def export_root() -> Path:
    """The folder that holds one sub-folder per request (created, owner-only, if missing)."""
    configured = os.environ.get(EXPORT_DIR_ENV)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    root = Path(configured) if configured else Path(tempfile.gettempdir()) / f"kptllm-demo-exports-{uid}"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot use {root} for the demo's downloads ({err.strerror}); set {EXPORT_DIR_ENV} "
                         "to a writable folder") from None
    return root


def prune_exports(root: Path, max_age_s: float = EXPORT_MAX_AGE_S, now: float | None = None) -> int:
    """Delete the request folders under `root` last modified more than `max_age_s` seconds ago; how many went.

    Only `request-*` folders are touched, so a root pointed at a folder with other contents loses nothing else."""
    now = time.time() if now is None else now
    removed = 0
    for folder in root.glob("request-*"):
        try:
            if folder.is_dir() and not folder.is_symlink() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except FileNotFoundError:  # another worker pruned it first
            continue
    return removed


def request_folder() -> Path:
    """A fresh folder for one request's files (nothing shared between users); prunes stale ones first."""
    root = export_root()
    prune_exports(root)
    return Path(tempfile.mkdtemp(prefix="request-", dir=root))


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
                skeleton: Sequence[tuple[int, int]], model: str, min_score: float = 0.0, file_name: str = "image.png",
                annotated_size: tuple[int, int] | None = None) -> dict:
    """The whole export as a dict. `instances`: [{"bbox": xywh | None, "results": [KeypointResult.to_dict()...]}];
    instances that carry their own "category", "names" and "skeleton" (In the wild, each object's own keypoints)
    become one COCO category each, their annotations pointing at it; else one category of `names`.

    Coordinates are pixels of the source image (`images[0]`); `annotated_png` says how the PNG beside it was
    scaled (small images are enlarged so that labels stay readable): PNG pixel = `scale` x image pixel."""
    payload = {
        "task": task,
        "prompt": prompt,
        "model": model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "min_score": min_score,
        "images": [{"id": 1, "file_name": file_name, "width": image.width, "height": image.height}],
        "categories": [{"id": 1, "name": prompt.get("category") or "custom", "keypoints": list(names),
                        "skeleton": [[a + 1, b + 1] for a, b in skeleton]}],  # COCO skeletons are 1-based
        "annotations": [coco_annotation(inst["results"], inst.get("bbox"), min_score, annotation_id=k + 1)
                        for k, inst in enumerate(instances)],
        "results": [{"bbox": inst.get("bbox"), "keypoints": list(inst["results"])} for inst in instances],
    }
    if any("category" in inst for inst in instances):  # objects of several categories, each with its own keypoints
        categories: dict[str, dict] = {}
        for inst, annotation in zip(instances, payload["annotations"]):
            entry = categories.setdefault(inst["category"], {
                "id": len(categories) + 1, "name": inst["category"], "keypoints": list(inst["names"]),
                "skeleton": [[a + 1, b + 1] for a, b in inst.get("skeleton", ())]})
            annotation["category_id"] = entry["id"]
        payload["categories"] = list(categories.values())
    if annotated_size is not None:
        payload["annotated_png"] = {"width": annotated_size[0], "height": annotated_size[1],
                                    "scale": round(annotated_size[0] / image.width, 6)}
    return payload


def write_exports(annotated: Image.Image, payload: dict, stem: str = "keypoints") -> tuple[str, str]:
    """(png_path, json_path) in a fresh folder of their own (one per request: nothing shared between users)."""
    folder = request_folder()
    png, js = folder / f"{stem}.png", folder / f"{stem}.json"
    annotated.save(png, format="PNG")
    js.write_text(json.dumps(payload, indent=1, default=float))
    return str(png), str(js)
