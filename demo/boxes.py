"""Boxes found for the visitor: when a request comes without a box, the demo asks a detector (issue 27).

Two detectors may be loaded: the embedded KeypointWorld detector (RT-DETR, in assets/, always there in a
clone, offline) and GroundingDINO (a local copy, `--detector`, or *Download detector*). `Detectors.choose`
says which one answers: the embedded detector when the keypoint model is the embedded one (both know the
same drawn world), else GroundingDINO when it is loaded, else the embedded one. In the wild lets the
visitor pick either.

What each tab does with the boxes (all in pixels of the original image, xywh):
- (a) a click with no box: of the boxes that hold the click (`boxes_holding`, the embedded detector's down to
  score `CLICK_BOX_THRESHOLD`), the one in which the model is most confident of its answer (the smallest
  wins a tie; objects overlap, and the smallest box is another object's one time in ten);
- (b) a support with no box: the smallest box that holds all its marked points; the query with no box: the
  best box of the supports' category;
- (c) no box: the best box of the preset's category (`object_phrase`), or each object found when the typed
  names fit several categories (`categories_for_names`).
Where nothing is found the page says so and the model looks at the whole image, as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kptllm.detection import ClosedSetDetector, Detection, load_detector

from .presets import category_of, presets

EMBEDDED_BOX_THRESHOLD = 0.3  # the embedded detector's operating point (its model card's AP is measured at all scores)
OPEN_BOX_THRESHOLD, OPEN_TEXT_THRESHOLD = 0.35, 0.25  # GroundingDINO's usual thresholds
OPEN_QUERY = "person. animal. face. car. chair."  # what GroundingDINO is asked for when any object will do
MAX_FOUND = 10
# (a): boxes down to this score compete for a click, the model's confidence in its answer choosing among them
# (measured on 200 clicks of unseen scenes: smallest box at 0.3, 0.715 named right; most confident answer among
# boxes >= 0.3, 0.740; >= 0.2, 0.770; with the true box, 0.845)
CLICK_BOX_THRESHOLD = 0.2
MAX_CLICK_BOXES = 3  # each is one more model call

EMBEDDED, OPEN = "embedded", "GroundingDINO"


@dataclass
class Found:
    """A box the demo chose, and what the page says about it."""

    box: tuple[float, float, float, float] | None  # xywh, None: nothing found (the whole image is used)
    label: str | None  # the detector's category / phrase
    note: str


class Detectors:
    """The process's detectors (each may be None) and the lock that serialises their use."""

    def __init__(self, embedded: ClosedSetDetector | None, open_vocabulary=None, open_note: str = "",
                 open_source: str | None = None, prefer_embedded: bool = True):
        self.embedded, self.open, self.open_note = embedded, open_vocabulary, open_note
        self.open_source = open_source
        self.prefer_embedded = prefer_embedded  # the keypoint model is the embedded one: same world
        self.lock = threading.Lock()

    def available(self) -> list[str]:
        return [name for name, d in ((EMBEDDED, self.embedded), (OPEN, self.open)) if d is not None]

    def choose(self, wanted: str | None = None) -> str | None:
        """EMBEDDED, OPEN or None (no detector at all); `wanted` when that one is loaded."""
        have = self.available()
        if wanted in have:
            return wanted
        order = (EMBEDDED, OPEN) if self.prefer_embedded else (OPEN, EMBEDDED)
        return next((name for name in order if name in have), None)

    def describe(self, which: str | None) -> str:
        if which == EMBEDDED:
            return (f"the embedded KeypointWorld detector (RT-DETR; knows {', '.join(self.embedded.categories)} "
                    "in drawn scenes)")
        if which == OPEN:
            return f"GroundingDINO (`{self.open_source or 'local'}`)"
        return "no detector"

    def find(self, image, phrases: str | None = None, which: str | None = None, box_threshold: float | None = None,
             text_threshold: float = OPEN_TEXT_THRESHOLD, max_found: int = MAX_FOUND) -> list[Detection]:
        """Detections in `image` (best first) of `phrases` ('person. dog.'; None: any object it knows).

        ValueError (a plain sentence) when the chosen detector does not know a phrase; [] without a detector."""
        which = self.choose(which)
        if which is None:
            return []
        with self.lock:
            if which == EMBEDDED:
                threshold = EMBEDDED_BOX_THRESHOLD if box_threshold is None else box_threshold
                return self.embedded.detect(image, phrases, box_threshold=threshold, max_detections=max_found)
            threshold = OPEN_BOX_THRESHOLD if box_threshold is None else box_threshold
            return self.open.detect(image, phrases or OPEN_QUERY, box_threshold=threshold,
                                    text_threshold=text_threshold, max_detections=max_found)


def load_embedded_detector(device=None) -> tuple[ClosedSetDetector | None, str]:
    """The embedded detector, or None and why (an installed wheel has no assets/ folder)."""
    try:
        return load_detector(None, device=device), ""
    except (FileNotFoundError, OSError, ValueError) as exc:
        return None, f"The embedded detector is not available ({exc})."


