"""Turning whatever the user gives into an 8-bit RGB PIL image, and the square crop around an object.

Coordinate frame: continuous pixel coordinates of the original image (after EXIF orientation);
pixel (i, j) covers [i, i+1) x [j, j+1). Boxes are COCO `xywh` in that frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

CONTAINS_TOLERANCE = 1e-9  # relative to the crop side
MAX_IMAGE_PIXELS = 80_000_000  # e.g. 10000 x 8000; larger images are refused before decoding
# a box side may be at most this many times the image's longer side: the crop pads the image by about one
# output pixel of the box's scale, so the work and memory of a crop grow with the box's size
MAX_BOX_TO_IMAGE = 20


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image is {width}x{height} = {width * height} pixels; the limit is {MAX_IMAGE_PIXELS}")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    _check_size(array.shape[1], array.shape[0])
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError("float image arrays must hold finite values in [0, 1]")
        array = (array * 255.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {array.dtype} (use uint8, uint16, bool or float in [0, 1])")
    return Image.fromarray(np.ascontiguousarray(array))  # uint8 HxW -> L, HxWx3 -> RGB, HxWx4 -> RGBA


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Alpha is composited over white; 16/32-bit and float modes are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image).astype(np.float64)
        scale = 257.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(array / scale, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "F":
        array = np.asarray(image).astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError("float image contains NaN or infinity")
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source) -> Image.Image:
    """Path, PIL image or numpy array -> RGB PIL image with EXIF orientation applied.

    Raises ValueError (never a decoder traceback) for missing or unreadable files, bad arrays and
    images over MAX_IMAGE_PIXELS (checked from the header, before decoding).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        try:
            with Image.open(path) as opened:
                _check_size(*opened.size)
                image = ImageOps.exif_transpose(opened)  # decodes; returns a rotated copy
        except ValueError:
            raise
        except (OSError, Image.DecompressionBombError, SyntaxError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from None
        return to_rgb(image)
    if isinstance(source, Image.Image):
        _check_size(*source.size)
        try:
            return to_rgb(ImageOps.exif_transpose(source))
        except OSError as err:  # truncated / lazily loaded files fail here
            raise ValueError(f"cannot read image: {err}") from None
    if isinstance(source, np.ndarray):
        return to_rgb(_from_array(source))
    raise ValueError(f"unsupported image type {type(source).__name__} (use a path, PIL image or numpy array)")


@dataclass(frozen=True)
class SquareCrop:
    """The model's input crop: a square `[x0, x0+side) x [y0, y0+side)` of the original image, resized to `size`.

    `to_crop` maps original pixels to the normalised crop frame ([0, 1] inside the crop) and `to_image`
    is its exact inverse.
    """

    x0: float
    y0: float
    side: float
    size: int

    def to_crop(self, xy) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.array([self.x0, self.y0])) / self.side

    def to_image(self, uv) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        return uv * self.side + np.array([self.x0, self.y0])

    def contains(self, xy) -> bool:
        """Whether `xy` lies in the crop, edges included (with a 1e-9 tolerance relative to the side, so a
        point mapped from the crop edge and back still counts as inside)."""
        uv = self.to_crop(xy)
        return bool(np.all((uv >= -CONTAINS_TOLERANCE) & (uv <= 1 + CONTAINS_TOLERANCE)))


def validate_bbox(bbox, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Check a COCO `xywh` box: 4 finite numbers, positive size, overlapping the image (it may stick out),
    no side over `MAX_BOX_TO_IMAGE` times the image's longer side."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"bbox must be 4 numbers x, y, w, h; got {bbox!r}") from None
    if not all(np.isfinite([x, y, w, h])):
        raise ValueError(f"bbox has non-finite values: {bbox!r}")
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox width and height must be positive; got w={w}, h={h}")
    width, height = image_size
    if max(w, h) > MAX_BOX_TO_IMAGE * max(width, height):
        raise ValueError(f"bbox {w:g} x {h:g} is more than {MAX_BOX_TO_IMAGE} times the {width}x{height} image; "
                         "give a box around the object")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"bbox {bbox!r} does not overlap the {width}x{height} image")
    return x, y, w, h


def square_crop(image_size: tuple[int, int], bbox, size: int, padding: float) -> SquareCrop:
    """The square around `bbox` (whole image if None), side = padding * max(w, h), centred on the box."""
    width, height = image_size
    x, y, w, h = (0.0, 0.0, float(width), float(height)) if bbox is None else validate_bbox(bbox, image_size)
    scale = 1.0 if bbox is None else padding  # the whole image is shown as is, padded to a square
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2
    return SquareCrop(x0=cx - side / 2, y0=cy - side / 2, side=side, size=size)


def crop_image(image: Image.Image, crop: SquareCrop, fill=(0, 0, 0), resample: str = "bicubic") -> Image.Image:
    """Resample the crop region to `crop.size` x `crop.size` ("bicubic" or "bilinear"); outside the image: `fill`.

    Output pixel (u, v) covers `[x0 + u*s, x0 + (u+1)*s)` x `[y0 + v*s, y0 + (v+1)*s)` with `s = side / size`,
    in the frame where input pixel (i, j) covers [i, i+1) x [j, j+1). Enlarging uses a bicubic affine
    transform; shrinking uses `Image.resize` with the same geometry (its bicubic filter is widened by
    the scale, so fine detail is averaged instead of aliased). For that, the image is padded with
    `fill` by a margin wider than one output pixel, and the output pixels inside the padded image are
    resized in one piece; the rest stay `fill`.
    """
    size, scale = crop.size, crop.side / crop.size
    if scale <= 1.0:
        box = (crop.x0, crop.y0, crop.x0 + crop.side, crop.y0 + crop.side)
        return image.transform((size, size), Image.Transform.EXTENT, data=box,
                               resample=Image.Resampling[resample.upper()], fillcolor=fill)
    width, height = image.size
    margin = math.ceil(scale) + 2
    left, top = max(math.floor(crop.x0) - 1, -margin), max(math.floor(crop.y0) - 1, -margin)
    right = min(math.ceil(crop.x0 + crop.side) + 1, width + margin)
    bottom = min(math.ceil(crop.y0 + crop.side) + 1, height + margin)
    out = Image.new("RGB", (size, size), fill)
    if right <= left or bottom <= top:
        return out
    canvas = Image.new("RGB", (right - left, bottom - top), fill)
    canvas.paste(image, (-left, -top))
    # the output pixels that lie wholly on the canvas
    u0 = min(max(math.ceil((left - crop.x0) / scale - 1e-9), 0), size)
    u1 = min(max(math.floor((right - crop.x0) / scale + 1e-9), 0), size)
    v0 = min(max(math.ceil((top - crop.y0) / scale - 1e-9), 0), size)
    v1 = min(max(math.floor((bottom - crop.y0) / scale + 1e-9), 0), size)
    if u1 <= u0 or v1 <= v0:
        return out
    clamp = lambda value, limit: min(max(value, 0.0), float(limit))  # noqa: E731  (rounding only)
    box = (clamp(crop.x0 + u0 * scale - left, canvas.width), clamp(crop.y0 + v0 * scale - top, canvas.height),
           clamp(crop.x0 + u1 * scale - left, canvas.width), clamp(crop.y0 + v1 * scale - top, canvas.height))
    out.paste(canvas.resize((u1 - u0, v1 - v0), Image.Resampling[resample.upper()], box=box), (u0, v0))
    return out
