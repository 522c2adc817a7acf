"""Tab (b) Visual prompt: mark keypoints on 1-5 support images -> find them (and their semantics) on a query."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from .. import clickbox
from ..boxes import Detectors, as_box, best_of, box_holding
from ..inputs import BOX_LABEL, MAX_SUPPORTS, ImageInput, check_count, check_point, image_name, load_image, parse_box, refuse
from ..model import LoadedModel, run_example
from ..presets import skeleton_for
from ..shown import marked_copy, original_of
from ..views import MIN_SCORE, Outcome, image_buttons, looked_at, present, redraw

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
POINT_COLUMNS = ["support", "keypoint", "x", "y", "name"]
EXAMPLE_KEYPOINTS = 6  # the examples mark the first few keypoints of each category


def empty_points() -> pd.DataFrame:
    return pd.DataFrame(columns=POINT_COLUMNS)


def _rows(points) -> list[dict]:
    if points is None:
        return []
    frame = points if isinstance(points, pd.DataFrame) else pd.DataFrame(points, columns=POINT_COLUMNS[:len(points[0])] if len(points) else POINT_COLUMNS)
    rows = []
    for row in frame.to_dict("records"):
        if all(v is None or v == "" or (isinstance(v, float) and math.isnan(v)) for v in row.values()):
            continue  # blank rows of an edited table
        rows.append(row)
    return rows


def add_point(support: int, points, evt: gr.SelectData):
    """A click on support `support` marks its next keypoint (the n-th click on a support marks keypoint n)."""
    rows = _rows(points)
    count = sum(1 for r in rows if _int(r.get("support"), "support") == support)
    x, y = evt.index[:2]
    rows.append({"support": support, "keypoint": count + 1, "x": float(x), "y": float(y), "name": ""})
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def _adder(support: int):
    def add(points, evt: gr.SelectData):  # gradio injects evt from the annotation
        return add_point(support, points, evt)
    return add


def undo(points):
    rows = _rows(points)[:-1]
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def _int(value, what: str) -> int:
    try:
        number = float(value)
        if not math.isfinite(number) or number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise refuse(f"The points table has a {what} that is not a whole number: {value!r}.") from None


def parse_points(points, images: list) -> tuple[list[int], list[list], list[str] | None, list[int]]:
    """(support slots used, points per used support [None = hidden], names or None, keypoint numbers)."""
    rows = _rows(points)
    if not rows:
        raise refuse("Mark at least one keypoint: click on a support image (or fill the points table).")
    marked: dict[tuple[int, int], tuple[float, float]] = {}
    names: dict[int, str] = {}
    for row in rows:
        support, keypoint = _int(row.get("support"), "support"), _int(row.get("keypoint"), "keypoint number")
        if not 1 <= support <= MAX_SUPPORTS:
            raise refuse(f"Support numbers run from 1 to {MAX_SUPPORTS}; the table has {support}.")
        if keypoint < 1:
            raise refuse(f"Keypoint numbers start at 1; the table has {keypoint}.")
        image = images[support - 1]
        if image is None:
            raise refuse(f"The table has points on support {support}, but support {support} has no image.")
        try:
            x, y = float(row.get("x")), float(row.get("y"))
        except (TypeError, ValueError):
            raise refuse(f"Keypoint {keypoint} of support {support} has no valid x, y.") from None
        marked[(support, keypoint)] = check_point(x, y, image, f"keypoint {keypoint} of support {support}")
        name = str(row.get("name") or "").strip()
        if name and name.lower() != "nan":
            names.setdefault(keypoint, name)
    used = [k + 1 for k, image in enumerate(images) if image is not None]
    for support in used:
        if not any(s == support for s, _ in marked):
            raise refuse(f"Support {support} has an image but no points: click on it to mark keypoints, or remove it.")
    numbers = sorted({k for _, k in marked})
    check_count(len(numbers))
    per_support = [[marked.get((s, k)) for k in numbers] for s in used]
    if names and len(names) != len(numbers):
        raise refuse("Name every keypoint in the table's name column, or none of them.")
    return used, per_support, ([names[k] for k in numbers] if names else None), numbers


def _on_support(row: dict, support: int) -> bool:
    """Whether a points-table row marks support `support` (the table may hold 1 or 1.0)."""
    return str(row.get("support")) in (str(support), f"{support}.0")


def marked_support(original, rows: list[dict], slot: int, box=None) -> str:
    """Support `slot`'s original image with its marked keypoints numbered ('2 nose' where named) and its box
    (xywh) if one is given."""
    image = load_image(original, f"support image {slot}")
    pts, labels = [], []
    for r in rows:
        try:
            pts.append((float(r["x"]), float(r["y"])))
        except (TypeError, ValueError):
            continue
        name = str(r.get("name") or "").strip()
        labels.append(f"{_int(r.get('keypoint'), 'keypoint number')}" + (f" {name}" if name and name != "nan" else ""))
    boxes = [[box[0], box[1], box[0] + box[2], box[1] + box[3]]] if box else []
    return marked_copy(original, image, f"support-{slot}-marked.png", pts, labels, boxes)


def _support_box(support_boxes, slot: int):
    """Support `slot`'s box from the boxes field (line `slot`), None when absent or not yet a valid box."""
    lines = str(support_boxes or "").splitlines()
    if slot > len(lines) or not lines[slot - 1].strip():
        return None
    try:
        return parse_box(lines[slot - 1], None, f"box of support {slot}")
    except gr.Error:
        return None


