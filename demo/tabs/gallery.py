"""Benchmarks tab, part: the predictions behind a measured record (`evaluation.gallery`), sorted and filtered,
two records side by side on the same units with their paired difference (`kptllm compare`), a click shows
one unit large with its numbers, the selection exports as a PNG grid plus JSON.

Records are chosen among the `record.json` files under results/ (never a path from the client); their images
are found where the record says or, for KeypointWorld, made again once (`evaluation.record_files`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gradio as gr
import pandas as pd

from evaluation.compare import as_json as compare_json
from evaluation.compare import compare as paired_bootstrap
from evaluation.compare import load_run
from evaluation.gallery import ORDERS, PAIRED_ORDERS, load_gallery, select
from evaluation.gallery_render import draw, draw_support, export, pair, stack, tiles_of

from .. import benchmarks as data
from ..export import request_folder
from ..inputs import refuse

TILE_PX = 256
LARGE_PX = 640
SUPPORT_PX = 320
DEFAULT_COUNT = 24
MAX_COUNT = 60
NONE = "(none)"
ORDER_CHOICES = [(label, key) for key, label in ORDERS.items()]


def record_folders() -> list[str]:
    """The records a gallery can be drawn for: folders under results/ with a record.json and their chunks."""
    root = data.RESULTS_DIR
    return sorted(p.parent.relative_to(root).as_posix() for p in root.glob("**/record.json")
                  if any((p.parent / "chunks").glob("*.json"))) if root.is_dir() else []


def _folder(name: str | None) -> Path | None:
    """A record folder chosen on the page, checked to be one of `record_folders()`."""
    if not name or name == NONE:
        return None
    if name not in record_folders():
        raise refuse(f"No record named {name!r} under results/.")
    return data.RESULTS_DIR / name


def _load(name: str | None):
    folder = _folder(name)
    if folder is None:
        return None
    try:
        return load_gallery(folder)
    except ValueError as err:
        raise refuse(data.public_text(f"{name}: {err}")) from None


@functools.lru_cache(maxsize=32)
def _paired(a: str, b: str, stamp: tuple):
    """`kptllm compare a b` (1000 resamples, seed 0): the comparison, or the reason there is none (str)."""
    try:
        return paired_bootstrap(load_run(data.RESULTS_DIR / a), load_run(data.RESULTS_DIR / b))
    except ValueError as err:
        return data.public_text(f"Paired difference not available: {err}")


def _comparison(record: str | None, against: str | None):
    """The paired bootstrap of B against A (cached while both record.json files stay as they are); None without
    a second record."""
    if not against or against == NONE:
        return None
    for name in (record, against):
        _folder(name)
    stamp = tuple((data.RESULTS_DIR / n / "record.json").stat().st_mtime for n in (record, against))
    return _paired(record, against, stamp)


def paired_difference(record: str | None, against: str | None) -> str:
    """The paired bootstrap of B against A as one line of Markdown, or "" without a second record."""
    c = _comparison(record, against)
    if c is None or isinstance(c, str):
        return c or ""
    return (f"**B - A = {100 * c.difference:+.2f}** points of {c.metric} (A {100 * c.a:.2f}, B {100 * c.b:.2f}), "
            f"95 % interval [{100 * c.low:+.2f}, {100 * c.high:+.2f}] over {c.units} paired units "
            f"({c.samples} bootstrap resamples, seed {c.seed}; as `kptllm compare`): {c.verdict}.")


def paired_summary(record: str | None, against: str | None) -> dict | None:
    """What the export's JSON says of the paired difference (fractions, as the records keep them)."""
    c = _comparison(record, against)
    if c is None:
        return None
    if isinstance(c, str):
        return {"error": c}
    return {**json.loads(compare_json(c)), "how": "B - A, paired bootstrap over units, 95 % interval (kptllm compare)"}


def filters(record: str | None, category: str | None = None):
    """Category and keypoint choices of a record (keypoints of the chosen category, if any)."""
    gallery = _load(record)
    if gallery is None:
        return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
    category = category if category in gallery.categories() else None
    return (gr.update(choices=gallery.categories(), value=category),
            gr.update(choices=gallery.keypoint_names(category), value=None))


