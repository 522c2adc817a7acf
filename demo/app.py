"""The Gradio app: `build_demo(loaded)` and `main()` (what `python app.py` runs).

    python app.py [--model PATH_OR_ID] [--host H] [--port P] [--share]      # or KPTLLM_MODEL=...
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys

import gradio as gr

from . import clickbox
from .boxes import Detectors, load_embedded_detector
from .export import export_root
from .model import LoadedModel, is_embedded, load_model
from .tabs import benchmarks, semantic, text, visual, wild

# The queue, sized on purpose (docs/BENCHMARKS.md "A crowd"): one model worker answers the model's requests one at
# a time (its lock makes that so anyway); under a crowd a mixed request takes ~0.75 s of it on 2 CPU cores, so
# the last of QUEUE_SIZE waiting waits ~30 s. 30 visitors at once fit (each waits for its answer before asking
# again). Beyond QUEUE_SIZE a request is answered at once with Gradio's "This application is currently busy.
# Please try again." (HTTP 503; gradio_client raises QueueError "Queue is full") instead of piling up.
# $KPTLLM_QUEUE_SIZE overrides it (a Space on a GPU serves faster and can hold more).
QUEUE_SIZE = 40
MODEL_CONCURRENCY = 1
# Gradio keeps every output file (annotated images, downloads) in its cache: hourly, drop those older than a
# day (a shared deep link older than that loses its images)
GRADIO_CACHE_PRUNE = (3600, 86400)

INTRO = """# KptLLM++ keypoint demo
Three keypoint tasks with one model: **(a)** click a point and ask what keypoint it is, **(b)** mark keypoints
on 1-5 example images and find them on another image, **(c)** name keypoints and find them. The **Benchmarks**
tab puts the paper's numbers next to the numbers we measured."""



def build_demo(loaded: LoadedModel, detectors: Detectors | None = None, share_button: bool | None = None,
               queue_size: int | None = None) -> gr.Blocks:
    """The whole app around one loaded model. `detectors`: the embedded detector and GroundingDINO (either may
    be None; `default_detectors` when not given) — they find boxes for requests without one, and In the wild.
    `queue_size`: requests that may wait (default `queue_size_from_env()`)."""
    if detectors is None:
        detectors = default_detectors(loaded)
    if share_button is None:
        share_button = bool(os.environ.get("SPACE_ID"))
    with gr.Blocks(title="KptLLM++ keypoint demo", delete_cache=GRADIO_CACHE_PRUNE) as demo:
        with gr.Row():
            gr.Markdown(INTRO)
            if share_button:  # deep links need a public URL (Spaces or --share)
                gr.DeepLinkButton(size="sm", scale=0, min_width=160)
        gr.Markdown(loaded.summary, elem_id="model-summary")
        if loaded.card:  # the header's "model card" link lands here
            with gr.Accordion("Model card", open=False, elem_id="model-card"):
                gr.Markdown(loaded.card)
        with gr.Tabs(elem_id="tabs"):
            pages = []
            with gr.Tab("Keypoint semantics (a)", id="semantic") as page:
                semantic.build(loaded, detectors)
            pages.append(page)
            with gr.Tab("Visual prompt (b)", id="visual") as page:
                visual.build(loaded, detectors)
            pages.append(page)
            with gr.Tab("Text prompt (c)", id="text") as page:
                text.build(loaded, detectors)
            pages.append(page)
            with gr.Tab("In the wild", id="wild") as page:
                wild.build(loaded, detectors)
            pages.append(page)
            with gr.Tab("Benchmarks", id="benchmarks") as page:
                benchmarks.build()
            pages.append(page)
        # the session remembers the open tab in a hidden field (updated by the server, so a deep link carries
        # it); on load the page opens that tab. Updating `tabs` itself from the server re-renders the tabs.
        open_tab = gr.Textbox("", visible=False, elem_id="open-tab")
        for page in pages:
            page.select(_opened(page.id), None, open_tab, queue=False, api_visibility="private")
        demo.load(None, open_tab, None, js=OPEN_TAB_JS)
        demo.load(None, None, None, js=clickbox.drag_script())  # boxes drawn by dragging on the images
    demo.queue(max_size=queue_size or queue_size_from_env(), default_concurrency_limit=MODEL_CONCURRENCY)
    return demo


