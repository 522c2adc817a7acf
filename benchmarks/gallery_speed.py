"""How long the Benchmarks tab's gallery takes to appear: 60 units of a shipped record through gradio_client.

    PYTHONPATH=. python -m benchmarks.gallery_speed [--record decision/keypointworld-visual] [--repeats 5]

Rows, all in one process, the app on 127.0.0.1 (embedded model loaded, as on Spaces):
  first view   a fresh cache: the record's KeypointWorld data made again, then the gallery (once)
  end to end   `/benchmarks_gallery` with 60 units, data on disk, until the answer with the tiles' URLs is in
               (the browser then fetches the 60 JPEG tiles, ~10 KB each, in parallel; median of --repeats)
  handler      the same request's handler called directly (no HTTP, no image encoding)
  tiles only   drawing the 60 tiles (`evaluation.gallery_render.tiles_of`)
Ratios are against "tiles only". Target (issue 20): end to end <= 3 s on a 2-core CPU once the images exist.
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
    args = parser.parse_args(argv)
    os.environ["KPTLLM_CACHE_DIR"] = tempfile.mkdtemp(prefix="kptllm-gallery-bench-")  # the first view makes the data

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
    request = (args.record, tab.NONE, "worst", None, None, args.units)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)  # a browser fetches them
        first = _timed(lambda: client.predict(*request, api_name="/benchmarks_gallery"), 1)[0]
        e2e = _timed(lambda: client.predict(*request, api_name="/benchmarks_gallery"), args.repeats)
        handler = _timed(lambda: tab.show(*request), args.repeats)
        gallery = load_gallery(RESULTS_DIR / args.record)
        pairs = select(gallery, "worst", limit=args.units)
        tiles = _timed(lambda: tiles_of(pairs, gallery, size=tab.TILE_PX), args.repeats)
    finally:
        demo.close()
    base = statistics.median(tiles)
    rows = [("first view (data made again)", first), ("end to end", statistics.median(e2e)),
            ("handler", statistics.median(handler)), ("tiles only", base)]
    print(f"{args.units} units of {args.record}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':32} {'seconds':>8} {'x tiles':>8}")
    for name, seconds in rows:
        print(f"{name:32} {seconds:8.3f} {seconds / base:8.1f}")
    return dict(rows)


if __name__ == "__main__":
    main()
