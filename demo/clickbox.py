"""Boxes a person draws on the image itself: by dragging from corner to corner, or by clicking two opposite
corners (typed boxes stay for scripts and the API).

A drag (`DRAG_JS`, in the page) shows a dashed rectangle while the pointer moves and, on release, writes the
box into the box field ('x, y, w, h' in pixels of the original image) and leaves the field, which draws it on
the image like a typed box. A drag shorter than a few screen pixels is a click, and clicks keep their own
meaning: two clicks make a box in the same way, and where a click means a point (a support's keypoint, a
semantics question) only a drag makes a box. The box is drawn on a marked copy (`demo.shown`): the model gets
the original. Where boxes are a list (In the wild), each box adds a line; a support's box is line n of the
support boxes.

Why our own few lines of page script and not a component: gradio-image-annotation (the maintained box
component, 0.5.6, for Gradio >= 6.14) decodes every upload in full before any handler runs (our size limit is
checked from the header) and has no click events, so a tab that needs both a point and a box would need two
images of the same picture.
"""

from __future__ import annotations

import json

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


def format_boxes(boxes) -> str:
    """xywh boxes as the box field holds them: one 'x,y,w,h' line each."""
    return "\n".join(_format(box) for box in boxes)


def show_boxes(value, boxes, name: str = "boxes.png"):
    """The slot's image with `boxes` (xywh, e.g. found by a detector) drawn: what the visitor can then change."""
    return _drawn(value, list(boxes), None, name)


def show_typed(value, box_text, name: str = "boxes.png"):
    """The image with the typed box(es) drawn (on leaving the field); unchanged while the text is not boxes."""
    if value is None:
        return gr.skip(), None
    try:
        boxes = _boxes(_lines(box_text))
    except gr.Error:
        return gr.skip(), None
    return _drawn(value, boxes, None, name), None


# image elem_id -> (box field elem_id, how a dragged box enters it: "replace", "append:N" or "line:N")
DRAGGABLE: dict[str, tuple[str, str]] = {}


def allow_drag(image, box_field, many: int = 1, line: int | None = None) -> None:
    """Let a drag on `image` write a box into `box_field` (both need an `elem_id`): replacing its box, adding
    a line (`many` > 1, at most `many` lines) or setting line `line`."""
    if not image.elem_id or not box_field.elem_id:
        raise ValueError("drawing boxes by dragging needs elem_id on the image and on its box field")
    DRAGGABLE[image.elem_id] = (box_field.elem_id, f"line:{line}" if line else f"append:{many}" if many > 1 else "replace")


def drag_script() -> str:
    """The page script (`Blocks.load(js=...)`) that turns drags on the registered images into boxes."""
    return DRAG_JS.replace("__CONFIG__", json.dumps(DRAGGABLE))


# Pixels: the image may be letterboxed in its <img> (object-fit: contain), so the drawn content's rectangle is
# computed from natural size. The click that ends a drag is stopped before Gradio sees it (a drag is not a
# click); the field is focused and left so that its blur handler draws the box, as for a typed box. The
# pointerdown default (a native image drag) is prevented. No // comments inside: Gradio may join the lines.
DRAG_JS = """() => {
  if (window.__kptllmDragBoxes) return [];
  window.__kptllmDragBoxes = true;
  const config = __CONFIG__, MIN_DRAG = 6;
  let drag = null, swallowClick = false;
  const hit = (target) => {
    const img = target && target.closest ? target.closest("img") : null;
    if (!img || !img.naturalWidth) return null;
    for (const id of Object.keys(config)) {
      const root = document.getElementById(id);
      if (root && root.contains(img)) return {id, img};
    }
    return null;
  };
  const toImage = (img, cx, cy) => {
    const r = img.getBoundingClientRect(), s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const left = r.left + (r.width - img.naturalWidth * s) / 2, top = r.top + (r.height - img.naturalHeight * s) / 2;
    return [Math.min(Math.max((cx - left) / s, 0), img.naturalWidth), Math.min(Math.max((cy - top) / s, 0), img.naturalHeight)];
  };
  document.addEventListener("pointerdown", (e) => {
    const target = e.button === 0 ? hit(e.target) : null;
    if (!target) return;
    drag = {...target, x: e.clientX, y: e.clientY, band: null};
    e.preventDefault();
  }, true);
  document.addEventListener("dragstart", (e) => { if (drag) e.preventDefault(); }, true);
  document.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.band && Math.hypot(dx, dy) < MIN_DRAG) return;
    if (!drag.band) {
      drag.band = document.createElement("div");
      drag.band.className = "kptllm-drag-band";
      drag.band.style.cssText = "position:fixed;border:2px dashed #ff6d00;background:rgba(255,109,0,.12);pointer-events:none;z-index:10000";
      document.body.appendChild(drag.band);
    }
    Object.assign(drag.band.style, {left: Math.min(e.clientX, drag.x) + "px", top: Math.min(e.clientY, drag.y) + "px",
                                    width: Math.abs(dx) + "px", height: Math.abs(dy) + "px"});
  }, true);
  document.addEventListener("pointerup", (e) => {
    const done = drag;
    drag = null;
    if (!done || !done.band) return;
    done.band.remove();
    swallowClick = true;
    setTimeout(() => { swallowClick = false; }, 400);
    const [x0, y0] = toImage(done.img, done.x, done.y), [x1, y1] = toImage(done.img, e.clientX, e.clientY);
    const box = [Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0)].map((v) => Math.round(v * 10) / 10).join(",");
    const [fieldId, mode] = config[done.id];
    const field = document.querySelector(`#${fieldId} textarea, #${fieldId} input`);
    if (!field) return;
    let value = box;
    if (mode.startsWith("append:")) {
      const lines = field.value.split("\\n").filter((l) => l.trim());
      value = [...lines, box].slice(-Number(mode.slice(7))).join("\\n");
    } else if (mode.startsWith("line:")) {
      const n = Number(mode.slice(5)), lines = field.value.split("\\n");
      while (lines.length < n) lines.push("");
      lines[n - 1] = box;
      value = lines.join("\\n").replace(/\\n+$/, "");
    }
    field.value = value;
    field.dispatchEvent(new Event("input", {bubbles: true}));
    field.focus();
    field.blur();
  }, true);
  document.addEventListener("click", (e) => {
    if (swallowClick && hit(e.target)) { e.stopPropagation(); e.preventDefault(); swallowClick = false; }
  }, true);
  return [];
}"""


def wire(image, box_field, many: int = 1, name: str = "boxes.png", clicks: bool = True):
    """Drags on `image` (and clicks: `clicks=False` when the tab handles clicks itself, with `corner_click`
    when they are meant for the box) draw boxes into `box_field`; typed boxes are drawn when the field is
    left; a new upload starts without a box. Returns the pending-corner state."""
    corner = gr.State(None)
    allow_drag(image, box_field, many)

    def click(value, box_text, pending, evt: gr.SelectData):
        return corner_click(value, box_text, pending, evt, many=many, name=name)

    if clicks:
        image.select(click, [image, box_field, corner], [box_field, corner, image], queue=False,
                     api_visibility="private")
    box_field.blur(lambda value, text: show_typed(value, text, name), [image, box_field], [image, corner],
                   queue=False, api_visibility="private")
    image.upload(lambda: ("", None), None, [box_field, corner], queue=False, api_visibility="private")
    return corner
