"""What every detector returns, and the small pieces of box arithmetic they share.

Boxes are xyxy pixels of the image as `kptllm.image.load_image` reads it (EXIF rotation applied), so
`Detection.xywh` goes straight to `KeypointPredictor.set_image(image, bbox=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    xyxy: tuple[float, float, float, float]  # pixels of the input image
    score: float
    label: str

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = self.xyxy
        return x1, y1, x2 - x1, y2 - y1


def split_phrases(text: str | None) -> list[str]:
    """ "Person, dog; a cat." -> ["person", "dog", "a cat"]: lower case, split at '.', ',' and ';'."""
    parts = str(text or "").replace(",", ".").replace(";", ".").split(".")
    return [" ".join(p.split()).lower() for p in parts if p.strip()]


def normalize_query(text: str) -> str:
    """GroundingDINO wants lower-case phrases each ending with '.': "Person, dog" -> "person. dog."."""
    return " ".join(f"{p}." for p in split_phrases(text))


def clip_box(box, width: int, height: int) -> tuple[float, float, float, float] | None:
    """xyxy clipped to the image; None when less than a pixel is left in either direction."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1 = max(0.0, x1), max(0.0, y1)
    x2, y2 = min(float(width), x2), min(float(height), y2)
    return (x1, y1, x2, y2) if x2 - x1 >= 1 and y2 - y1 >= 1 else None


def box_iou(a, b) -> float:
    """IoU of two xywh boxes (COCO's definition, continuous pixels)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0
