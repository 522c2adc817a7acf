"""Tab (a) Keypoint semantics: click a point on an image -> what keypoint it is."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import gradio as gr

from kptllm.detection import Detection
from kptllm.image import square_crop

from .. import clickbox
from ..boxes import CLICK_BOX_THRESHOLD, EMBEDDED, MAX_CLICK_BOXES, Detectors, as_box, boxes_holding, found_note
from ..inputs import BOX_LABEL, ImageInput, check_point, image_name, load_image, parse_box, refuse
from ..model import LoadedModel, run_describe
from ..views import Outcome, box_note, escape_markdown, image_buttons, present

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


POINT, BOX = "point", "box"


def clicked(mode, value, box_text, corner, evt: gr.SelectData):
    """A click: the point to ask about (x, y; gradio>=6.19 gives image pixels in evt.index), or in box mode a
    corner of the object's box. -> (x, y, box field, pending corner, image shown)."""
    if mode == BOX:
        box, corner, shown = clickbox.corner_click(value, box_text, corner, evt, name="semantic-box.png")
        return gr.skip(), gr.skip(), box, corner, shown
    x, y = evt.index[:2]
    return float(x), float(y), gr.skip(), gr.skip(), gr.skip()


def boxes_for_click(detectors: Detectors | None, image, point) -> tuple[str | None, list[Detection]]:
    """No box given: (the detector asked, the boxes that hold the click, smallest first, at most
    `MAX_CLICK_BOXES`); (None, []) without a detector."""
    which = detectors.choose() if detectors is not None else None
    if which is None:
        return None, []
    threshold = CLICK_BOX_THRESHOLD if which == EMBEDDED else None
    return which, boxes_holding(detectors.find(image, None, which, box_threshold=threshold), [point])[:MAX_CLICK_BOXES]


def answer_in_found_box(loaded: LoadedModel, detectors: Detectors | None, source, image, point,
                        name: str = "semantic-box.png"):
    """Task (a) with no box: the answer in the box where the model is most confident (module docstring of
    demo.boxes), or on the whole image when none holds the click. -> (result, box or None, box field, image
    shown, note); nothing found: an empty field and the image without a box."""
    which, candidates = boxes_for_click(detectors, image, point)
    if not candidates:
        result = run_describe(loaded, image, None, [point])[0]
        if which is None:
            return result, None, gr.skip(), gr.skip(), box_note(None)
        note = found_note(which, detectors, "object under the click", None)
        return result, None, "", clickbox.show_boxes(source, [], name), note
    answers = [(run_describe(loaded, image, as_box(det), [point])[0], det) for det in candidates]
    result, found = max(answers, key=lambda answer: answer[0]["score"])  # max keeps the first (smallest) of ties
    box = as_box(found)
    return (result, box, clickbox.format_boxes([box]), clickbox.show_boxes(source, [box], name),
            found_note(which, detectors, "object under the click", found, among=len(candidates)))


def describe(loaded: LoadedModel, detectors: Detectors | None, image, x=None, y=None, box=""):
    """Task (a). `image`: the image file; `x`, `y`: the point in its pixels; `box`: the object's box
    'x, y, width, height' in pixels, or empty: then of the detector's boxes that hold the point, the one where
    the model is most confident (the whole image when none does). Returns the result, and the box used (field
    text, image with it drawn)."""
    source = image
    image = load_image(image)
    if x is None or y is None:
        raise refuse("Click a point on the image (or type its x and y) first.")
    point = check_point(float(x), float(y), image)
    bbox = parse_box(box, image)
    box_text, shown, note = gr.skip(), gr.skip(), box_note(bbox)
    processor = loaded.predictor.processor
    if bbox is not None and detectors is not None and detectors.choose() and not square_crop(
            image.size, bbox, processor.image_size, processor.crop_padding).contains(point):
        bbox = None  # a click beyond the box (e.g. one found for an earlier click on another object): find anew
    if bbox is None:
        result, bbox, box_text, shown, note = answer_in_found_box(loaded, detectors, source, image, point)
    else:
        result = run_describe(loaded, image, bbox, [point])[0]
    result = {**result, "xy": point}  # draw and export the asked point itself
    answer = result["text"] if result["parsed"] else f"(no parsable answer: {result['error']})"
    outcome = Outcome("semantic", image, [{"bbox": bbox, "results": [{**result, "query": None}]}], [answer], (),
                      {"task": "semantic", "point": list(point), "bbox": bbox}, loaded.name, image_name(source))
    annotated, _table, png, js = present(outcome, 0.0)
    summary = (f"### {escape_markdown(answer)}\nconfidence {result['score']:.2f} · point ({point[0]:.1f}, {point[1]:.1f}) · "
               f"raw answer `{result['raw'].strip().replace('`', chr(39))}`\n\n{note}")
    return annotated, summary, png, js, box_text, shown


def examples() -> list[list]:
    meta = json.loads((EXAMPLES / "keypointworld.json").read_text())
    rows = []
    for file, entry in meta.items():
        kx, ky, _ = entry["keypoints"][0]
        rows.append([str(EXAMPLES / file), kx, ky, ",".join(f"{v:g}" for v in entry["bbox"])])
    return rows


def build(loaded: LoadedModel, detectors: Detectors | None = None) -> None:
    with gr.Row():
        with gr.Column():
            image = ImageInput(label="Image — click a point (or, in box mode, two corners of the object)",
                               elem_id="sem-image")
            with gr.Row():
                x = gr.Number(label="x", elem_id="sem-x")
                y = gr.Number(label="y", elem_id="sem-y")
            clickbox.zoom_controls(image, "sem-bbox")
            bbox = gr.Textbox("", label=BOX_LABEL, elem_id="sem-bbox")
            mode = gr.Radio([("the point to ask about", POINT), ("the object's box (click two opposite corners)", BOX)],
                            value=POINT, label="A click on the image sets", elem_id="sem-mode")
            run = gr.Button("What keypoint is this?", variant="primary", elem_id="sem-run")
        with gr.Column():
            out_image = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="sem-result",
                                 buttons=image_buttons())
            answer = gr.Markdown(elem_id="sem-answer")
            with gr.Row():
                png = gr.DownloadButton("Annotated PNG", elem_id="sem-png")
                js = gr.DownloadButton("Answer JSON", elem_id="sem-json")
    fn = partial(describe, loaded, detectors)
    outputs = [out_image, answer, png, js, bbox, image]  # the box used is written in the field and drawn

    def describe_point(mode, image, x, y, box):
        return describe(loaded, detectors, image, x, y, box) if mode == POINT else (gr.skip(),) * len(outputs)

    run.click(lambda: "", None, answer, queue=False, api_visibility="private")  # an error must not leave the last answer
    run.click(fn, [image, x, y, bbox], outputs, api_name="describe", concurrency_id="model", show_progress_on=out_image)
    corner = clickbox.wire(image, bbox, name="semantic-box.png", clicks=False)
    image.select(clicked, [mode, image, bbox, corner], [x, y, bbox, corner, image], queue=False,
                 api_visibility="private").then(describe_point, [mode, image, x, y, bbox], outputs,
                                                api_visibility="private", concurrency_id="model",
                                                show_progress_on=out_image)
    gr.Examples(examples(), [image, x, y, bbox], label="Examples (the first labelled keypoint of each drawing)",
                cache_examples=False, fn=lambda value, _x, _y, box: clickbox.show_typed(value, box, "semantic-box.png")[0],
                outputs=image, run_on_click=True, api_visibility="private")
