"""What an image slot shows: the user's image with marks drawn on it (a clicked support keypoint, the corners
and boxes a person clicks), as a copy of the same size that names its original.

The copy is a PNG that carries the original's path, signed with a per-process key, in a text chunk:
`original_of` reads any slot value back to the file the user gave, so handlers and the model never see the
marks, and a PNG that names some other file without the key is taken as the plain image it is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Sequence

from PIL import Image, PngImagePlugin

from .export import request_folder
from .render import annotate

_ORIGIN_KEY = "kptllm-original"
_SECRET = secrets.token_bytes(32)


def _signed(path: str) -> str:
    return f"{path}|{hmac.new(_SECRET, path.encode(), hashlib.sha256).hexdigest()}"


def original_of(value):
    """The image the user gave for slot value `value`: the original behind a marked copy, else `value` itself
    (also when it is not an image at all: `load_image` refuses it then). Only the header is read."""
    if not isinstance(value, (str, Path)):
        return value
    try:
        with Image.open(value) as opened:
            tag = opened.info.get(_ORIGIN_KEY) if opened.format == "PNG" else None
    except Exception:  # noqa: BLE001 - not an image: left to load_image's plain refusal
        return value
    if isinstance(tag, str) and "|" in tag:
        path = tag.rsplit("|", 1)[0]
        if hmac.compare_digest(tag, _signed(path)) and Path(path).is_file():
            return path
    return value


def marked_copy(original, image: Image.Image, name: str, points: Sequence[tuple[float, float]] = (),
                labels: Sequence[str] | None = None, boxes_xyxy: Sequence[Sequence[float]] = ()) -> str:
    """A PNG of `image` (the decoded `original`, same size: a click on it lands in the original's pixels) with
    `points` (labelled) and boxes drawn, saved as `name` in a request folder; it names `original`."""
    info = PngImagePlugin.PngInfo()
    info.add_text(_ORIGIN_KEY, _signed(str(original)))
    path = request_folder() / name
    annotate(image, list(points), labels, (), boxes_xyxy, min_side=0).save(path, format="PNG", pnginfo=info)
    return str(path)
