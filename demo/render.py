"""Drawing shared by every tab: keypoints, skeleton edges, labels and boxes with `supervision`.

Sizes scale with the image (a 64 px thumbnail and a 4000 px photo both stay readable) and every mark
has a dark-and-light outline, so it reads on light and dark images alike.
"""

from __future__ import annotations

import colorsys
from typing import Iterable, Sequence

import numpy as np
import supervision as sv
from PIL import Image, ImageDraw, ImageFont

WHITE = sv.Color(255, 255, 255)
BLACK = sv.Color(0, 0, 0)


def palette(count: int) -> list[sv.Color]:
    """`count` saturated, well-separated colours (golden-ratio hues)."""
    colours = []
    for k in range(max(count, 1)):
        r, g, b = colorsys.hsv_to_rgb((0.07 + k * 0.618034) % 1.0, 0.85, 1.0)
        colours.append(sv.Color(int(r * 255), int(g * 255), int(b * 255)))
    return colours


def text_colour(colour: sv.Color) -> sv.Color:
    """Black or white, whichever contrasts more with `colour`."""
    luminance = 0.299 * colour.r + 0.587 * colour.g + 0.114 * colour.b
    return BLACK if luminance > 150 else WHITE


def _scale(width: int, height: int) -> float:
    return max(min(width, height), 1) / 400.0


