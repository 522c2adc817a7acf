"""Input checks and normalisation shared by the tabs. Every problem becomes a `gr.Error` with a plain message.

Messages are shown as text (HTML-escaped: Gradio renders an error's HTML) and logged as one line, never as a
traceback: a user's mistake is not the server's problem. Image files reach the handlers as paths
(`ImageInput`), so that their size is checked from the header before anything decodes them.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import re
import tempfile
from pathlib import Path
from typing import Sequence

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

from kptllm.image import validate_bbox
from kptllm.image import load_image as library_load_image
from kptllm.protocols.protocol import MAX_TEXT_CHARS

from .shown import original_of

MAX_PIXELS = 40_000_000  # an 8000 x 5000 photo
MIN_SIDE = 8
MAX_TEXT = MAX_TEXT_CHARS  # characters per keypoint name / description (the library's limit)
MAX_QUERY_TEXT = 2000  # characters of one text field
MAX_KEYPOINTS = 50  # per request (the predictor allows 100; the demo keeps requests short)
MAX_SUPPORTS = 5
# Every input image is shown fitted to a frame of this height (small drawings enlarged, photos reduced: see
# INPUT_CSS); the page script (`demo.clickbox`) maps clicks and drags on it to the original's pixels.
INPUT_HEIGHT = 460
INPUT_CLASS = "kptllm-input"

Image.MAX_IMAGE_PIXELS = MAX_PIXELS * 2  # larger files are refused by PIL before decoding

BOX_LABEL = "Object box x, y, width, height in pixels (empty: the whole image; the model is made for one object per box)"

log = logging.getLogger("kptllm.demo")


def refuse(message: str) -> gr.Error:
    """The error for a request the demo cannot take: `message` shown as plain text (whatever the user typed
    into it is never rendered as HTML) and logged as one line, without a traceback."""
    log.info("refused: %s", message)
    return gr.Error(html.escape(message, quote=False), print_exception=False)


def model_error(exc: Exception) -> gr.Error:
    """A predictor ValueError (bad point, crop, count...) as a message for the user."""
    return refuse(f"The model could not take this request: {exc}")


class ImageInput(gr.Image):
    """`gr.Image` (same component in the page) whose handler receives the uploaded file's path, unopened.

    Gradio's own preprocessing opens every upload (and decodes it for `type="pil"`): a text file renamed
    `.jpg` then fails inside Gradio with its internals and server paths in the message, and a 12000 x 12000
    PNG is decoded in full before any limit is checked. Here `load_image` reads the header first and refuses
    with one plain sentence."""

    is_template = True  # served by the frontend's Image component

    def __init__(self, **kwargs):
        kwargs.setdefault("height", INPUT_HEIGHT)
        classes = kwargs.pop("elem_classes", None) or []
        classes = [classes] if isinstance(classes, str) else list(classes)
        super().__init__(type="filepath", image_mode=None, elem_classes=[*classes, INPUT_CLASS], **kwargs)

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Image)  # the frontend's props are gr.Image's parameters

    def preprocess(self, payload) -> str | None:
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):  # an API client's inline image: its bytes, undecoded
            try:
                data = base64.b64decode(payload.url.split(",", 1)[1], validate=False)
            except (IndexError, binascii.Error):
                raise refuse("The image could not be read: it is not valid base64 image data.") from None
            with tempfile.NamedTemporaryFile(dir=self.GRADIO_CACHE, suffix=".img", delete=False) as file:
                file.write(data)
            return file.name
        if payload.path is None:
            raise refuse("The image could not be read: no file was received.")
        return str(payload.path)


def load_image(value, what: str = "image") -> Image.Image:
    """A PIL RGB 8-bit image, upright (EXIF), from a path, PIL image or numpy array; gr.Error when unusable.

    The library's conversion (`kptllm.image.load_image`: alpha over white, 16-bit / 257, float in [0, 1]),
    so the demo shows the model what the API would; plus the demo's own size limits, checked from the file's
    header before it is decoded."""
    if value is None:
        raise refuse(f"Please upload the {what}.")
    value = original_of(value)  # a slot showing marks holds a marked copy: the model gets the original
    try:
        width, height = _size_of(value)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError):
        raise refuse(f"The {what} is not an image file this demo can read (PNG, JPEG, WebP, BMP, TIFF or GIF).") from None
    except Image.DecompressionBombError:
        raise refuse(f"The {what} is far larger than the limit of {MAX_PIXELS // 1_000_000} megapixels.") from None
    if width * height > MAX_PIXELS:
        raise refuse(f"The {what} has {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels.")
    try:
        image = library_load_image(value)
    except Exception:  # noqa: BLE001 - a header that reads but a body that does not: the user's file
        raise refuse(f"The {what} could not be decoded: the file is damaged or not a supported image.") from None
    if min(image.size) < MIN_SIDE:
        raise refuse(f"The {what} is {image.width}x{image.height} pixels; it needs at least {MIN_SIDE} on each side.")
    return image


def image_name(value, default: str = "image.png") -> str:
    """The file name the user gave the image (Gradio keeps it in the cached path's last part), for exports."""
    value = original_of(value)
    if isinstance(value, (str, Path)) and Path(value).suffix.lower() != ".img":
        return Path(value).name
    return default


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
        raise refuse(f"The {what} must be four numbers x, y, width, height in pixels; got {text!r}.")
    x, y, w, h = (float(n) for n in numbers)
    if w <= 0 or h <= 0:
        raise refuse(f"The {what} needs a positive width and height; got {text!r}.")
    if image is not None and (x >= image.width or y >= image.height or x + w <= 0 or y + h <= 0):
        raise refuse(f"The {what} {text!r} lies outside the {image.width}x{image.height} image.")
    if image is not None:  # the library's own limits (finite, not over MAX_BOX_TO_IMAGE x the image)
        try:
            validate_bbox((x, y, w, h), image.size)
        except ValueError as err:
            raise refuse(f"The {what} {text!r}: {err}.") from None
    return x, y, w, h


def parse_names(text: str | None) -> list[str]:
    """Keypoint names/descriptions, one per line (or comma-separated on one line)."""
    if text is None:
        text = ""
    if len(text) > MAX_QUERY_TEXT:
        raise refuse(f"The keypoint list has {len(text)} characters; the limit is {MAX_QUERY_TEXT}.")
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) == 1 and "," in lines[0]:
        lines = [part.strip() for part in lines[0].split(",") if part.strip()]
    if not lines:
        raise refuse("Type at least one keypoint name or description (one per line), or pick a preset.")
    check_count(len(lines))
    for name in lines:
        if len(name) > MAX_TEXT:
            raise refuse(f"A keypoint name/description is {len(name)} characters long; the limit is {MAX_TEXT}.")
    return lines


def check_count(count: int) -> None:
    if count > MAX_KEYPOINTS:
        raise refuse(f"{count} keypoints requested; the demo allows {MAX_KEYPOINTS} per request.")


def check_point(x: float, y: float, image: Image.Image, what: str = "point") -> tuple[float, float]:
    if not (np.isfinite(x) and np.isfinite(y)):
        raise refuse(f"The {what} has no valid coordinates.")
    if not (0 <= x <= image.width and 0 <= y <= image.height):
        raise refuse(f"The {what} ({x:g}, {y:g}) is outside the {image.width}x{image.height} image.")
    return float(x), float(y)


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]
