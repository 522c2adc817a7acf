"""The Gradio app: `build_demo(loaded)` and `main()` (what `python app.py` runs).

    python app.py [--model PATH_OR_ID] [--host H] [--port P] [--share]      # or KPTLLM_MODEL=...
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from .export import export_root
from .model import LoadedModel, load_model
from .tabs import benchmarks, semantic, text, visual, wild

QUEUE_SIZE = 64  # waiting requests beyond this are refused ("queue full") instead of piling up
MODEL_CONCURRENCY = 1  # the model handles one request at a time (its lock makes that so anyway)
# Gradio keeps every output file (annotated images, downloads) in its cache: hourly, drop those older than a
# day (a shared deep link older than that loses its images)
GRADIO_CACHE_PRUNE = (3600, 86400)

INTRO = """# KptLLM++ keypoint demo
Three keypoint tasks with one model: **(a)** click a point and ask what keypoint it is, **(b)** mark keypoints
on 1-5 example images and find them on another image, **(c)** name keypoints and find them. The **Benchmarks**
tab puts the paper's numbers next to the numbers we measured."""


# Gradio 6's gallery stretches a lone thumbnail over the whole row: keep the marked supports a strip of five
CSS = "#vis-marked .grid-container { grid-template-columns: repeat(5, minmax(0, 1fr)) !important; }"


def build_demo(loaded: LoadedModel, detector=None, detector_note: str | None = None, share_button: bool | None = None,
               detector_source: str | None = None) -> gr.Blocks:
    """The whole app around one loaded model. `detector`: a `kptllm.detection.GroundingDinoDetector` or None;
    `detector_source`: the folder / hub id asked for (what the In-the-wild tab's *Download detector* fetches)."""
    if share_button is None:
        share_button = bool(os.environ.get("SPACE_ID"))
    with gr.Blocks(title="KptLLM++ keypoint demo", delete_cache=GRADIO_CACHE_PRUNE) as demo:
        with gr.Row():
            gr.Markdown(INTRO)
            if share_button:  # deep links need a public URL (Spaces or --share)
                gr.DeepLinkButton(size="sm", scale=0, min_width=160)
        gr.Markdown(loaded.summary, elem_id="model-summary")
        with gr.Tabs():
            with gr.Tab("Keypoint semantics (a)", id="semantic"):
                semantic.build(loaded)
            with gr.Tab("Visual prompt (b)", id="visual"):
                visual.build(loaded)
            with gr.Tab("Text prompt (c)", id="text"):
                text.build(loaded)
            with gr.Tab("In the wild", id="wild"):
                wild.build(loaded, detector, detector_note, detector_source)
            with gr.Tab("Benchmarks", id="benchmarks"):
                benchmarks.build()
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=MODEL_CONCURRENCY)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="KptLLM++ Gradio demo")
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: $KPTLLM_MODEL, else the embedded KeypointWorld model)")
    parser.add_argument("--detector", default=None, help="GroundingDINO folder or hub id for the In-the-wild tab "
                        f"(default: $KPTLLM_DETECTOR, else the local copy of {wild.DEFAULT_DETECTOR} if cached)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when available)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    loaded = load_model(args.model, device=args.device)
    source = args.detector or os.environ.get("KPTLLM_DETECTOR")
    detector, note = wild.load_local_detector(source, loaded.predictor.device)
    demo = build_demo(loaded, detector, note, share_button=args.share or None, detector_source=source)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, theme=gr.themes.Soft(), **launch_options())


def launch_options() -> dict:
    """`Blocks.launch` settings the app needs wherever it runs (tests launch with these too).

    `allowed_paths`: Gradio only takes returned files from the working directory or the system temp
    folder, and `$KPTLLM_EXPORT_DIR` may be neither."""
    return {"show_error": True, "max_file_size": "50mb", "css": CSS, "allowed_paths": [str(export_root())]}
