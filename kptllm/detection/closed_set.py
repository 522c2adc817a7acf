"""A detector of a fixed list of categories: transformers' `RTDetrForObjectDetection` (RT-DETR).

    det = ClosedSetDetector.from_pretrained("assets/kptllm-keypointworld-detector")   # or embedded_detector()
    det.detect(image, "person. quadruped.")      # -> [Detection, ...], labels are the categories' names
    det.detect(image)                            # every category it knows

The embedded KeypointWorld detector is one (about 0.7 M parameters, 320 px): it makes "no box" and the
In-the-wild tab work offline, where GroundingDINO would need the hub. Its phrases are its category names
(`categories`), their plurals, and the aliases its config lists (`phrase_aliases`, e.g. "dog" ->
"quadruped"); any other phrase is refused with the list of what it knows, never silently dropped.

The network reads each image as its image processor's `size` says, in training as at inference (`encode`):
{"height": S, "width": S} stretches every image to S squared (stages 1-5 of the embedded detector);
{"shortest_edge": S, "longest_edge": L} keeps the image's aspect, its shorter side at S and its longer at most L,
each side rounded to a multiple of 32 (a wide canvas is not squeezed: its objects keep their shape and size).
Boxes come back in pixels of the input image. Overlapping boxes (IoU > `NMS_IOU`) are reduced to the best one by
supervision's non-maximum suppression: a small DETR still proposes one object more than once. Per category at IoU 0.7 for
scoring (`detect_batch`), across categories at 0.5 for the demo (`detect`: one box per object).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..image import load_image
from .base import Detection, clip_box, split_phrases

ARTICLES = ("a ", "an ", "the ")
STRIDE = 32  # the backbone halves its maps five times: the input's sides are multiples of 32
NMS_IOU = 0.7  # per category, for scoring
OBJECT_NMS_IOU = 0.5  # across categories, for the demo: one box per object


class ClosedSetDetector:
    kind = "RT-DETR"

    def __init__(self, model, image_processor, device=None):
        self.model = model.eval()
        self.image_processor = image_processor
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, path, device=None) -> "ClosedSetDetector":
        """From a folder written by `save_pretrained` (config.json, model.safetensors, preprocessor_config.json)."""
        from transformers import RTDetrForObjectDetection, RTDetrImageProcessorPil

        model = RTDetrForObjectDetection.from_pretrained(str(path), local_files_only=True)
        model.float()  # shipped in float16 to stay small; inference in float32 on a CPU
        image_processor = RTDetrImageProcessorPil.from_pretrained(str(path), local_files_only=True)
        return cls(model, image_processor, device)

    def save_pretrained(self, path, dtype: torch.dtype | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model if dtype is None else _copy_as(self.model, dtype)
        model.save_pretrained(str(path))
        self.image_processor.save_pretrained(str(path))
        return path

    # ------------------------------------------------------------------ vocabulary
    @property
    def categories(self) -> tuple[str, ...]:
        id2label = self.model.config.id2label
        return tuple(id2label[i] for i in sorted(id2label))

    @property
    def image_size(self) -> int:
        """The side the network reads: the square's, or the shorter side's when the aspect is kept."""
        size = self.image_processor.size
        return int(size["shortest_edge"] if self.keeps_aspect else size["height"])

    @property
    def keeps_aspect(self) -> bool:
        return self.image_processor.size.get("shortest_edge") is not None

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) in pixels at which the network reads an image of `width` x `height` pixels."""
        size = self.image_processor.size
        if not self.keeps_aspect:
            return int(size["height"]), int(size["width"])
        shortest, longest = int(size["shortest_edge"]), int(size.get("longest_edge") or size["shortest_edge"] * 4)
        scale = min(shortest / min(width, height), longest / max(width, height))
        return tuple(max(STRIDE, STRIDE * round(side * scale / STRIDE)) for side in (height, width))

    def encode(self, images) -> tuple[torch.Tensor, list[tuple[float, float]]]:
        """The network's input for PIL `images`: pixel_values (B, 3, H, W), each image resized to its
        `input_size` and zero-padded at the right and bottom to the batch's largest, and per image the
        (width, height), in its own pixels, that the padded frame spans: a box normalized by the network
        (cx, cy, w, h in [0, 1] of the padded frame) is x * span_w, y * span_h in the image's pixels."""
        sizes = [self.input_size(im.width, im.height) for im in images]
        if len(set(sizes)) == 1:  # one size (always when stretching): one call
            pixels = self.image_processor(images=images, size={"height": sizes[0][0], "width": sizes[0][1]},
                                          return_tensors="pt")["pixel_values"]
        else:
            top, right = max(h for h, _ in sizes), max(w for _, w in sizes)
            pixels = torch.zeros(len(images), 3, top, right)
            for k, (im, (h, w)) in enumerate(zip(images, sizes)):
                pixels[k, :, :h, :w] = self.image_processor(images=[im], size={"height": h, "width": w},
                                                            return_tensors="pt")["pixel_values"][0]
        frame_h, frame_w = pixels.shape[-2:]
        spans = [(frame_w * im.width / w, frame_h * im.height / h) for im, (h, w) in zip(images, sizes)]
        return pixels, spans

    def resolve(self, text: str | None) -> list[str]:
        """The category names a query asks for, in the query's order; None or an empty query: all of them.

        ValueError naming the phrases it does not know and the categories it does."""
        phrases = split_phrases(text)
        if not phrases:
            return list(self.categories)
        aliases = {k.lower(): v for k, v in (getattr(self.model.config, "phrase_aliases", None) or {}).items()}
        known = {c.lower(): c for c in self.categories}
        wanted, unknown = [], []
        for phrase in phrases:
            name = _category_of(phrase, known, aliases)
            if name is None:
                unknown.append(phrase)
            elif name not in wanted:
                wanted.append(name)
        if unknown:
            said = ", ".join(f"'{p}'" for p in unknown)
            raise ValueError(f"this detector knows only {', '.join(self.categories)}; it does not know {said}")
        return wanted

    # ------------------------------------------------------------------ detection
    @torch.no_grad()
    def detect(self, image, text: str | None = None, box_threshold: float = 0.3, max_detections: int = 20,
               **_ignored) -> list[Detection]:
        """Boxes of the categories `text` names (None: all), best first, at most `max_detections`.

        `image`: a path, PIL image or numpy array, read as the predictor reads it. `**_ignored` takes
        GroundingDINO-only options (`text_threshold`), so callers can hold either detector."""
        wanted = set(self.resolve(text))
        found = [d for d in self.detect_batch([image], box_threshold, OBJECT_NMS_IOU, per_category=False)[0]
                 if d.label in wanted]
        return found[:max_detections]

    @torch.no_grad()
    def detect_batch(self, images, box_threshold: float = 0.0, nms_iou: float | None = NMS_IOU,
                     per_category: bool = True) -> list[list[Detection]]:
        """All categories' boxes for several images in one forward pass; one best-first list per image, reduced by
        non-maximum suppression at `nms_iou` (None: none) within each category (`per_category`) or across them."""
        images = [load_image(image) for image in images]
        pixels, spans = self.encode(images)
        outputs = self.model(pixel_values=pixels.to(self.device, next(self.model.parameters()).dtype))
        results = self.image_processor.post_process_object_detection(
            outputs, threshold=box_threshold, target_sizes=[(span_h, span_w) for span_w, span_h in spans])
        names = self.model.config.id2label
        found_per_image = []
        for image, result in zip(images, results):
            found = []
            for box, score, label in zip(result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()):
                xyxy = clip_box(box, image.width, image.height)
                if xyxy is not None:
                    found.append(Detection(xyxy, float(score), names[int(label)]))
            found.sort(key=lambda d: -d.score)
            found_per_image.append(suppress_overlaps(found, nms_iou, per_category) if nms_iou is not None else found)
        return found_per_image


def suppress_overlaps(found: list[Detection], iou: float, per_category: bool) -> list[Detection]:
    """`found` (best first) without the boxes that overlap a better one by IoU > `iou` (supervision's NMS)."""
    if len(found) < 2:
        return found
    import numpy as np
    import supervision as sv

    labels = {label: k for k, label in enumerate(dict.fromkeys(d.label for d in found))}
    rows = np.array([[*d.xyxy, d.score] + ([labels[d.label]] if per_category else []) for d in found], dtype=np.float64)
    keep = sv.box_non_max_suppression(rows, iou_threshold=iou)
    return [d for d, kept in zip(found, keep) if kept]


def _category_of(phrase: str, known: dict, aliases: dict) -> str | None:
    for article in ARTICLES:
        if phrase.startswith(article):
            phrase = phrase[len(article):]
    for candidate in (phrase, phrase[:-1] if phrase.endswith("s") else None, phrase[:-2] if phrase.endswith("es") else None):
        if candidate in known:
            return known[candidate]
        if candidate in aliases:
            return aliases[candidate]
    return None


def _copy_as(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype)
