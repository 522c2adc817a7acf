"""Tab (c) Text prompt: keypoint names or descriptions (a catalog preset or typed) -> locations."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from ..inputs import load_image, parse_box, parse_names
from ..model import LoadedModel, run_detect
from ..presets import presets, skeleton_for
from ..views import Outcome, present, redraw

CUSTOM = "Custom (type below)"
EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def preset_text(preset: str, use_descriptions: bool) -> str:
    p = presets().get(preset)
    if p is None:
        return gr.skip()
    return "\n".join(p.descriptions if use_descriptions else p.names)


def detect_text(loaded: LoadedModel, image, preset, names_text, use_descriptions, bbox_text, min_score):
    image = load_image(image)
    bbox = parse_box(bbox_text, image)
    names = parse_names(names_text)
    results = run_detect(loaded, image, bbox, names)
    outcome = Outcome("text", image, [{"bbox": bbox, "results": results}], names, skeleton_for(names),
                      {"task": "text", "preset": preset, "keypoints": names, "bbox": bbox,
                       "category": (preset or "").split(" (")[0] or None}, loaded.source)
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
            image = gr.Image(type="pil", format="png", image_mode=None, label="Image", elem_id="text-image")
            bbox = gr.Textbox(label="Object box x, y, width, height (pixels; empty = whole image)", elem_id="text-bbox")
            preset = gr.Dropdown(choices, value=first, label="Keypoint preset", elem_id="text-preset")
            use_desc = gr.Checkbox(False, label="Use descriptions instead of names")
            names = gr.Textbox(preset_text(first, False), lines=6, max_lines=20, label="Keypoints (one per line)",
                               elem_id="text-names")
            run = gr.Button("Find keypoints", variant="primary", elem_id="text-run")
        with gr.Column():
            out_image = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="text-result")
            min_score = gr.Slider(0, 1, value=0.05, step=0.01, label="Hide keypoints below this confidence")
            with gr.Row():
                png = gr.DownloadButton("Annotated PNG", elem_id="text-png")
                js = gr.DownloadButton("Keypoints JSON (COCO)", elem_id="text-json")
            table = gr.Dataframe(label="Keypoints", interactive=False, elem_id="text-table")
    state = gr.State(None)
    preset.change(preset_text, [preset, use_desc], names, api_name="text_preset")
    use_desc.change(preset_text, [preset, use_desc], names, api_name="text_preset_descriptions")
    run.click(lambda *a: detect_text(loaded, *a), [image, preset, names, use_desc, bbox, min_score],
              [out_image, table, png, js, state], api_name="detect_text", concurrency_id="model")
    min_score.release(redraw, [state, min_score], [out_image, table, png, js], api_name="text_redraw")
    gr.Examples(examples(), [image, preset, names, use_desc, bbox], label="Examples (KeypointWorld drawings the "
                "embedded model knows; the COCO photo shows what it does on a real image)", cache_examples=False)
