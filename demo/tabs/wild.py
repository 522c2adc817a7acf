"""Tab: In the wild — a text query -> GroundingDINO boxes -> keypoints for every object (or typed boxes)."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from kptllm.detection import DEFAULT_DETECTOR, GroundingDinoDetector

from ..inputs import MAX_QUERY_TEXT, load_image, parse_box, parse_names
from ..model import LoadedModel, gpu, run_detect_boxes
from ..presets import presets, skeleton_for
from ..views import Outcome, present, redraw
from .text import preset_text

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
MAX_OBJECTS = 10


class DetectorHolder:
    """The process's one detector (or None) and why; loading on request is serialised. `source`: the folder or
    hub id the app was asked to use (what *Download detector* fetches)."""

    def __init__(self, detector: GroundingDinoDetector | None, note: str, source: str | None = None):
        self.detector, self.note, self.lock = detector, note, threading.Lock()
        self.source = source or DEFAULT_DETECTOR

    def status(self) -> str:
        return self.note


def load_local_detector(path_or_id: str | None, device=None) -> tuple[GroundingDinoDetector | None, str]:
    """The detector from a local folder or the local hub cache only: never touches the network."""
    source = path_or_id or DEFAULT_DETECTOR
    try:
        detector = GroundingDinoDetector.from_pretrained(source, device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        return None, (f"**Object detector unavailable:** no local copy of `{source}` ({type(exc).__name__}). "
                      "The app does not download it at start. Type boxes below instead (one `x, y, w, h` per "
                      "line), or press *Download detector* if this machine can reach the Hugging Face hub.")
    return detector, f"**Object detector:** `{source}` (GroundingDINO via transformers), loaded from local files."


def download_detector(holder: DetectorHolder, device) -> str:
    with holder.lock:
        if holder.detector is not None:
            return holder.note
        try:
            holder.detector = GroundingDinoDetector.from_pretrained(holder.source, device=device)
            holder.note = f"**Object detector:** `{holder.source}`, downloaded from the hub."
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(f"Could not download {holder.source} (offline?): {type(exc).__name__}: {exc}") from None
    return holder.note


@gpu
def _boxes(holder: DetectorHolder, image, objects, box_threshold, text_threshold):
    with holder.lock:
        return holder.detector.detect(image, objects, box_threshold, text_threshold, max_detections=MAX_OBJECTS)


def detect_wild(loaded: LoadedModel, holder: DetectorHolder, image, objects, preset, names_text, box_threshold,
                text_threshold, boxes_text, min_score):
    image = load_image(image)
    names = parse_names(names_text)
    lines = [line for line in str(boxes_text or "").splitlines() if line.strip()]
    if lines:
        if len(lines) > MAX_OBJECTS:
            raise gr.Error(f"{len(lines)} boxes typed; the limit is {MAX_OBJECTS}.")
        boxes = [parse_box(line, image, f"box {k + 1}") for k, line in enumerate(lines)]
        labels = [f"box {k + 1}" for k in range(len(boxes))]
        source = "typed boxes"
    else:
        objects = str(objects or "").strip()
        if not objects:
            raise gr.Error("Say which objects to find (e.g. 'person. dog.'), or type boxes.")
        if len(objects) > MAX_QUERY_TEXT:
            raise gr.Error(f"The object query is {len(objects)} characters; the limit is {MAX_QUERY_TEXT}.")
        if holder.detector is None:
            raise gr.Error("No object detector is loaded (offline); type boxes (x, y, w, h per line) instead.")
        try:
            found = _boxes(holder, image, objects, float(box_threshold), float(text_threshold))
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        if not found:
            raise gr.Error(f"No '{objects}' found above box threshold {box_threshold:g}; lower it or type boxes.")
        boxes = [d.xywh for d in found]
        labels = [f"{d.label} {d.score:.2f}" for d in found]
        source = f"GroundingDINO: {objects!r}"
    per_box = run_detect_boxes(loaded, image, boxes, names)
    instances = [{"bbox": list(b), "label": lab, "results": res} for b, lab, res in zip(boxes, labels, per_box)]
    prompt = {"task": "text", "boxes_from": source, "keypoints": names, "preset": preset}
    if not lines:  # the detector's query and thresholds, only when it ran
        prompt.update(objects=objects, box_threshold=box_threshold, text_threshold=text_threshold)
    outcome = Outcome("wild", image, instances, names, skeleton_for(names), prompt, loaded.source)
    return (*present(outcome, float(min_score)), outcome)


def build(loaded: LoadedModel, detector: GroundingDinoDetector | None = None, note: str | None = None,
          source: str | None = None) -> None:
    """`source`: the detector folder / hub id asked for (default: DEFAULT_DETECTOR), fetched by *Download detector*."""
    if note is None:
        note = (f"**Object detector:** loaded ({type(detector).__name__})." if detector is not None else
                "**Object detector unavailable** (none loaded): type boxes below, one `x, y, w, h` per line.")
    holder = DetectorHolder(detector, note, source)
    choices = list(presets())
    coco = next(k for k in choices if k.startswith("COCO person"))
    status = gr.Markdown(note, elem_id="wild-status")
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="pil", format="png", image_mode=None, label="Photo", elem_id="wild-image")
            objects = gr.Textbox("person.", label="Objects to find (GroundingDINO text query)", elem_id="wild-objects")
            with gr.Row():
                box_thr = gr.Slider(0, 1, value=0.35, step=0.01, label="Box threshold")
                text_thr = gr.Slider(0, 1, value=0.25, step=0.01, label="Text threshold")
            boxes = gr.Textbox(label="Or type boxes: one x, y, w, h per line (overrides the detector)", lines=2,
                               elem_id="wild-boxes")
            preset = gr.Dropdown(choices, value=coco, label="Keypoint preset")
            names = gr.Textbox(preset_text(coco, False), lines=5, label="Keypoints (one per line)", elem_id="wild-names")
            with gr.Row():
                run = gr.Button("Find objects and keypoints", variant="primary", elem_id="wild-run")
                fetch = gr.Button("Download detector", size="sm", visible=detector is None)
        with gr.Column():
            out_image = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="wild-result")
            min_score = gr.Slider(0, 1, value=0.05, step=0.01, label="Hide keypoints below this confidence")
            with gr.Row():
                png = gr.DownloadButton("Annotated PNG", elem_id="wild-png")
                js = gr.DownloadButton("Keypoints JSON (COCO)", elem_id="wild-json")
            table = gr.Dataframe(label="Keypoints (object = box number)", interactive=False, elem_id="wild-table")
    state = gr.State(None)
    preset.change(lambda p: preset_text(p, False), preset, names, api_name="wild_preset")
    run.click(lambda *a: detect_wild(loaded, holder, *a),
              [image, objects, preset, names, box_thr, text_thr, boxes, min_score],
              [out_image, table, png, js, state], api_name="detect_wild", concurrency_id="model")
    fetch.click(lambda: download_detector(holder, loaded.predictor.device), None, status, api_name="wild_download_detector")
    min_score.release(redraw, [state, min_score], [out_image, table, png, js], api_name="wild_redraw")
    gr.Examples([[str(EXAMPLES / "coco_000000000785.jpg"), "person.", coco, "280,44,218,346"],
                 [str(EXAMPLES / "keypointworld_person.jpg"), "person.",
                  next(k for k in choices if k.startswith("KeypointWorld person")), "63,136,84,96"]],
                [image, objects, preset, boxes], label="Examples (typed boxes work offline; clear them to use the detector)",
                cache_examples=False)
