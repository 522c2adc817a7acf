"""Input checks and normalisation shared by the tabs. Every problem becomes a `gr.Error` with a plain message."""

from __future__ import annotations

import re
from typing import Sequence

import gradio as gr
import numpy as np
from PIL import Image

from kptllm.image import validate_bbox
from kptllm.image import load_image as library_load_image
from kptllm.protocol import MAX_TEXT_CHARS

MAX_PIXELS = 40_000_000  # an 8000 x 5000 photo
MIN_SIDE = 8
MAX_TEXT = MAX_TEXT_CHARS  # characters per keypoint name / description (the library's limit)
MAX_QUERY_TEXT = 2000  # characters of one text field
MAX_KEYPOINTS = 50  # per request (the predictor allows 100; the demo keeps requests short)
MAX_SUPPORTS = 5

Image.MAX_IMAGE_PIXELS = MAX_PIXELS * 2  # larger files are refused by PIL before decoding


def load_image(value, what: str = "image") -> Image.Image:
    """A PIL RGB 8-bit image, upright (EXIF), from a PIL image, numpy array or path; gr.Error when unusable.

    The library's conversion (`kptllm.image.load_image`: alpha over white, 16-bit / 257, float in [0, 1]),
    so the demo shows the model what the API would; plus the demo's own size limits."""
    if value is None:
        raise gr.Error(f"Please upload the {what}.")
    try:
        width, height = _size_of(value)
        if width * height > MAX_PIXELS:
            raise gr.Error(f"The {what} has {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels.")
        image = library_load_image(value)
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding problem is the user's file
        raise gr.Error(f"Could not read the {what}: {exc}") from None
    if min(image.size) < MIN_SIDE:
        raise gr.Error(f"The {what} is {image.width}x{image.height} pixels; it needs at least {MIN_SIDE} on each side.")
    return image


def _size_of(value) -> tuple[int, int]:
    """(width, height) without decoding: a path's header, a PIL image's size, an array's shape."""
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        with Image.open(value) as opened:  # closed again, also when the image is refused
            return opened.size
    if isinstance(value, Image.Image):
        return value.size
    if isinstance(value, np.ndarray) and value.ndim >= 2:
        return value.shape[1], value.shape[0]
    raise TypeError(f"unsupported image type {type(value).__name__}")


_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


def parse_box(text: str | None, image: Image.Image | None = None, what: str = "box") -> tuple[float, float, float, float] | None:
    """'x,y,w,h' (COCO pixels) -> tuple; '' -> None. The box must overlap the image."""
    if text is None or not str(text).strip():
        return None
    numbers = re.findall(_NUMBER, str(text))
    if len(numbers) != 4 or re.sub(_NUMBER, "", str(text)).strip(" ,;[]()\t") != "":
        raise gr.Error(f"The {what} must be four numbers x, y, width, height in pixels; got {text!r}.")
    x, y, w, h = (float(n) for n in numbers)
    if w <= 0 or h <= 0:
        raise gr.Error(f"The {what} needs a positive width and height; got {text!r}.")
    if image is not None and (x >= image.width or y >= image.height or x + w <= 0 or y + h <= 0):
        raise gr.Error(f"The {what} {text!r} lies outside the {image.width}x{image.height} image.")
    if image is not None:  # the library's own limits (finite, not over MAX_BOX_TO_IMAGE x the image)
        try:
            validate_bbox((x, y, w, h), image.size)
        except ValueError as err:
            raise gr.Error(f"The {what} {text!r}: {err}.") from None
    return x, y, w, h


def parse_names(text: str | None) -> list[str]:
    """Keypoint names/descriptions, one per line (or comma-separated on one line)."""
    if text is None:
        text = ""
    if len(text) > MAX_QUERY_TEXT:
        raise gr.Error(f"The keypoint list has {len(text)} characters; the limit is {MAX_QUERY_TEXT}.")
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) == 1 and "," in lines[0]:
        lines = [part.strip() for part in lines[0].split(",") if part.strip()]
    if not lines:
        raise gr.Error("Type at least one keypoint name or description (one per line), or pick a preset.")
    check_count(len(lines))
    for name in lines:
        if len(name) > MAX_TEXT:
            raise gr.Error(f"A keypoint name/description is {len(name)} characters long; the limit is {MAX_TEXT}.")
    return lines


def check_count(count: int) -> None:
    if count > MAX_KEYPOINTS:
        raise gr.Error(f"{count} keypoints requested; the demo allows {MAX_KEYPOINTS} per request.")


def check_point(x: float, y: float, image: Image.Image, what: str = "point") -> tuple[float, float]:
    if not (np.isfinite(x) and np.isfinite(y)):
        raise gr.Error(f"The {what} has no valid coordinates.")
    if not (0 <= x <= image.width and 0 <= y <= image.height):
        raise gr.Error(f"The {what} ({x:g}, {y:g}) is outside the {image.width}x{image.height} image.")
    return float(x), float(y)


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def model_error(exc: Exception) -> gr.Error:
    """A predictor ValueError (bad point, crop, count...) as a message for the user."""
    return gr.Error(f"The model could not take this request: {exc}")