def queue_size_from_env() -> int:
    """$KPTLLM_QUEUE_SIZE (a whole number >= 1), else QUEUE_SIZE."""
    text = os.environ.get("KPTLLM_QUEUE_SIZE", "").strip()
    if not text:
        return QUEUE_SIZE
    if not text.isdigit() or int(text) < 1:
        raise SystemExit(f"KPTLLM_QUEUE_SIZE must be a whole number >= 1, got {text!r}")
    return int(text)


def default_detectors(loaded: LoadedModel, open_source: str | None = None) -> Detectors:
    """The embedded detector (from assets/) and GroundingDINO from local files only (never the network)."""
    embedded, _ = load_embedded_detector(loaded.predictor.device)
    open_vocabulary, note = wild.load_local_detector(open_source, loaded.predictor.device)
    return Detectors(embedded, open_vocabulary, note, open_source, prefer_embedded=is_embedded(loaded))


def _opened(tab_id: str):
    def opened():
        return tab_id
    return opened


# The tab buttons may not be rendered yet when `load` fires on a busy machine: try every 100 ms for 20 s
# until the tab reports itself selected.
OPEN_TAB_JS = """(tab) => {
  if (tab) {
    let tries = 0;
    const open = () => {
      const button = document.querySelector(`#tabs button[role=tab][data-tab-id="${tab}"]`);
      if (button && button.getAttribute("aria-selected") === "true") return;
      button?.click();
      if (++tries < 200) setTimeout(open, 100);
    };
    open();
  }
  return [];
}"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="KptLLM++ Gradio demo")
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: $KPTLLM_MODEL, else the embedded KeypointWorld model)")
    parser.add_argument("--detector", default=None, help="GroundingDINO folder or hub id, beside the embedded detector "
                        f"(default: $KPTLLM_DETECTOR, else the local copy of {wild.DEFAULT_DETECTOR} if cached)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when available)")
    return parser.parse_args(argv)


def log_refusals() -> None:
    """One line per refused request (`demo.inputs.refuse`) on stderr; tracebacks only for real faults."""
    logger = logging.getLogger("kptllm.demo")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s kptllm.demo %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


MALLOC_ARENAS = 2  # glibc's arenas for the server's threads (docs/BENCHMARKS.md "A crowd": 8 per core grew RSS)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """glibc's M_ARENA_MAX, as MALLOC_ARENA_MAX would set it, for the threads made from now on: a server with
    dozens of handler threads otherwise keeps ~8 malloc arenas per core (measured: +234 MB after 800 crowd
    requests, +59 MB with 2). An explicit MALLOC_ARENA_MAX wins; elsewhere than glibc this does nothing."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8: M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):
        return False


def main(argv=None) -> None:
    args = parse_args(argv)
    limit_malloc_arenas()
    log_refusals()
    loaded = load_model(args.model, device=args.device)
    detectors = default_detectors(loaded, args.detector or os.environ.get("KPTLLM_DETECTOR"))
    demo = build_demo(loaded, detectors, share_button=args.share or None)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, theme=gr.themes.Soft(), **launch_options())


def launch_options() -> dict:
    """`Blocks.launch` settings the app needs wherever it runs (tests launch with these too).

    `allowed_paths`: Gradio only takes returned files from the working directory or the system temp
    folder, and `$KPTLLM_EXPORT_DIR` may be neither. `css`: input images fitted to their frames."""
    return {"show_error": True, "max_file_size": "50mb", "allowed_paths": [str(export_root())],
            "css": clickbox.INPUT_CSS}
