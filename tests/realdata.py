"""Reading the real test images of tests/data/real (see tests/data/README.md; the full COCO reader lives in `evaluation`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
REAL = DATA / "real"
MP100_SPLIT1_TEST = DATA / "mp100" / "mp100_split1_test.json"


@dataclass
class Instance:
    dataset: str
    image: Path
    bbox: list[float]  # xywh
    keypoints: list[tuple[float, float, int]]  # (x, y, v)


def _resolve(folder: Path, file_name: str) -> Path | None:
    for candidate in (folder / file_name, folder / file_name.removeprefix("HumanArt/images/")):
        if candidate.is_file():
            return candidate
    return None


def real_instances() -> list[Instance]:
    out = []
    for annotation_file in sorted(REAL.glob("*/*.json")):
        data = json.loads(annotation_file.read_text())
        if not isinstance(data, dict) or "annotations" not in data:
            continue
        images = {im["id"]: im for im in data.get("images", [])}
        for ann in data["annotations"]:
            image = images.get(ann.get("image_id"))
            path = image and _resolve(annotation_file.parent, image["file_name"])
            kpts = ann.get("keypoints") or []
            if path is None or not kpts or len(ann.get("bbox") or []) != 4 or min(ann["bbox"][2:]) <= 1:
                continue
            triples = [(float(kpts[i]), float(kpts[i + 1]), int(kpts[i + 2])) for i in range(0, len(kpts), 3)]
            out.append(Instance(annotation_file.parent.name, path, [float(v) for v in ann["bbox"]], triples))
    return out
