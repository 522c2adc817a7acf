"""The embedded demo model: a small KptLLM++ trained on KeypointWorld, shipped in the repository.

    KeypointPredictor.from_pretrained()          # no argument: this model
    kptllm predict --image ... --keypoints ...   # no --model: this model

It lives in `assets/kptllm-keypointworld/` of a clone (weights in float16, about 17 MB; loaded in
float32 on a CPU). It knows KeypointWorld's drawn objects, not real photographs: see its model card
(`README.md` in that folder) for data, training, held-out accuracy and limits.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "kptllm-keypointworld"
EMBEDDED_DETECTOR_DIR = Path(__file__).resolve().parents[1] / "assets" / "kptllm-keypointworld-detector"


def embedded_model_path() -> Path:
    """Folder of the embedded model; `KPTLLM_EMBEDDED_MODEL` overrides it. FileNotFoundError when absent."""
    return _asset("KPTLLM_EMBEDDED_MODEL", EMBEDDED_MODEL_DIR, "model", "a model path or hub id")


def embedded_detector_path() -> Path:
    """Folder of the embedded KeypointWorld detector (RT-DETR, beside the model); `KPTLLM_EMBEDDED_DETECTOR`
    overrides it. FileNotFoundError when absent."""
    return _asset("KPTLLM_EMBEDDED_DETECTOR", EMBEDDED_DETECTOR_DIR, "detector", "a detector path or hub id")


def _asset(variable: str, default: Path, what: str, instead: str) -> Path:
    path = Path(os.environ.get(variable) or default)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the embedded {what} is not at {path} (it ships in the repository's assets/ folder; "
            f"an installed wheel without the repository has none): pass {instead}")
    return path
