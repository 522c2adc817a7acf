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

Input images are shown fitted to their frame (`INPUT_CSS`: enlarged or reduced, `object-fit: contain`), and
can be zoomed to their box (`zoom_controls`, a CSS transform). Gradio maps a click on an image to pixels
as if it were never enlarged (its scale is capped at 1) and knows nothing of the zoom, so the page script maps
every click on these images itself, from the drawn picture's rectangle on screen, and hands Gradio the
click it needs to report that pixel (`select`'s `evt.index`, rounded to whole pixels as Gradio does).
"""

from __future__ import annotations

import json

import gradio as gr

from .inputs import INPUT_CLASS, load_image, parse_box, refuse
from .shown import marked_copy, original_of

MIN_BOX_SIDE = 2.0  # pixels: a second click closer than this to the first starts over
ZOOM_MARGIN = 0.1  # "Zoom to the box" shows the box and this share of its size around it
MAX_ZOOM = 8.0

# Input images fill their frame (enlarged or reduced, never cropped); the frame clips a zoomed picture.
INPUT_CSS = f"""
.{INPUT_CLASS} .upload-container, .{INPUT_CLASS} .image-frame {{ width: 100% !important; }}
.{INPUT_CLASS} .image-frame {{ overflow: hidden; }}
.{INPUT_CLASS} .image-frame img {{ width: 100% !important; height: 100% !important; max-width: none !important;
  max-height: none !important; object-fit: contain !important; }}
"""


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
    return (DRAG_JS.replace("__CONFIG__", json.dumps(DRAGGABLE)).replace("__ZOOM_MARGIN__", str(ZOOM_MARGIN))
            .replace("__MAX_ZOOM__", str(MAX_ZOOM)))


# Pixels: the image may be letterboxed in its <img> (object-fit: contain), so the drawn content's rectangle is
# computed from natural size. The click that ends a drag is stopped before Gradio sees it (a drag is not a
# click); the field is focused (without scrolling the page to it) and left so that its blur handler draws the
# box, as for a typed box. The pointerdown default (a native image drag) is prevented. A plain click is mapped
# the same way and given to Gradio again at the whole screen pixel (events carry whole pixels) that Gradio's own
# mapping (`scale = min(shown / natural, 1)`, centred, rounded) turns into that pixel.
# No // comments inside: Gradio may join the lines.
DRAG_JS = """() => {
  if (window.__kptllmDragBoxes) return [];
  window.__kptllmDragBoxes = true;
  const config = __CONFIG__, MIN_DRAG = 6, ZOOM_MARGIN = __ZOOM_MARGIN__, MAX_ZOOM = __MAX_ZOOM__;
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
  const toImage = (img, cx, cy, clamp = true) => {
    const r = img.getBoundingClientRect(), s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const left = r.left + (r.width - img.naturalWidth * s) / 2, top = r.top + (r.height - img.naturalHeight * s) / 2;
    const x = (cx - left) / s, y = (cy - top) / s;
    if (clamp) return [Math.min(Math.max(x, 0), img.naturalWidth), Math.min(Math.max(y, 0), img.naturalHeight)];
    return x >= 0 && y >= 0 && x < img.naturalWidth && y < img.naturalHeight ? [x, y] : [null, null];
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
    field.focus({preventScroll: true});
    field.blur();
  }, true);
  const remapped = new WeakSet();
  document.addEventListener("click", (e) => {
    if (remapped.has(e)) return;
    const target = hit(e.target);
    if (!target) return;
    e.stopPropagation();
    e.preventDefault();
    if (swallowClick) { swallowClick = false; return; }
    const img = target.img, r = img.getBoundingClientRect();
    const [x, y] = toImage(img, e.clientX, e.clientY, false);
    if (x === null) return;
    const g = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    const screen = (origin, v, size) => {
      const want = Math.min(Math.round(v), size - 1), lo = Math.ceil(origin + (want - 0.5) * g);
      return lo < origin + (want + 0.5) * g ? lo : Math.round(origin + want * g);
    };
    const again = new MouseEvent("click", {bubbles: true, cancelable: true, composed: true, button: 0,
      clientX: screen(r.left + (r.width - img.naturalWidth * g) / 2, x, img.naturalWidth),
      clientY: screen(r.top + (r.height - img.naturalHeight * g) / 2, y, img.naturalHeight)});
    remapped.add(again);
    e.target.dispatchEvent(again);
  }, true);
  window.__kptllmZoom = (imageId, fieldId, line) => {
    const root = document.getElementById(imageId), img = root && root.querySelector("img");
    let style = document.getElementById("kptllm-zoom-" + imageId);
    if (style) style.remove();
    if (!img || !img.naturalWidth || !fieldId) return;
    const field = document.querySelector(`#${fieldId} textarea, #${fieldId} input`);
    const lines = (field ? field.value : "").split("\\n");
    const numbers = (lines[line ? line - 1 : 0] || "").split(",").map(Number);
    const w = img.offsetWidth, h = img.offsetHeight, s = Math.min(w / img.naturalWidth, h / img.naturalHeight);
    let [bx, by, bw, bh] = numbers.length === 4 && numbers.every(Number.isFinite) && numbers[2] > 0 && numbers[3] > 0
      ? numbers : [img.naturalWidth / 4, img.naturalHeight / 4, img.naturalWidth / 2, img.naturalHeight / 2];
    bx -= bw * ZOOM_MARGIN; by -= bh * ZOOM_MARGIN; bw *= 1 + 2 * ZOOM_MARGIN; bh *= 1 + 2 * ZOOM_MARGIN;
    const zoom = Math.min(Math.max(Math.min(w / (bw * s), h / (bh * s)), 1), MAX_ZOOM);
    const cx = (w - img.naturalWidth * s) / 2 + (bx + bw / 2) * s, cy = (h - img.naturalHeight * s) / 2 + (by + bh / 2) * s;
    style = document.createElement("style");
    style.id = "kptllm-zoom-" + imageId;
    style.textContent = `#${imageId} img { transform-origin: 0 0; transform: translate(${w / 2 - zoom * cx}px, ${h / 2 - zoom * cy}px) scale(${zoom}); }`;
    document.head.appendChild(style);
  };
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


def zoom_controls(image, box_field_id: str, line: int | None = None) -> None:
    """Two small buttons (placed where this is called): "Zoom to the box" enlarges `image` around the box in
    the field with elem_id `box_field_id` (line `line` of it; the centre half of the image when there is no
    box), "Whole image" shows all of it again, as does a new upload. Clicks and drags keep mapping to the
    original's pixels (the page script reads the zoomed picture's rectangle)."""
    with gr.Row():
        zoom = gr.Button("Zoom to the box", size="sm", elem_id=f"{image.elem_id}-zoom")
        whole = gr.Button("Whole image", size="sm", elem_id=f"{image.elem_id}-whole")
    zoom.click(None, js=f"() => {{ window.__kptllmZoom?.({json.dumps(image.elem_id)}, {json.dumps(box_field_id)}, "
                        f"{int(line or 0)}); return []; }}")
    unzoom = f"() => {{ window.__kptllmZoom?.({json.dumps(image.elem_id)}, null, 0); return []; }}"
    whole.click(None, js=unzoom)
    image.upload(None, js=unzoom)
    image.clear(None, js=unzoom)
