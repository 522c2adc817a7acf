"""Boxes a person draws by clicking two opposite corners on the image itself (typed boxes stay for scripts).

The first click marks a corner; the second closes the box, fills the box field ('x, y, w, h' in pixels of the
original image) and draws it on the image (a marked copy, `demo.shown`: the model gets the original). Where
boxes are a list (In the wild), each box adds a line. A typed box is drawn when the field is left.

Why clicks and not a drag: gradio-image-annotation (the maintained box component, 0.5.6, for Gradio >= 6.14)
decodes every upload in full before any handler runs (our size limit is checked from the header) and has no
click events, so a tab that needs both a point and a box would need two images of the same picture.
"""

from __future__ import annotations

import gradio as gr

from .inputs import load_image, parse_box, refuse
from .shown import marked_copy, original_of

MIN_BOX_SIDE = 2.0  # pixels: a second click closer than this to the first starts over


def _format(box) -> str:
    return ",".join(f"{round(v, 1):g}" for v in box)


def _lines(text) -> list[str]:
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def _boxes(lines) -> list[tuple[float, float, float, float]]:
    return [parse_box(line, None, "box") for line in lines]


def _drawn(value, boxes, corner=None, name: str = "boxes.png"):
    """The slot's image with `boxes` (xywh) and an optional pending `corner` drawn; the original when nothing."""
    original = original_of(value)
    if not boxes and corner is None:
        return original
    image = load_image(original)
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in boxes]
    points = [tuple(corner)] if corner is not None else []
    return marked_copy(original, image, name, points, ["corner"] if points else None, xyxy)


def corner_click(value, box_text, corner, evt: gr.SelectData, many: int = 1, name: str = "boxes.png"):
    """A click on the image at `evt.index` (pixels): -> (box field, pending corner, image shown).

    `many`: how many boxes the field holds (1: a new box replaces the old; n > 1: boxes are lines, at most n)."""
    if value is None:
        raise refuse("Upload an image first, then click two opposite corners of the object.")
    x, y = (float(v) for v in evt.index[:2])
    lines = _lines(box_text)
    if corner is None:
        kept = lines if many > 1 else []
        return gr.skip(), [x, y], _drawn(value, _boxes(kept), (x, y), name)
    (x0, y0) = corner
    box = (min(x0, x), min(y0, y), abs(x - x0), abs(y - y0))
    if box[2] < MIN_BOX_SIDE or box[3] < MIN_BOX_SIDE:  # a double click: that is the new first corner
        return gr.skip(), [x, y], _drawn(value, [], (x, y), name)
    lines = (lines + [_format(box)])[-many:] if many > 1 else [_format(box)]
    return "\n".join(lines), None, _drawn(value, _boxes(lines), None, name)


def show_typed(value, box_text, name: str = "boxes.png"):
    """The image with the typed box(es) drawn (on leaving the field); unchanged while the text is not boxes."""
    if value is None:
        return gr.skip(), None
    try:
        boxes = _boxes(_lines(box_text))
    except gr.Error:
        return gr.skip(), None
    return _drawn(value, boxes, None, name), None


def wire(image, box_field, many: int = 1, name: str = "boxes.png", clicks: bool = True):
    """Clicks on `image` draw boxes into `box_field` (`clicks=False`: the tab handles clicks itself, with
    `corner_click` when they are meant for the box); typed boxes are drawn when the field is left; a new
    upload starts without a box. Returns the pending-corner state."""
    corner = gr.State(None)

    def click(value, box_text, pending, evt: gr.SelectData):
        return corner_click(value, box_text, pending, evt, many=many, name=name)

    if clicks:
        image.select(click, [image, box_field, corner], [box_field, corner, image], queue=False,
                     api_visibility="private")
    box_field.blur(lambda value, text: show_typed(value, text, name), [image, box_field], [image, corner],
                   queue=False, api_visibility="private")
    image.upload(lambda: ("", None), None, [box_field, corner], queue=False, api_visibility="private")
    return corner