# ----------------------------------------------------------------------------------------- choosing a box
HOLD_MARGIN = 0.1  # of the box's size on each side: a keypoint at an object's edge may lie just outside its box


def _holds(det: Detection, points, margin: float = HOLD_MARGIN) -> bool:
    x1, y1, x2, y2 = det.xyxy
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    return all(x1 - mx <= x <= x2 + mx and y1 - my <= y <= y2 + my for x, y in points)


def _area(det: Detection) -> float:
    x1, y1, x2, y2 = det.xyxy
    return (x2 - x1) * (y2 - y1)


def boxes_holding(detections: list[Detection], points) -> list[Detection]:
    """The detections that hold every point of `points` (pixels; within `HOLD_MARGIN`), smallest first."""
    return sorted((d for d in detections if _holds(d, points)), key=_area)


def box_holding(detections: list[Detection], points) -> Detection | None:
    """The smallest detection that holds every point of `points` (pixels; within `HOLD_MARGIN`), or None."""
    holding = boxes_holding(detections, points)
    return holding[0] if holding else None


def best_of(detections: list[Detection], label: str | None) -> Detection | None:
    """The highest-scoring detection labelled `label` (any label when None)."""
    found = [d for d in detections if label is None or d.label == label]
    return max(found, key=lambda d: d.score) if found else None


def object_phrase(preset: str | None) -> str | None:
    """What to ask the detector for a keypoint preset: its category's last word ('COCO person (17)' ->
    'person', 'AP-10K animal (17)' -> 'animal')."""
    category = category_of(preset)
    return category.split()[-1].lower() if category else None


def categories_for_names(names: list[str]) -> list[str]:
    """The object phrases of every preset whose keypoints include all of `names` (names or descriptions,
    any case), in preset order without repeats: which kinds of object typed names could belong to."""
    wanted = {n.strip().lower() for n in names}
    phrases = []
    for label, preset in presets().items():
        known = {n.lower() for n in preset.names} | {d.lower() for d in preset.descriptions}
        phrase = object_phrase(label)
        if wanted and wanted <= known and phrase not in phrases:
            phrases.append(phrase)
    return phrases


def as_box(det: Detection) -> tuple[float, float, float, float]:
    return tuple(round(v, 1) for v in det.xywh)


def found_note(which: str, detectors: Detectors, what: str, det: Detection | None, among: int = 1) -> str:
    """The sentence under a result whose box the demo found (or did not); `among`: how many boxes competed
    (the model's most confident answer chose `det`)."""
    by = detectors.describe(which)
    if det is None:
        return (f"*No box was given and {by} found no {what}: the model looked at the whole image. Drag a box on "
                "the image for a reliable answer.*")
    x, y, w, h = as_box(det)
    chosen = (f" (of the {among} boxes that hold it, the one where the model was most confident)" if among > 1 else "")
    return (f"*No box was given: {by} found the {det.label} ({det.score:.2f}) at x {x:g}, y {y:g}, width {w:g}, "
            f"height {h:g}{chosen}; it is drawn and written in the box field, where you can change it.*")


def boxes_for_names(detectors: Detectors | None, image, preset: str | None, names: list[str]):
    """Task (c) without a box: -> (boxes xywh, their labels, note). The best box of the preset's category; for
    typed names, the category they fit (its best box) or, when they fit several, each object found of those."""
    which = detectors.choose() if detectors is not None else None
    if which is None:
        return [], [], ""
    by = detectors.describe(which)
    phrases = [object_phrase(preset)] if preset else categories_for_names(names)
    if not phrases:
        return [], [], (f"*No box was given, and these keypoint names belong to no preset, so {by} was not asked which "
                        "object they are on: the model looked at the whole image. Drag a box on the image.*")
    found, unknown = [], []
    for phrase in phrases:
        try:
            found.append((phrase, detectors.find(image, phrase, which)))
        except ValueError:
            unknown.append(phrase)
    if len(phrases) == 1:
        chosen = [best_of(found[0][1], None)] if found and found[0][1] else []
    else:  # the names fit several kinds of object: each one found, once (two phrases may name one category)
        unique = {(d.label, d.xyxy): d for _, ds in found for d in ds}
        chosen = sorted(unique.values(), key=lambda d: -d.score)[:MAX_FOUND]
    said = " or ".join(f"'{p}'" for p in phrases)
    if not chosen:
        why = f" ({by} does not know {', '.join(repr(p) for p in unknown)})" if unknown else ""
        return [], [], (f"*No box was given and no {said} was found{why}: the model looked at the whole image. Drag a "
                        "box on the image for a reliable answer.*")
    boxes = [as_box(d) for d in chosen]
    listed = "; ".join(f"{d.label} ({d.score:.2f}) at {', '.join(f'{v:g}' for v in b)}" for d, b in zip(chosen, boxes))
    return boxes, [f"{d.label} {d.score:.2f}" for d in chosen], (
        f"*No box was given: {by} found {listed} (x, y, width, height); drawn and written in the box field, where "
        "you can change it.*")
