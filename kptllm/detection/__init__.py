"""Object boxes for the keypoint model: one interface, `detect(image, text) -> [Detection]`, two detectors.

    det = load_detector()                                   # the embedded KeypointWorld detector (offline)
    det = load_detector("IDEA-Research/grounding-dino-tiny")  # GroundingDINO, for photographs
    det.detect(image, "person. quadruped.")                 # boxes in pixels of `image`, best first

`ClosedSetDetector` (RT-DETR) knows a fixed list of categories and refuses other phrases plainly;
`GroundingDinoDetector` reads any phrase. Both take a path, PIL image or array, read as the predictor reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Detection, box_iou, clip_box, normalize_query, split_phrases
from .closed_set import ClosedSetDetector
from .grounding_dino import DEFAULT_DETECTOR, GroundingDinoDetector, tiny_random_detector

EMBEDDED = "embedded"  # the name that asks for the embedded detector


def load_detector(name_or_path: str | None = None, device=None, local_files_only: bool = True):
    """None or "embedded": the detector shipped in assets/; a folder or hub id: RT-DETR folders become a
    `ClosedSetDetector`, anything else GroundingDINO. `local_files_only` (default) never touches the network."""
    if name_or_path in (None, EMBEDDED):
        from ..embedded import embedded_detector_path

        return ClosedSetDetector.from_pretrained(embedded_detector_path(), device=device)
    config = Path(name_or_path) / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("model_type") == "rt_detr":
        return ClosedSetDetector.from_pretrained(name_or_path, device=device)
    return GroundingDinoDetector.from_pretrained(name_or_path, device=device, local_files_only=local_files_only)


__all__ = ["Detection", "ClosedSetDetector", "GroundingDinoDetector", "DEFAULT_DETECTOR", "EMBEDDED", "load_detector",
           "tiny_random_detector", "normalize_query", "split_phrases", "clip_box", "box_iou"]