def keypoints_of(record: str | None, category: str | None):
    """The keypoint choices once a category is picked (`filters`' second half)."""
    return filters(record, category or None)[1]


def _select(record, against, order, category, keypoint, count):
    gallery = _load(record)
    if gallery is None:
        raise refuse("Pick a record.")
    other = _load(against)
    if order in PAIRED_ORDERS and other is None:
        raise refuse(f"'{ORDERS[order]}' compares two records: pick a second record (B).")
    try:
        count = int(count or DEFAULT_COUNT)
    except (TypeError, ValueError):
        raise refuse("The number of units must be a whole number.") from None
    if not 1 <= count <= MAX_COUNT:
        raise refuse(f"Show 1 to {MAX_COUNT} units at a time.")
    try:
        pairs = select(gallery, order or "worst", category or None, keypoint or None, count, other)
    except ValueError as err:
        raise refuse(str(err)) from None
    return gallery, other, pairs


def show(record: str | None, against: str | None = NONE, order: str = "worst", category: str | None = None,
         keypoint: str | None = None, count: int = DEFAULT_COUNT):
    """(gallery items [(image, caption)], status Markdown, the shown units' keys)."""
    gallery, other, pairs = _select(record, against, order, category, keypoint, count)
    items = [(image, text) for image, text in tiles_of(pairs, gallery, other, TILE_PX, keypoint or None)]
    total = sum(1 for e in gallery.entries if e.counted.any())
    status = [f"{len(pairs)} of {total} units of **{record}** ({gallery.metric}; green = right, red = wrong, "
              "white ring = ground truth" + (", A | B = the two records on the same unit" if other else "") + ")."]
    missing = sorted(set(gallery.missing) | set(other.missing if other else []))
    if missing:
        status.append(f"{len(missing)} images are not here (drawn grey): {', '.join(missing[:5])}"
                      + (" ..." if len(missing) > 5 else "") + ". Put them where the record says (or pass "
                      "`--images` to `kptllm show`).")
    return items, " ".join(status), [[a.key, b.key if b else ""] for a, b in pairs]


def detail(record: str | None, against: str | None, keypoint: str | None, keys, evt: gr.SelectData):
    """The clicked unit large, one row per counted keypoint, and (visual prompts) A's supports as marked."""
    if not keys or evt.index is None or not 0 <= evt.index < len(keys):
        raise refuse("Click a unit of the gallery.")
    gallery, other = _load(record), _load(against)
    key_a, key_b = keys[evt.index]
    by_key = {e.key: e for e in gallery.entries}
    if key_a not in by_key:
        raise refuse("The gallery changed: press Show again.")
    entry = by_key[key_a]
    image = draw(entry, LARGE_PX, keypoint or None)
    rows = pd.DataFrame(entry.as_dict()["keypoints"])
    if other is not None and key_b:
        partner = {e.key: e for e in other.entries}[key_b]
        image = pair(image, draw(partner, LARGE_PX, keypoint or None))
        theirs = pd.DataFrame(partner.as_dict()["keypoints"]).add_suffix(" (B)")
        rows = pd.concat([rows, theirs.drop(columns=["number (B)", "keypoint (B)"])], axis=1)
    rows = rows.map(lambda v: ", ".join(f"{x:g}" for x in v) if isinstance(v, list) else v)
    if entry.supports:  # visual prompts: A's supports as marked, in a column to the right
        image = pair(image, stack([draw_support(s, SUPPORT_PX, entry.names, keypoint or None) for s in entry.supports]),
                     labels=("", "support"))  # A (and B) keep the letters they have
    return image, rows