def show_marks(support_1=None, support_2=None, support_3=None, support_4=None, support_5=None, points=None,
               support_boxes=""):
    """Every support redrawn with its marks and box after the points table or the boxes changed (a click, a
    drag, an edit, undo, clear): slot values, `gr.skip()` where nothing changes."""
    rows = _rows(points)
    out = []
    for k, value in enumerate([support_1, support_2, support_3, support_4, support_5]):
        original = original_of(value)
        mine = [r for r in rows if _on_support(r, k + 1)]
        box = _support_box(support_boxes, k + 1)
        if value is None or (not mine and box is None and original == value):
            out.append(gr.skip())
        else:
            out.append(marked_support(original, mine, k + 1, box) if mine or box else original)
    return out


def _forget(support: int):
    def forget(points):
        """A new image (or none) in support `support`: its old marks were in the old image's pixels."""
        return pd.DataFrame([r for r in _rows(points) if not _on_support(r, support)],
                            columns=POINT_COLUMNS)
    return forget


def find_boxes(detectors: Detectors | None, images: list, used: list[int], per_support: list, boxes: list, query, bbox):
    """Boxes for a request that lacks some: each support without one gets the smallest detected box holding all its
    marked points; the query without one the best box of the supports' category. -> (support boxes, query box,
    note, what was found: {"supports": {slot: box}, "query": box or None})."""
    which = detectors.choose() if detectors is not None else None
    if which is None or (bbox is not None and all(b is not None for b in boxes)):
        return boxes, bbox, "", {}
    by = detectors.describe(which)
    boxes, category, said, found = list(boxes), None, [], {"supports": {}}
    for k, (slot, points) in enumerate(zip(used, per_support)):
        image = images[slot - 1]
        detections = detectors.find(image, None, which)
        marked = [p for p in points if p is not None]
        if boxes[k] is None:
            det = box_holding(detections, marked)
            if det is None:
                said.append(f"no object on support {slot} holds all its marked points (the whole support is used)")
                continue
            boxes[k] = as_box(det)
            found["supports"][slot] = boxes[k]
            said.append(f"support {slot}: the {det.label} ({det.score:.2f}) at {', '.join(f'{v:g}' for v in boxes[k])}")
        else:  # a box the visitor gave: its category is the detection that holds the same points
            det = box_holding(detections, marked)
        category = category or (det.label if det is not None else None)
    if bbox is None:
        det = best_of(detectors.find(query, category, which), None) if category else None
        if det is None:
            what = f"no {category}" if category else "no object (the supports' category is unknown)"
            said.append(f"{what} on the query: the model looked at the whole query image")
        else:
            bbox = found["query"] = as_box(det)
            said.append(f"query: the {det.label} ({det.score:.2f}) at {', '.join(f'{v:g}' for v in bbox)}")
    note = (f"*Boxes found by {by} where none was given — {'; '.join(said)} (x, y, width, height). They are drawn and "
            "written in the box fields, where you can change them.*")
    return boxes, bbox, note, found


