"""Tab (c) Text prompt: keypoint names or descriptions (a catalog preset or typed) -> locations."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import gradio as gr

from .. import clickbox
from ..boxes import MAX_FOUND, Detectors, boxes_for_names
from ..inputs import ImageInput, image_name, load_image, parse_box, parse_names, refuse
from ..model import LoadedModel, run_detect, run_detect_boxes
from ..presets import category_of, preset_used, presets, skeleton_for
from ..views import MIN_SCORE, Outcome, box_note, image_buttons, looked_at, present, redraw

CUSTOM = "Custom (type below)"
BOXES_LABEL = ("Object box x, y, width, height in pixels; one line per object (empty: the detector finds the "
               "preset's object, else the whole image)")
EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def preset_text(preset: str, use_descriptions: bool) -> str:
    p = presets().get(preset)
    if p is None:
        return gr.skip()
    return "\n".join(p.descriptions if use_descriptions else p.names)


def parse_boxes(text, image) -> list[tuple[float, float, float, float]]:
    """The box field: one 'x, y, w, h' line per object (at most MAX_FOUND)."""
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    if len(lines) > MAX_FOUND:
        raise refuse(f"{len(lines)} boxes given; the limit is {MAX_FOUND}.")
    return [parse_box(line, image, "box" if len(lines) == 1 else f"box {k + 1}") for k, line in enumerate(lines)]


def detect_text(loaded: LoadedModel, detectors: Detectors | None, image, preset=None, keypoints=None,
                use_descriptions=False, box="", min_score=MIN_SCORE):
    """Task (c). `image`: the image file; `preset`: the preset the keypoints came from (recorded only when
    they are that preset's); `keypoints`: names or descriptions, one per line; `use_descriptions`: the
    preset's descriptions were asked (UI only); `box`: 'x, y, width, height' pixels, one line per object, or
    empty: the detector's best box of the preset's category (each object found when typed names fit several
    categories; the whole image when nothing is found); `min_score`: results below this confidence are hidden
    in the image and the export. Returns the result and the boxes used (field text, image with them drawn)."""
    source = image
    image = load_image(image)
    names = parse_names(keypoints)
    used = preset_used(preset, names)
    boxes = parse_boxes(box, image)
    labels, box_text, shown, note = [None] * len(boxes), gr.skip(), gr.skip(), ""
    if not boxes:
        boxes, labels, note = boxes_for_names(detectors, image, used, names)
        if boxes:
            box_text, shown = clickbox.format_boxes(boxes), clickbox.show_boxes(source, boxes, "text-box.png")
    if len(boxes) <= 1:
        bbox = boxes[0] if boxes else None
        instances = [{"bbox": bbox, "results": run_detect(loaded, image, bbox, names)}]
        note = note or box_note(bbox)
    else:
        per_box = run_detect_boxes(loaded, image, boxes, names)
        instances = [{"bbox": list(b), "label": lab or f"box {k + 1}", "results": r}
                     for k, (b, lab, r) in enumerate(zip(boxes, labels, per_box))]
        note = note or f"*The model looked at each of the {len(boxes)} boxes.*"
    prompt = {"task": "text", "preset": used, "keypoints": names, "category": category_of(used),
              **({"bbox": instances[0]["bbox"]} if len(instances) == 1 else {"boxes": [i["bbox"] for i in instances]})}
    outcome = Outcome("text", image, instances, names, skeleton_for(names), prompt, loaded.name, image_name(source),
                      note=note)
    return (*present(outcome, float(min_score)), outcome, box_text, shown)


def examples() -> list[list]:
    rows = []
    meta = json.loads((EXAMPLES / "keypointworld.json").read_text())
    for file, entry in meta.items():
        preset = next(k for k in presets() if k.startswith(f"KeypointWorld {entry['category']} "))
        rows.append([str(EXAMPLES / file), preset, "\n".join(entry["names"]), False,
                     ",".join(f"{v:g}" for v in entry["bbox"])])
    coco = next(k for k in presets() if k.startswith("COCO person"))
    rows.append([str(EXAMPLES / "coco_000000000785.jpg"), coco, "\n".join(presets()[coco].names), False, "280,44,218,346"])
    return rows


def build(loaded: LoadedModel, detectors: Detectors | None = None) -> None:
    choices = list(presets()) + [CUSTOM]
    first = choices[0]
    with gr.Row():
        with gr.Column():
            image = ImageInput(label="Image — click two opposite corners of the object to draw its box", elem_id="text-image")
            bbox = gr.Textbox("", label=BOXES_LABEL, elem_id="text-bbox")
            preset = gr.Dropdown(choices, value=first, label="Keypoint preset", elem_id="text-preset")
            use_desc = gr.Checkbox(False, label="Use descriptions instead of names")
            names = gr.Textbox(preset_text(first, False), lines=6, max_lines=20, label="Keypoints (one per line)",
                               elem_id="text-names")
            run = gr.Button("Find keypoints", variant="primary", elem_id="text-run")
        with gr.Column():
            out_image = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="text-result",
                                 buttons=image_buttons())
            note = gr.Markdown(elem_id="text-note")
            min_score = gr.Slider(0, 1, value=MIN_SCORE, step=0.01, label="Hide keypoints below this confidence")
            with gr.Row():
                png = gr.DownloadButton("Annotated PNG", elem_id="text-png")
                js = gr.DownloadButton("Keypoints JSON (COCO)", elem_id="text-json")
            table = gr.Dataframe(label="Keypoints", interactive=False, elem_id="text-table")
    state = gr.State(None)
    preset.change(preset_text, [preset, use_desc], names, api_name="text_preset")
    use_desc.change(preset_text, [preset, use_desc], names, api_name="text_preset_descriptions")
    run.click(lambda: "", None, note, queue=False, api_visibility="private")  # an error must not leave the last note
    run.click(partial(detect_text, loaded, detectors), [image, preset, names, use_desc, bbox, min_score],
              [out_image, table, png, js, state, bbox, image], api_name="detect_text", concurrency_id="model",
              show_progress_on=out_image).then(
        looked_at, state, note, queue=False, api_visibility="private")
    min_score.release(redraw, [state, min_score], [out_image, table, png, js], api_name="text_redraw")
    clickbox.wire(image, bbox, name="text-box.png")
    gr.Examples(examples(), [image, preset, names, use_desc, bbox], label="Examples (KeypointWorld drawings the "
                "embedded model knows; the COCO photo shows what it does on a real image)", cache_examples=False,
                fn=lambda value, _preset, _names, _descriptions, box: clickbox.show_typed(value, box, "text-box.png")[0],
                outputs=image, run_on_click=True, api_visibility="private")