def export_selection(record, against=NONE, order="worst", category=None, keypoint=None, count=DEFAULT_COUNT):
    """The shown units as one PNG grid and its JSON (two files to download)."""
    gallery, other, pairs = _select(record, against, order, category, keypoint, count)
    if not pairs:
        raise refuse("No units match the filters: nothing to export.")
    stem = "kptllm-gallery-" + "-".join(Path(record).parts) + ("-vs-" + "-".join(Path(against).parts) if other else "")
    selection = {"order": order, "category": category or None, "keypoint": keypoint or None, "count": len(pairs)}
    png, js = export(pairs, gallery, request_folder() / f"{stem}.png", other, TILE_PX, 6, keypoint or None, selection)
    info = json.loads(js.read_text())
    for side in ("record", "against"):  # a user's record may name its model by a server path
        if side in info:
            info[side]["model"] = data.public_path(info[side].get("model"))
    if other is not None:  # what the page shows above the A | B tiles goes with them
        info["paired_difference"] = paired_summary(record, against)
    js.write_text(json.dumps(info, indent=1))
    return [str(png), str(js)]


def _categories_in(name: str | None) -> list[str]:
    """A record's categories from its record.json alone (the page is built without loading any data)."""
    record = data.read_record(f"{name}/record.json") if name else {}
    return sorted(record.get("per_category") or {})


def build(accordion: gr.Accordion | None = None) -> None:
    """The gallery's controls; with `accordion`, opening it the first time shows the default view."""
    folders = record_folders()
    first = "decision/keypointworld-visual" if "decision/keypointworld-visual" in folders else (folders[0] if folders else None)
    gr.Markdown("Every unit behind a measured number: the query object with its ground truth (white ring) and the "
                "model's answer (green within PCK@0.2, red beyond, the line is the error; semantic records write a "
                "wrong name beside the point). Pick a second record (B) to see both on the same units, with their "
                "paired difference. Click a unit to see it large with its numbers.")
    with gr.Row():
        record = gr.Dropdown(folders, value=first, label="Record (A)", elem_id="gal-record")
        against = gr.Dropdown([NONE, *folders], value=NONE, label="Second record (B), same units", elem_id="gal-against")
        order = gr.Dropdown(ORDER_CHOICES, value="worst", label="Order", elem_id="gal-order")
    with gr.Row():
        category = gr.Dropdown(_categories_in(first), value=None, label="Category", elem_id="gal-category")
        keypoint = gr.Dropdown([], label="Keypoint (sorted and drawn by it alone)", elem_id="gal-keypoint")
        count = gr.Slider(1, MAX_COUNT, value=DEFAULT_COUNT, step=1, label="Units", elem_id="gal-count")
    with gr.Row():
        run = gr.Button("Show", variant="primary", elem_id="gal-show")
        save = gr.Button("Export shown units (PNG grid + JSON)", elem_id="gal-export")
    status = gr.Markdown(elem_id="gal-status")
    paired = gr.Markdown(elem_id="gal-paired")
    # JPEG: Gradio saves every returned tile; its default WebP took 1.8 s for 60 tiles on 2 cores
    tiles = gr.Gallery(label="Units", columns=6, height=620, object_fit="contain", allow_preview=False, format="jpeg",
                       elem_id="gal-tiles")
    keys = gr.State([])
    with gr.Row():
        large = gr.Image(label="The clicked unit (visual prompts: its support at the right, marks numbered as in the "
                               "table)", type="pil", interactive=False, elem_id="gal-large")
        numbers = gr.Dataframe(label="Its keypoints (pixels of the query image)", interactive=False, wrap=True,
                               elem_id="gal-numbers")
    files = gr.File(label="Export", file_count="multiple", elem_id="gal-files")
    inputs = [record, against, order, category, keypoint, count]
    record.change(filters, [record], [category, keypoint], queue=False, api_visibility="private")
    category.change(keypoints_of, [record, category], [keypoint], queue=False, api_visibility="private")
    run.click(show, inputs, [tiles, status, keys], api_name="benchmarks_gallery").then(
        paired_difference, [record, against], [paired], api_name="benchmarks_paired_difference")
    if accordion is not None:
        accordion.expand(show, inputs, [tiles, status, keys], api_visibility="private", trigger_mode="once").then(
            paired_difference, [record, against], [paired], api_visibility="private")
    tiles.select(detail, [record, against, keypoint, keys], [large, numbers], api_visibility="private")
    save.click(export_selection, inputs, [files], api_name="benchmarks_gallery_export")