def _support_box_lines(text, found: dict) -> str:
    """The support boxes field with the found boxes written into their lines (line n = support n)."""
    lines = str(text or "").splitlines()
    for slot, box in found.items():
        while len(lines) < slot:
            lines.append("")
        lines[slot - 1] = clickbox.format_boxes([box])
    return "\n".join(lines).rstrip("\n")


def detect_visual(loaded: LoadedModel, detectors: Detectors | None, query, support_1, support_2=None, support_3=None,
                  support_4=None, support_5=None, points=None, support_boxes="", query_box="", min_score=MIN_SCORE):
    """Task (b). `query`: the image to find the keypoints in; `support_1` ... `support_5`: example images
    (None where unused); `points`: the marked keypoints, a table support / keypoint / x / y / name (pixels of
    that support; names optional, all or none); `support_boxes`: line n is support n's 'x, y, w, h' (an empty
    or missing line: the detector's smallest box holding its points, else the whole support); `query_box`: the
    query object's box, or empty: the detector's best box of the supports' category, else the whole image;
    `min_score`: results below this confidence are hidden. Returns the result and the boxes used (support
    boxes field, query box field, query image with its box drawn)."""
    source = query
    query = load_image(query, "query image")
    raw = [support_1, support_2, support_3, support_4, support_5]  # load_image reads marked copies as their originals
    images = [None if s is None else load_image(s, f"support image {k + 1}") for k, s in enumerate(raw)]
    if not any(i is not None for i in images):
        raise refuse("Upload at least one support image and click on it to mark keypoints.")
    used, per_support, names, numbers = parse_points(points, images)
    box_lines = [line.strip() for line in str(support_boxes or "").splitlines()]
    boxes = [parse_box(box_lines[s - 1] if s - 1 < len(box_lines) else "", images[s - 1], f"box of support {s}")
             for s in used]
    bbox = parse_box(query_box, query)
    boxes, bbox, note, found = find_boxes(detectors, images, used, per_support, boxes, query, bbox)
    results = run_example(loaded, query, bbox, [images[s - 1] for s in used], per_support, boxes, names)
    for r, n in zip(results, numbers):
        r["number"] = n
        if r.get("query") is None:
            r["query"] = r.get("text") or f"keypoint {n}"
    semantics = names or [r.get("text") or "" for r in results]
    outcome = Outcome("visual", query, [{"bbox": bbox, "results": results}], [r["query"] for r in results],
                      skeleton_for(semantics),
                      {"task": "visual" if names is None else "visual+text", "supports": len(used),
                       "support_points": [[list(p) if p else None for p in pts] for pts in per_support],
                       "support_boxes": boxes, "names": names, "bbox": bbox}, loaded.name, image_name(source),
                      note=note)
    support_text = _support_box_lines(support_boxes, found["supports"]) if found.get("supports") else gr.skip()
    query_text, shown = gr.skip(), gr.skip()
    if found.get("query") is not None:
        query_text = clickbox.format_boxes([bbox])
        shown = clickbox.show_boxes(source, [bbox], "query-box.png")
    return (*present(outcome, float(min_score)), outcome, support_text, query_text, shown)


def examples() -> list[list]:
    supports = json.loads((EXAMPLES / "keypointworld_supports.json").read_text())
    queries = json.loads((EXAMPLES / "keypointworld.json").read_text())
    rows = []
    for file, entry in supports.items():
        query_file, query = next((f, q) for f, q in queries.items() if q["category"] == entry["category"])
        table = [[1, k + 1, x, y, ""] for k, (x, y) in enumerate(entry["keypoints"][:EXAMPLE_KEYPOINTS])]
        rows.append([str(EXAMPLES / query_file), str(EXAMPLES / file), table,
                     ",".join(f"{v:g}" for v in entry["bbox"]), ",".join(f"{v:g}" for v in query["bbox"])])
    return rows


