"""Results -> what a tab shows and exports: annotated image, table, PNG and JSON. Shared by every tab."""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import gradio as gr
import pandas as pd
from PIL import Image

from .export import export_json, write_exports
from .inputs import xywh_to_xyxy
from .render import annotate

MIN_SCORE = 0.05  # results below this confidence are hidden unless the user moves the slider


def image_buttons() -> list[str]:
    """The buttons on a shown image: sharing works only on Hugging Face Spaces (elsewhere Gradio's share icon
    answers "Must be on Spaces to share"), so it is offered only there."""
    return ["download", "share", "fullscreen"] if os.environ.get("SPACE_ID") else ["download", "fullscreen"]
TABLE_COLUMNS = ["object", "#", "keypoint", "x", "y", "score", "model says", "shown"]


@dataclass
class Outcome:
    """One answered request, kept in the session's gr.State so the confidence slider can redraw it."""

    task: str
    image: Image.Image
    instances: list[dict]  # [{"bbox": xywh | None, "label": str | None, "results": [dict, ...]}]
    names: list[str]
    skeleton: tuple = ()
    prompt: dict = field(default_factory=dict)
    model: str = ""  # the model's public name (never a server path)
    file_name: str = "image.png"  # the user's name for the image, carried into the exports
    note: str = ""  # what the page says under the result about the box(es) (found by a detector, or none)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")


def escape_markdown(text: str) -> str:
    """`text` (a model's answer, a user's name) shown literally inside Markdown: no HTML, no formatting."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def box_note(bbox) -> str:
    """What the model looked at, said under every answer (the box decides what the model sees)."""
    if bbox is None:
        return ("*The model looked at the whole image. It is made for one object per box: on a busy image, "
                "give the object's box for reliable answers.*")
    x, y, w, h = bbox
    return f"*The model looked at the box x {x:g}, y {y:g}, width {w:g}, height {h:g} (pixels).*"


def looked_at(outcome: Outcome | None):
    """The note under a result: what the model looked at (`box_note` of the request's box)."""
    if outcome is None or not outcome.instances:
        return gr.skip()
    return outcome.note or box_note(outcome.instances[0].get("bbox"))


def _label(r: dict, fallback: str) -> str:
    return r.get("query") or r.get("text") or fallback


def _number(r: dict, k: int) -> int:
    """The keypoint's number in the image and the table: its own (a visual prompt's) or its place in the list."""
    return int(r.get("number") or k + 1)


def table(outcome: Outcome, min_score: float) -> pd.DataFrame:
    rows = []
    for o, inst in enumerate(outcome.instances):
        for k, r in enumerate(inst["results"]):
            xy = r.get("xy")
            rows.append({"object": o + 1, "#": _number(r, k), "keypoint": _label(r, f"keypoint {k + 1}"),
                         "x": round(xy[0], 1) if xy else None, "y": round(xy[1], 1) if xy else None,
                         "score": round(float(r.get("score", 0.0)), 3),
                         "model says": r.get("text") if r.get("parsed") else f"(unparsed: {r.get('error')})",
                         "shown": bool(xy) and r.get("score", 0.0) >= min_score})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def draw(outcome: Outcome, min_score: float) -> Image.Image:
    points, labels, skeleton = [], [], []
    for inst in outcome.instances:
        offset = len(points)
        for k, r in enumerate(inst["results"]):
            keep = r.get("xy") is not None and r.get("score", 0.0) >= min_score
            points.append(tuple(r["xy"]) if keep else None)
            labels.append(f"{_number(r, k)} {_label(r, '')}".strip())  # the number alone where the name does not fit
        skeleton += [(a + offset, b + offset) for a, b in inst.get("skeleton", outcome.skeleton)]
    boxes = [xywh_to_xyxy(inst["bbox"]) for inst in outcome.instances if inst.get("bbox") is not None]
    box_labels = [inst.get("label") or "" for inst in outcome.instances if inst.get("bbox") is not None]
    return annotate(outcome.image, points, labels, skeleton, boxes, box_labels if any(box_labels) else None)


def present(outcome: Outcome | None, min_score: float):
    """(annotated image, table, png path, json path) for `outcome` at `min_score`."""
    if outcome is None:
        return None, pd.DataFrame(columns=TABLE_COLUMNS), None, None
    annotated = draw(outcome, min_score)
    payload = export_json(outcome.task, outcome.prompt, outcome.image, outcome.instances, outcome.names,
                          outcome.skeleton, outcome.model, min_score, file_name=outcome.file_name,
                          annotated_size=annotated.size)
    png, js = write_exports(annotated, payload, stem=export_stem(outcome))
    return annotated, table(outcome, min_score), png, js


def export_stem(outcome: Outcome) -> str:
    """Download names that say what they hold: 'kptllm-text-<image name>'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", outcome.file_name.rsplit(".", 1)[0]).strip("._")[:60] or "image"
    return f"kptllm-{outcome.task}-{stem}"


def redraw(outcome: Outcome | None, min_score):
    """The confidence slider's handler, shared by the tabs: redraw the kept outcome, or leave the outputs."""
    if outcome is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return present(outcome, float(min_score))


def names_of(results: Sequence[dict]) -> list[str]:
    return [_label(r, f"keypoint {k + 1}") for k, r in enumerate(results)]
