"""How long the Benchmarks tab's gallery takes to appear: 60 units of a shipped record through gradio_client.

    PYTHONPATH=. python -m benchmarks.gallery_speed [--record decision/keypointworld-visual] [--repeats 5]
    PYTHONPATH=. python -m benchmarks.gallery_speed --against decision/keypointworld-offcentre-visual   # A | B

Rows, all in one process, the app on 127.0.0.1 (embedded model loaded, as on Spaces):
  first view   the first request of a new server (once): the records' units loaded, and with a fresh cache
               (default) any KeypointWorld images the record's folder lacks made again; --cache reuses a folder
  end to end   `/benchmarks_gallery` with 60 units, data on disk, until the answer with the tiles' URLs is in
               (the browser then fetches the 60 JPEG tiles, ~10 KB each, in parallel; median of --repeats)
  handler      the same request's handler called directly (no HTTP, no image encoding)
  tiles only   drawing the 60 tiles (`evaluation.gallery_render.tiles_of`)
With --against (A | B, ordered by loss): both records' units side by side, and every row includes the paired
difference the page asks for next (`/benchmarks_paired_difference`; the first view computes the bootstrap).
Ratios are against "tiles only". Targets: end to end <= 3 s on a 2-core CPU once the images exist (issue 20);
the first A | B view <= 3 s (issue 29).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _timed(call, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", default="decision/keypointworld-visual")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--units", type=int, default=60)
    parser.add_argument("--against", default=None, help="a second record (B) on the same units: the A | B gallery")
    parser.add_argument("--cache", default=None, help="the data cache to use (default: a fresh one, so the first view "
                        "makes the data; run twice with the same folder for a first view in a new process with the "
                        "images on disk)")
    args = parser.parse_args(argv)
    os.environ["KPTLLM_CACHE_DIR"] = args.cache or tempfile.mkdtemp(prefix="kptllm-gallery-bench-")

    from gradio_client import Client

    from demo.app import build_demo
    from demo.benchmarks import RESULTS_DIR
    from demo.model import load_model
    from demo.tabs import gallery as tab
    from evaluation.gallery import load_gallery, select
    from evaluation.gallery_render import tiles_of

    demo = build_demo(load_model(None, device="cpu"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    order = "loss" if args.against else "worst"
    request = (args.record, args.against or tab.NONE, order, None, None, args.units)

    def view():  # what the page asks for: the tiles, then (A | B) the paired difference
        client.predict(*request, api_name="/benchmarks_gallery")
        if args.against:
            client.predict(args.record, args.against, api_name="/benchmarks_paired_difference")

    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)  # a browser fetches them
        first = _timed(view, 1)[0]
        e2e = _timed(view, args.repeats)
        handler = _timed(lambda: tab.show(*request), args.repeats)
        gallery = load_gallery(RESULTS_DIR / args.record)
        other = load_gallery(RESULTS_DIR / args.against) if args.against else None
        pairs = select(gallery, order, limit=args.units, against=other)
        tiles = _timed(lambda: tiles_of(pairs, gallery, other, size=tab.TILE_PX), args.repeats)
    finally:
        demo.close()
    base = statistics.median(tiles)
    rows = [("first view (a new server)", first), ("end to end", statistics.median(e2e)),
            ("handler", statistics.median(handler)), ("tiles only", base)]
    print(f"{args.units} units of {args.record}" + (f" | {args.against}" if args.against else "") + f", {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':32} {'seconds':>8} {'x tiles':>8}")
    for name, seconds in rows:
        print(f"{name:32} {seconds:8.3f} {seconds / base:8.1f}")
    return dict(rows)


if __name__ == "__main__":
    main()