def build(loaded: LoadedModel, detectors: Detectors | None = None) -> None:
    with gr.Row():
        with gr.Column():
            gr.Markdown("**1. Support images** (1-5): click on a support to mark its next keypoint (its number "
                        "appears where you clicked). The n-th click on each support marks keypoint n; give names in "
                        "the table to ask by name too.")
            slots = []
            with gr.Tabs():
                for k in range(MAX_SUPPORTS):
                    with gr.Tab(f"Support {k + 1}", id=f"support-{k + 1}"):
                        slots.append(ImageInput(label=f"Support {k + 1}", elem_id=f"vis-support-{k + 1}"))
                        clickbox.zoom_controls(slots[-1], "vis-support-boxes", line=k + 1)
            points = gr.Dataframe(empty_points(), headers=POINT_COLUMNS, datatype=["number", "number", "number", "number", "str"],
                                  interactive=True, label="Marked points (editable)", elem_id="vis-points")
            with gr.Row():
                undo_btn = gr.Button("Undo last point", size="sm", elem_id="vis-undo")
                clear_btn = gr.Button("Clear points", size="sm", elem_id="vis-clear")
            support_boxes = gr.Textbox("", label="Support boxes: drag on a support to box its object, or type line n = "
                                       "support n's x, y, w, h in pixels (an empty line: the whole support)", lines=2,
                                       elem_id="vis-support-boxes")
        with gr.Column():
            gr.Markdown("**2. Query image**")
            query = ImageInput(label="Query image — click two opposite corners of the object to draw its box",
                               elem_id="vis-query")
            bbox = gr.Textbox("", label=BOX_LABEL, elem_id="vis-bbox")
            run = gr.Button("Find these keypoints", variant="primary", elem_id="vis-run")
            out_image = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="vis-result",
                                 buttons=image_buttons())
            note = gr.Markdown(elem_id="vis-note")
            min_score = gr.Slider(0, 1, value=MIN_SCORE, step=0.01, label="Hide keypoints below this confidence")
            with gr.Row():
                png = gr.DownloadButton("Annotated PNG", elem_id="vis-png")
                js = gr.DownloadButton("Keypoints JSON (COCO)", elem_id="vis-json")
            table = gr.Dataframe(label="Keypoints found", interactive=False, elem_id="vis-table")
    state = gr.State(None)
    for k, slot in enumerate(slots):
        slot.select(_adder(k + 1), points, points, api_name=f"visual_click_{k + 1}", queue=False)
        gr.on([slot.upload, slot.clear], _forget(k + 1), points, points, api_name=f"visual_new_support_{k + 1}",
              queue=False)
    undo_btn.click(undo, points, points, api_name="visual_undo", queue=False)
    clear_btn.click(empty_points, None, points, api_name="visual_clear", queue=False)
    # the marks are drawn on the supports themselves, after every change of the points table
    points.change(show_marks, [*slots, points, support_boxes], slots, api_name="visual_marks", concurrency_id="marks")
    support_boxes.blur(show_marks, [*slots, points, support_boxes], slots, api_visibility="private", concurrency_id="marks")
    for k, slot in enumerate(slots):  # a drag on support n draws its box into line n (clicks still mark keypoints)
        clickbox.allow_drag(slot, support_boxes, line=k + 1)
    run.click(lambda: "", None, note, queue=False, api_visibility="private")  # an error must not leave the last note
    run.click(partial(detect_visual, loaded, detectors), [query, *slots, points, support_boxes, bbox, min_score],
              [out_image, table, png, js, state, support_boxes, bbox, query], api_name="detect_visual",
              concurrency_id="model", show_progress_on=out_image).then(
        looked_at, state, note, queue=False, api_visibility="private").then(
        show_marks, [*slots, points, support_boxes], slots, api_visibility="private", concurrency_id="marks")
    min_score.release(redraw, [state, min_score], [out_image, table, png, js], api_name="visual_redraw")
    clickbox.wire(query, bbox, name="query-box.png")
    gr.Examples(examples(), [query, slots[0], points, support_boxes, bbox],
                label="Examples (support: another drawing of the same category, first keypoints marked)",
                cache_examples=False, outputs=query, run_on_click=True, api_visibility="private",
                fn=lambda value, _support, _points, _boxes, box: clickbox.show_typed(value, box, "query-box.png")[0])
