"""Tab (c) Text prompt: keypoint names or descriptions (a catalog preset or typed) -> locations."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import gradio as gr

from .. import clickbox
from ..inputs import BOX_LABEL, ImageInput, image_name, load_image, parse_box, parse_names
from ..model import LoadedModel, run_detect
from ..presets import category_of, preset_used, presets, skeleton_for
from ..views import MIN_SCORE, Outcome, looked_at, present, redraw

CUSTOM = "Custom (type below)"
EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def preset_text(preset: str, use_descriptions: bool) -> str:
    p = presets().get(preset)
    if p is None:
        return gr.skip()
    return "\n".join(p.descriptions if use_descriptions else p.names)


def detect_text(loaded: LoadedModel, image, preset=None, keypoints=None, use_descriptions=False, box="",
                min_score=MIN_SCORE):
    """Task (c). `image`: the image file; `preset`: the preset the keypoints came from (recorded only when
    they are that preset's); `keypoints`: names or descriptions, one per line; `use_descriptions`: the
    preset's descriptions were asked (UI only); `box`: 'x, y, width, height' pixels or empty for the whole
    image; `min_score`: results below this confidence are hidden in the image and the export."""
    source = image
    image = load_image(image)
    bbox = parse_box(box, image)
    names = parse_names(keypoints)
    results = run_detect(loaded, image, bbox, names)
    used = preset_used(preset, names)
    outcome = Outcome("text", image, [{"bbox": bbox, "results": results}], names, skeleton_for(names),
                      {"task": "text", "preset": used, "keypoints": names, "bbox": bbox, "category": category_of(used)},
                      loaded.name, image_name(source))
    return (*present(outcome, float(min_score)), outcome)


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


def build(loaded: LoadedModel) -> None:
    choices = list(presets()) + [CUSTOM]
    first = choices[0]
    with gr.Row():
        with gr.Column():
            image = ImageInput(label="Image — click two opposite corners of the object to draw its box", elem_id="text-image")
            bbox = gr.Textbox("", label=BOX_LABEL, elem_id="text-bbox")
            preset = gr.Dropdown(choices, value=first, label="Keypoint preset", elem_id="text-preset")
            use_desc = gr.Checkbox(False, label="Use descriptions instead of names")
            names = gr.Textbox(preset_text(first, False), lines=6, max_lines=20, label="Keypoints (one per line)",
                               elem_id="text-names")
            run = gr.Button("Find keypoints", variant="primary", elem_id="text-run")
        with gr.Column():
            out_image = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="text-result")
            note = gr.Markdown(elem_id="text-note")
            min_score = gr.Slider(0, 1, value=MIN_SCORE, step=0.01, label="Hide keypoints below this confidence")
            with gr.Row():
                png = gr.DownloadButton("Annotated PNG", elem_id="text-png")
                js = gr.DownloadButton("Keypoints JSON (COCO)", elem_id="text-json")
            table = gr.Dataframe(label="Keypoints", interactive=False, elem_id="text-table")
    state = gr.State(None)
    preset.change(preset_text, [preset, use_desc], names, api_name="text_preset")
    use_desc.change(preset_text, [preset, use_desc], names, api_name="text_preset_descriptions")
    run.click(partial(detect_text, loaded), [image, preset, names, use_desc, bbox, min_score],
              [out_image, table, png, js, state], api_name="detect_text", concurrency_id="model").then(
        looked_at, state, note, queue=False, api_visibility="private")
    min_score.release(redraw, [state, min_score], [out_image, table, png, js], api_name="text_redraw")
    clickbox.wire(image, bbox, name="text-box.png")
    gr.Examples(examples(), [image, preset, names, use_desc, bbox], label="Examples (KeypointWorld drawings the "
                "embedded model knows; the COCO photo shows what it does on a real image)", cache_examples=False,
                fn=lambda value, _preset, _names, _descriptions, box: clickbox.show_typed(value, box, "text-box.png")[0],
                outputs=image, run_on_click=True, api_visibility="private")
