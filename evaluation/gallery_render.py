"""Drawing gallery entries (`evaluation.gallery`): one tile per query object, two side by side for a pair of
records, a captioned PNG grid plus its JSON for sharing.

A tile is the object's box grown by 25 % (the context the model sees), scaled to `size` px. Ground truth: a
white ring. Located answers: a dot joined to the ring by a line, green when within PCK@0.2, red when not
(the line is the error). Named answers (semantic): a dot on the keypoint, green or red, a wrong answer
written beside it. Keypoints the metric does not count are not drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .gallery import Entry, Gallery, Support

GOOD = (46, 204, 113)
BAD = (231, 76, 60)
TRUTH = (255, 255, 255)
PADDING = 1.25
CAPTION_PX = 34  # room under each grid tile for two caption lines
MAX_GRID_TILES = 120


def _font(size: int):
    return ImageFont.load_default(size)


def _crop(entry: Entry | Support) -> tuple[Image.Image, tuple[float, float, float]]:
    """(the tile's pixels before scaling, (x0, y0) of the crop in the image); a grey square when the image is
    not here."""
    x, y, w, h = entry.box
    side = max(w, h, 1.0) * PADDING
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = cx - side / 2, cy - side / 2
    if entry.image is None:
        return Image.new("RGB", (int(side), int(side)), (90, 90, 90)), (x0, y0, side)
    with Image.open(entry.image) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        return image.crop((round(x0), round(y0), round(x0 + side), round(y0 + side))), (round(x0), round(y0), side)


def _tile(item: Entry | Support, size: int):
    """(tile, canvas, to-tile map) of an entry's or a support's object; the map takes continuous image pixels to
    PIL's drawing coordinates, in which pixel i's centre is i (not i + 0.5). A missing image: a grey tile saying
    so, and no map (None)."""
    crop, (x0, y0, _) = _crop(item)
    scale = size / max(crop.width, crop.height)
    tile = crop.resize((size, size), Image.Resampling.BILINEAR) if crop.size != (size, size) else crop
    canvas = ImageDraw.Draw(tile)
    if item.image is None:
        canvas.text((6, 6), f"image not here:\n{item.image_name}", fill=(255, 255, 255), font=_font(12))
        return tile, canvas, None
    return tile, canvas, lambda point: ((point[0] - x0) * scale - 0.5, (point[1] - y0) * scale - 0.5)


def draw(entry: Entry, size: int = 256, keypoint: str | None = None) -> Image.Image:
    """One entry as a `size` x `size` RGB tile (`keypoint`: draw that keypoint only)."""
    tile, canvas, at = _tile(entry, size)
    if at is None:
        return tile
    radius = max(3, size // 64)
    only = entry.index(keypoint) if keypoint else None

    for k in range(len(entry.names)):
        if not entry.counted[k] or (keypoint and k != only):
            continue
        colour = GOOD if entry.correct[k] else BAD
        tx, ty = at(entry.truth[k])
        if entry.predicted is not None and not np.isnan(entry.predicted[k]).any():
            px, py = at(entry.predicted[k])
            canvas.line((tx, ty, px, py), fill=colour, width=2)
            canvas.ellipse((px - radius, py - radius, px + radius, py + radius), fill=colour, outline=(0, 0, 0))
        canvas.ellipse((tx - radius - 1, ty - radius - 1, tx + radius + 1, ty + radius + 1), outline=TRUTH, width=2)
        if entry.answers is not None:
            canvas.ellipse((tx - radius, ty - radius, tx + radius, ty + radius), fill=colour, outline=(0, 0, 0))
            if not entry.correct[k]:
                said = entry.answers[k] or "(no answer)"
                canvas.text((tx + radius + 2, ty - 6), said, fill=BAD, font=_font(max(10, size // 24)),
                            stroke_width=2, stroke_fill=(0, 0, 0))
    return tile


MARK = (255, 214, 0)


def draw_support(support: Support, size: int = 256, names: list[str] | None = None, keypoint: str | None = None) -> Image.Image:
    """A support object with its marked keypoints (yellow, numbered 1..K as in the query's keypoint list)."""
    tile, canvas, at = _tile(support, size)
    if at is None:
        return tile
    radius, font = max(3, size // 64), _font(max(10, size // 28))
    for k, (x, y) in enumerate(support.points):
        if not support.marked[k] or (keypoint and names and names[k] != keypoint):
            continue
        cx, cy = at((x, y))
        canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=MARK, outline=(0, 0, 0))
        canvas.text((cx + radius + 1, cy - radius - 2), str(k + 1), fill=MARK, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return tile


def caption(entry: Entry, gallery: Gallery, keypoint: str | None = None) -> str:
    """e.g. "person · PCK@0.2 0.59 (10/17) · kw_424242_000012.jpg"."""
    counted, right = int(entry.counted.sum()), int(entry.correct[entry.counted].sum())
    text = f"{entry.category} · {gallery.metric} {entry.score:.2f} ({right}/{counted})"
    k = entry.index(keypoint) if keypoint else None
    if k is not None:
        text += f" · {keypoint}: " + (f"error {entry.error[k]:.3f}" if entry.error is not None else
                                      f"'{entry.answers[k]}'")
    return f"{text} · {entry.image_name}"


def pair(a: Image.Image, b: Image.Image, labels=("A", "B")) -> Image.Image:
    """Two tiles side by side, each with its letter in the corner."""
    out = Image.new("RGB", (a.width + b.width + 4, max(a.height, b.height)), (255, 255, 255))
    out.paste(a, (0, 0))
    out.paste(b, (a.width + 4, 0))
    canvas = ImageDraw.Draw(out)
    for x, label in ((4, labels[0]), (a.width + 8, labels[1])):
        canvas.text((x, 2), label, fill=(255, 255, 255), font=_font(14), stroke_width=2, stroke_fill=(0, 0, 0))
    return out


def stack(tiles: list[Image.Image]) -> Image.Image:
    """Tiles one above the other (a unit's supports)."""
    out = Image.new("RGB", (max(t.width for t in tiles), sum(t.height for t in tiles) + 4 * (len(tiles) - 1)),
                    (255, 255, 255))
    y = 0
    for tile in tiles:
        out.paste(tile, (0, y))
        y += tile.height + 4
    return out


def grid(tiles: list[Image.Image], captions: list[str], columns: int = 6) -> Image.Image:
    """Tiles in rows of `columns`, each with its caption (two lines at most) underneath."""
    if not tiles:
        raise ValueError("nothing to put in a grid")
    if len(tiles) > MAX_GRID_TILES:
        raise ValueError(f"at most {MAX_GRID_TILES} tiles in one grid, got {len(tiles)}")
    columns = max(1, min(columns, len(tiles)))
    width, height = max(t.width for t in tiles), max(t.height for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    out = Image.new("RGB", (columns * (width + 6) + 6, rows * (height + CAPTION_PX + 6) + 6), (255, 255, 255))
    canvas = ImageDraw.Draw(out)
    font = _font(11)
    for i, (tile, text) in enumerate(zip(tiles, captions)):
        x, y = 6 + (i % columns) * (width + 6), 6 + (i // columns) * (height + CAPTION_PX + 6)
        out.paste(tile, (x, y))
        canvas.multiline_text((x, y + height + 3), _wrap(canvas, text, font, width), fill=(20, 20, 20), font=font)
    return out


def _wrap(canvas: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """At most two lines of `text` that fit in `width` px (split at ' · ', the rest cut with '…')."""
    lines, current = [], ""
    for part in text.split(" · "):
        candidate = f"{current} · {part}" if current else part
        if canvas.textlength(candidate, font=font) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = part
    lines.append(current)
    if len(lines) > 2:
        lines = [lines[0], " · ".join(lines[1:])]
    while canvas.textlength(lines[-1], font=font) > width and len(lines[-1]) > 1:
        lines[-1] = lines[-1][:-2] + "…"
    return "\n".join(lines)


def tiles_of(pairs, gallery: Gallery, against: Gallery | None = None, size: int = 256,
             keypoint: str | None = None) -> list[tuple[Image.Image, str]]:
    """(tile, caption) per selected pair; a pair of records gives one side-by-side tile per unit."""
    out = []
    for a, b in pairs:
        if b is None:
            out.append((draw(a, size, keypoint), caption(a, gallery, keypoint)))
        else:
            text = (f"{a.category} · A {a.score:.2f} · B {b.score:.2f} · B - A {b.score - a.score:+.2f} · "
                    f"{a.image_name}" + ("" if b.image_name == a.image_name else f" / {b.image_name}"))
            out.append((pair(draw(a, size, keypoint), draw(b, size, keypoint)), text))
    return out


def export(pairs, gallery: Gallery, out_png, against: Gallery | None = None, size: int = 256, columns: int = 6,
           keypoint: str | None = None, selection: dict | None = None) -> tuple[Path, Path]:
    """Write the selected entries as one PNG grid and a JSON of the same entries beside it (`<name>.json`).

    The JSON names the record(s), the metric, the selection (order, filters) and per entry its numbers in the
    query image's pixels (`Entry.as_dict`); entries are in the grid's order."""
    if not pairs:
        raise ValueError("no entries match: nothing to export")
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise ValueError(f"the grid is written as PNG: give a .png path, not {out_png.name}")
    made = tiles_of(pairs, gallery, against, size, keypoint)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    grid([t for t, _ in made], [c for _, c in made], columns if against is None else max(1, columns // 2)).save(out_png)
    info = {"record": _describe(gallery), "metric": gallery.metric, "threshold": 0.2 if gallery.kind == "points" else None,
            "selection": selection or {}, "grid": out_png.name}
    if against is not None:
        info["against"] = _describe(against)
        info["entries"] = [{"a": a.as_dict(), "b": b.as_dict(), "difference": round(b.score - a.score, 4)}
                           for a, b in pairs]
    else:
        info["entries"] = [a.as_dict() for a, _ in pairs]
    out_json = out_png.with_suffix(".json")
    out_json.write_text(json.dumps(info, indent=1))
    return out_png, out_json


def _describe(gallery: Gallery) -> dict:
    record = gallery.record
    return {"name": gallery.name, "folder": gallery.folder.name, "benchmark": record.get("benchmark"),
            "task": record.get("task"), "shots": record.get("shots"), "model": record.get("model"),
            "checkpoint_sha256": record.get("checkpoint_sha256"), "data": record.get("annotations_description")
            or record.get("annotations_label"), "annotations_sha256": record.get("annotations_sha256"),
            "value": record.get("metrics", {}).get(gallery.metric)}