def as_rgb_array(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def draw_boxes(scene: np.ndarray, boxes_xyxy: Sequence[Sequence[float]], labels: Sequence[str] | None = None) -> np.ndarray:
    """Boxes (x1, y1, x2, y2 pixels) with optional labels on a BGR `scene`, outlined in black under a bright colour."""
    if not len(boxes_xyxy):
        return scene
    h, w = scene.shape[:2]
    s = _scale(w, h)
    xyxy = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    detections = sv.Detections(xyxy=xyxy, class_id=np.arange(len(xyxy)))
    colours = sv.ColorPalette(palette(len(xyxy)))
    thick = max(1, round(2 * s))
    scene = sv.BoxAnnotator(color=BLACK, thickness=thick + 2).annotate(scene, detections)
    scene = sv.BoxAnnotator(color=colours, thickness=thick).annotate(scene, detections)
    if labels:
        scene = sv.LabelAnnotator(color=colours, text_color=BLACK, text_scale=max(0.3, 0.45 * s),
                                  text_thickness=max(1, round(s)), text_padding=max(2, round(4 * s)),
                                  smart_position=True).annotate(scene, detections, labels=list(labels))
    return scene


def draw_keypoints(scene: np.ndarray, points: Sequence[tuple[float, float] | None], labels: Sequence[str] | None = None,
                   skeleton: Iterable[tuple[int, int]] = (), show_labels: bool = True) -> np.ndarray:
    """Keypoints (None = not shown) on a BGR `scene`, with skeleton edges between shown points and their labels.

    `skeleton` holds 0-based index pairs into `points`."""
    shown = [k for k, p in enumerate(points) if p is not None]
    if not shown:
        return scene
    h, w = scene.shape[:2]
    s = _scale(w, h)
    colours = palette(len(points))
    # supervision draws one object's points; hidden points are moved out of view and their edges dropped
    xy = np.array([p if p is not None else (-1e4, -1e4) for p in points], dtype=np.float32)[None]
    edges = [(a, b) for a, b in skeleton if a < len(points) and b < len(points)
             and points[a] is not None and points[b] is not None]
    kp = sv.KeyPoints(xy=xy)
    thick = max(1, round(2 * s))
    if edges:
        one_based = [(a + 1, b + 1) for a, b in edges]  # supervision's edges are 1-based
        scene = sv.EdgeAnnotator(color=BLACK, thickness=thick + 2, edges=one_based).annotate(scene, kp)
        scene = sv.EdgeAnnotator(color=sv.Color(255, 255, 255), thickness=thick, edges=one_based).annotate(scene, kp)
    radius = max(2, round(4 * s))
    for k in shown:  # one vertex per colour, outlined
        single = sv.KeyPoints(xy=xy[:, k:k + 1])
        scene = sv.VertexAnnotator(color=BLACK, radius=radius + max(1, round(s))).annotate(scene, single)
        scene = sv.VertexAnnotator(color=colours[k], radius=radius).annotate(scene, single)
    if show_labels and labels is not None:
        scene = draw_labels(scene, points, labels, colours, radius + max(1, round(s)), s)
    return scene


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 pixels


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _covers(box: Box, point: tuple[float, float], margin: float) -> bool:
    return box[0] - margin < point[0] < box[2] + margin and box[1] - margin < point[1] < box[3] + margin


def place_labels(points: Sequence[tuple[float, float] | None], sizes: Sequence[Sequence[tuple[float, float]]],
                 image_size: tuple[int, int], gap: float) -> list[tuple[int, Box] | None]:
    """Where each point's label goes: (which of its candidate texts, box) or None (left to the table).

    `sizes[k]`: (width, height) of point k's candidate texts, longest first (e.g. '3 left ear', then '3').
    A label sits beside its point, `gap` pixels off (8 positions, right first), and is placed only where it
    stays inside the image, covers no shown point (its own included) and overlaps no label placed before."""
    width, height = image_size
    shown = [p for p in points if p is not None]
    placed: list[Box] = []
    out: list[tuple[int, Box] | None] = []
    for point, options in zip(points, sizes):
        choice = None
        if point is not None:
            x, y = point
            for option, (w, h) in enumerate(options):
                for dx, dy in ((1, 0), (-1, 0), (0, -1), (0, 1), (1, -1), (-1, -1), (1, 1), (-1, 1)):
                    left = x + gap if dx > 0 else x - gap - w if dx < 0 else x - w / 2
                    top = y + gap if dy > 0 else y - gap - h if dy < 0 else y - h / 2
                    box = (left, top, left + w, top + h)
                    if (box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
                            and not any(_covers(box, q, gap / 2) for q in shown)
                            and not any(_overlaps(box, b) for b in placed)):
                        choice = (option, box)
                        break
                if choice is not None:
                    break
        if choice is not None:
            placed.append(choice[1])
        out.append(choice)
    return out


def draw_labels(scene: np.ndarray, points: Sequence[tuple[float, float] | None], labels: Sequence[str],
                colours: Sequence[sv.Color], gap: float, s: float) -> np.ndarray:
    """Each shown point's label ('3 left ear'; its number alone where the name does not fit; nothing where
    neither fits) in a box of the point's colour, placed by `place_labels`: readable at any point count."""
    image = Image.fromarray(np.ascontiguousarray(scene[..., ::-1]))  # BGR scene -> RGB for PIL
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(max(9, round(13 * s)))
    pad = max(2, round(2 * s))
    texts = [[label, label.split(" ", 1)[0]] if " " in label else [label] for label in labels]

    def size(text: str) -> tuple[float, float]:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        return right - left + 2 * pad, bottom - top + 2 * pad

    places = place_labels(points, [[size(t) for t in options] for options in texts], image.size, gap)
    for k, place in enumerate(places):
        if place is None:
            continue
        option, (x1, y1, x2, y2) = place
        colour = colours[k]
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour.as_rgb(), outline=(0, 0, 0))
        text = texts[k][option]
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((x1 + pad - left, y1 + pad - top), text, font=font, fill=text_colour(colour).as_rgb())
    return np.asarray(image)[..., ::-1].copy()


def annotate(image: Image.Image, points: Sequence[tuple[float, float] | None] = (), labels: Sequence[str] | None = None,
             skeleton: Iterable[tuple[int, int]] = (), boxes_xyxy: Sequence[Sequence[float]] = (),
             box_labels: Sequence[str] | None = None, show_labels: bool = True, min_side: int = 512) -> Image.Image:
    """A copy of `image` (any mode) with boxes, then skeleton + keypoints + labels, as an RGB PIL image.

    Images whose short side is under `min_side` are enlarged first (coordinates scaled with them), so
    that labels on a small image stay readable; coordinates in exports are never scaled."""
    image = image.convert("RGB")
    factor = max(1.0, min_side / max(min(image.size), 1))
    if factor > 1.0:
        image = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
        points = [None if p is None else (p[0] * factor, p[1] * factor) for p in points]
        boxes_xyxy = [[v * factor for v in b] for b in boxes_xyxy]
    scene = as_rgb_array(image)[..., ::-1].copy()  # supervision draws on BGR arrays (OpenCV's order)
    scene = draw_boxes(scene, boxes_xyxy, box_labels)
    scene = draw_keypoints(scene, list(points), labels, skeleton, show_labels)
    return Image.fromarray(np.ascontiguousarray(scene[..., ::-1]))
