"""End-to-end latency of the demo: one 17-keypoint text-prompt request through gradio_client.

    PYTHONPATH=. python -m benchmarks.demo_latency [--repeats 5] [--model PATH]

Starts the app on 127.0.0.1 (embedded model by default), warms it up once, then times `--repeats`
requests of `/detect_text` (KeypointWorld person, its box, the 17 person keypoints) and, for comparison,
the same `set_image` + `detect` called on the predictor directly. Target: median <= 1.5 s on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "examples" / "keypointworld_person.jpg"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)

    import torch
    from gradio_client import Client, handle_file

    from demo.app import build_demo
    from demo.model import load_model

    meta = json.loads((IMAGE.parent / "keypointworld.json").read_text())[IMAGE.name]
    names, bbox = meta["names"], tuple(meta["bbox"])
    loaded = load_model(args.model)
    demo = build_demo(loaded)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        request = (handle_file(str(IMAGE)), "KeypointWorld person (17)", "\n".join(names), False,
                   ",".join(f"{v:g}" for v in bbox), 0.05)
        client.predict(*request, api_name="/detect_text")  # warm-up
        e2e, direct = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            client.predict(*request, api_name="/detect_text")
            e2e.append(time.perf_counter() - t)
            t = time.perf_counter()
            with loaded.lock:
                loaded.predictor.set_image(str(IMAGE), bbox=bbox)
                loaded.predictor.detect(names)
            direct.append(time.perf_counter() - t)
    finally:
        demo.close()
    report = {"keypoints": len(names), "repeats": args.repeats, "device": str(loaded.predictor.device),
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "load_average": os.getloadavg()[0],
              "e2e_median_s": round(statistics.median(e2e), 3), "e2e_min_s": round(min(e2e), 3),
              "direct_median_s": round(statistics.median(direct), 3), "direct_min_s": round(min(direct), 3),
              "target_s": 1.5}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
