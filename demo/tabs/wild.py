"""Tab: In the wild — a text query -> a detector's boxes -> keypoints for every object (or typed boxes).

The detector is the embedded KeypointWorld one (offline, drawn scenes) or GroundingDINO (photographs) when a
local copy is loaded or downloaded; the visitor picks either when both are there (`demo.boxes.Detectors`)."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

import gradio as gr

from evaluation.data.keypointworld import ALIASES, CATEGORIES
from kptllm.detection import DEFAULT_DETECTOR, GroundingDinoDetector

from .. import clickbox
from ..boxes import EMBEDDED, OPEN, Detectors
from ..inputs import MAX_QUERY_TEXT, ImageInput, image_name, load_image, parse_box, parse_names, refuse
from ..model import LoadedModel, gpu, is_embedded, run_detect_boxes
from ..presets import category_of, preset_used, presets, skeleton_for
from ..views import MIN_SCORE, Outcome, image_buttons, present, redraw
from .text import preset_text

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
MAX_OBJECTS = 10
EACH = "Each object's own (its KeypointWorld category)"  # the preset that gives every found object its keypoints
BOX_THRESHOLD, TEXT_THRESHOLD = 0.35, 0.25  # GroundingDINO's usual thresholds


def load_local_detector(path_or_id: str | None, device=None) -> tuple[GroundingDinoDetector | None, str]:
    """The detector from a local folder or the local hub cache only: never touches the network."""
    source = path_or_id or DEFAULT_DETECTOR
    try:
        detector = GroundingDinoDetector.from_pretrained(source, device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        return None, (f"**GroundingDINO unavailable:** no local copy of `{source}` ({type(exc).__name__}); the app "
                      "does not download it at start. Press *Download GroundingDINO* if this machine can reach the "
                      "Hugging Face hub, or type boxes (one `x, y, w, h` per line).")
    return detector, f"`{source}` (GroundingDINO via transformers), loaded from local files."


HUB_PROBE_S = 5.0  # seconds to find out whether the hub can be reached at all, before any download starts


def hub_reachable(timeout: float = HUB_PROBE_S) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within `timeout` seconds (DNS included):
    offline, the hub client would otherwise retry for a minute or two before it fails."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    result: list[bool] = []

    def probe():
        try:
            with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)  # getaddrinfo has no timeout of its own
    return bool(result and result[0])


def status(detectors: Detectors) -> str:
    """What the tab says about its detectors."""
    lines = []
    if detectors.embedded is not None:
        lines.append(f"**Detector:** {detectors.describe(EMBEDDED)}, loaded from this repository (offline).")
    if detectors.open is not None:
        lines.append(f"**Detector:** {detectors.open_note or detectors.describe(OPEN)}")
    elif detectors.open_note:
        lines.append(detectors.open_note)
    if not lines:
        lines.append("**No object detector is loaded:** type boxes below, one `x, y, w, h` per line.")
    return "  \n".join(lines)


def download_detector(detectors: Detectors, device) -> str:
    """*Download detector*: GroundingDINO from the hub (or the folder the app was asked for)."""
    source = detectors.open_source or DEFAULT_DETECTOR
    with detectors.lock:
        if detectors.open is None:
            if not Path(source).is_dir() and not hub_reachable():
                raise refuse(f"The detector {source} cannot be downloaded: this machine cannot reach the "
                             "Hugging Face hub. Use the embedded detector, or type boxes (one x, y, w, h per line).")
            try:
                detectors.open = GroundingDinoDetector.from_pretrained(source, device=device)
                detectors.open_source = source
                detectors.open_note = f"`{source}` (GroundingDINO via transformers), downloaded from the hub."
            except Exception as exc:  # noqa: BLE001
                raise refuse(f"The detector {source} could not be loaded ({type(exc).__name__}). "
                             "Use the embedded detector, or type boxes (one x, y, w, h per line).") from None
    return status(detectors)


@gpu
def _boxes(detectors: Detectors, which, image, objects, box_threshold, text_threshold):
    return detectors.find(image, objects, which, box_threshold, text_threshold, max_found=MAX_OBJECTS)


def detect_wild(loaded: LoadedModel, detectors: Detectors, image, objects="", preset=None, keypoints=None,
                box_threshold=BOX_THRESHOLD, text_threshold=TEXT_THRESHOLD, boxes="", min_score=MIN_SCORE, detector=None):
    """Objects found by the detector (or typed boxes) -> task (c) in each. `image`: the photo; `objects`: the
    detector's text query ('person. dog.'); `preset`: recorded only when `keypoints` are its; `keypoints`:
    names or descriptions, one per line; `box_threshold`, `text_threshold`: the detector's (the embedded one
    has no text threshold); `boxes`: typed boxes, one 'x, y, w, h' line each (they replace the detector);
    `min_score`: results below it are hidden; `detector`: 'embedded' or 'GroundingDINO' (default: the one the
    app prefers for its model)."""
    source_file = image
    image = load_image(image)
    each = preset == EACH  # every object its own category's keypoints (the detector's label says which)
    names = [] if each else parse_names(keypoints)
    lines = [line for line in str(boxes or "").splitlines() if line.strip()]
    if each and lines:
        raise refuse("Each object's own keypoints come from the detector's categories: clear the typed boxes, or "
                     "pick a keypoint preset.")
    if lines:
        if len(lines) > MAX_OBJECTS:
            raise refuse(f"{len(lines)} boxes typed; the limit is {MAX_OBJECTS}.")
        object_boxes = [parse_box(line, image, f"box {k + 1}") for k, line in enumerate(lines)]
        labels = [f"box {k + 1}" for k in range(len(object_boxes))]
        source = "typed boxes"
    else:
        objects = str(objects or "").strip()
        if not objects:
            raise refuse("Say which objects to find (e.g. 'person. dog.'), or type boxes.")
        if len(objects) > MAX_QUERY_TEXT:
            raise refuse(f"The object query is {len(objects)} characters; the limit is {MAX_QUERY_TEXT}.")
        if detector and detector not in detectors.available():
            raise refuse(f"The {detector} detector is not loaded here"
                         + (": press *Download GroundingDINO*, or pick the embedded detector." if detector == OPEN else "."))
        which = detectors.choose(detector)
        if which is None:
            raise refuse("No object detector is loaded; type boxes (x, y, w, h per line) instead.")
        try:
            found = _boxes(detectors, which, image, objects, float(box_threshold), float(text_threshold))
        except ValueError as exc:
            raise refuse(f"The {which} detector: {exc}.") from None
        if not found:
            raise refuse(f"No '{objects}' found above box threshold {box_threshold:g}; lower it or type boxes.")
        object_boxes = [d.xywh for d in found]
        labels = [f"{d.label} {d.score:.2f}" for d in found]
        source = f"{which} detector: {objects!r}"
    if each:
        instances = _each_own(loaded, image, found)
        if not instances:
            raise refuse("None of the objects found is a KeypointWorld category (person, quadruped, face, car, chair): "
                         "pick a keypoint preset instead.")
    else:
        per_box = run_detect_boxes(loaded, image, object_boxes, names)
        instances = [{"bbox": list(b), "label": lab, "results": res} for b, lab, res in zip(object_boxes, labels, per_box)]
    used = preset_used(preset, names)
    prompt = {"task": "text", "boxes_from": source, "keypoints": names, "preset": EACH if each else used,
              "category": None if each else category_of(used)}
    if not lines:  # the detector's query and thresholds, only when it ran
        prompt.update(objects=objects, detector=which, box_threshold=box_threshold,
                      **({"text_threshold": text_threshold} if which == OPEN else {}))
    outcome = Outcome("wild", image, instances, names, skeleton_for(names), prompt, loaded.name, image_name(source_file))
    return (*present(outcome, float(min_score)), outcome)


def _each_own(loaded: LoadedModel, image, found) -> list[dict]:
    """Task (c) in every found box with its own category's KeypointWorld keypoints (one model call per category);
    objects of other categories are left out. Instances in the order found, each with its names and skeleton."""
    by_category: dict[str, list[int]] = {}
    for k, det in enumerate(found):
        category = ALIASES.get(det.label, det.label)
        if category in CATEGORIES:
            by_category.setdefault(category, []).append(k)
    instances: dict[int, dict] = {}
    for category, indices in by_category.items():
        names = list(CATEGORIES[category].keypoints)
        per_box = run_detect_boxes(loaded, image, [found[k].xywh for k in indices], names)
        for k, results in zip(indices, per_box):
            instances[k] = {"bbox": list(found[k].xywh), "label": f"{found[k].label} {found[k].score:.2f}",
                            "results": results, "category": category, "names": names,
                            "skeleton": tuple(CATEGORIES[category].skeleton)}
    return [instances[k] for k in sorted(instances)]


def build(loaded: LoadedModel, detectors: Detectors) -> None:
    """*Download detector* fetches `detectors.open_source` (default: DEFAULT_DETECTOR)."""
    choices = [EACH, *presets()]
    coco = next(k for k in choices if k.startswith("COCO person"))
    shown_status = gr.Markdown(status(detectors), elem_id="wild-status")
    with gr.Row():
        with gr.Column():
            image = ImageInput(label="Photo — click two opposite corners of an object to box it by hand", elem_id="wild-image")
            if is_embedded(loaded):
                gr.Markdown("*The embedded model knows drawn KeypointWorld scenes: on a photograph the boxes may be "
                            "found, but its keypoints are not meaningful (photographs are outside what it knows).*",
                            elem_id="wild-scope")
            which = gr.Radio([(f"embedded KeypointWorld detector (drawn scenes)", EMBEDDED),
                              (f"GroundingDINO (photographs; needs a local copy or Download)", OPEN)],
                             value=detectors.choose(), label="Detector", elem_id="wild-detector")
            objects = gr.Textbox("person.", label="Objects to find (e.g. 'person. quadruped.')", elem_id="wild-objects")
            with gr.Row():
                box_thr = gr.Slider(0, 1, value=BOX_THRESHOLD, step=0.01, label="Box threshold")
                text_thr = gr.Slider(0, 1, value=TEXT_THRESHOLD, step=0.01, label="Text threshold")
            boxes = gr.Textbox("", label="Or give boxes: click two opposite corners of each object on the photo, "
                               "or type one x, y, w, h per line (they replace the detector)", lines=2, elem_id="wild-boxes")
            preset = gr.Dropdown(choices, value=coco, label="Keypoint preset")
            names = gr.Textbox(preset_text(coco, False), lines=5, label="Keypoints (one per line)", elem_id="wild-names")
            with gr.Row():
                run = gr.Button("Find objects and keypoints", variant="primary", elem_id="wild-run")
                fetch = gr.Button("Download GroundingDINO", size="sm", visible=detectors.open is None)
        with gr.Column():
            out_image = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="wild-result",
                                 buttons=image_buttons())
            min_score = gr.Slider(0, 1, value=MIN_SCORE, step=0.01, label="Hide keypoints below this confidence")
            with gr.Row():
                png = gr.DownloadButton("Annotated PNG", elem_id="wild-png")
                js = gr.DownloadButton("Keypoints JSON (COCO)", elem_id="wild-json")
            table = gr.Dataframe(label="Keypoints (object = box number)", interactive=False, elem_id="wild-table")
    state = gr.State(None)
    preset.change(lambda p: preset_text(p, False), preset, names, api_name="wild_preset")
    run.click(partial(detect_wild, loaded, detectors),
              [image, objects, preset, names, box_thr, text_thr, boxes, min_score, which],
              [out_image, table, png, js, state], api_name="detect_wild", concurrency_id="model")
    fetch.click(lambda: download_detector(detectors, loaded.predictor.device), None, shown_status,
                api_name="wild_download_detector")
    min_score.release(redraw, [state, min_score], [out_image, table, png, js], api_name="wild_redraw")
    clickbox.wire(image, boxes, many=MAX_OBJECTS, name="wild-boxes.png")
    kw_person = next(k for k in choices if k.startswith("KeypointWorld person"))
    kw_quadruped = next(k for k in choices if k.startswith("KeypointWorld quadruped"))
    gr.Examples([[str(EXAMPLES / "keypointworld_person.jpg"), "person.", kw_person, ""],
                 [str(EXAMPLES / "keypointworld_quadruped.jpg"), "quadruped.", kw_quadruped, ""],
                 [str(EXAMPLES / "coco_000000000785.jpg"), "person.", coco, "280,44,218,346"]],
                [image, objects, preset, boxes], label="Examples (the drawings: no box, the embedded detector finds the "
                "object offline; the photo: a typed box, since the embedded detector knows drawings only)",
                cache_examples=False, outputs=image, run_on_click=True, api_visibility="private",
                fn=lambda value, _objects, _preset, box: clickbox.show_typed(value, box, "wild-boxes.png")[0])
