"""In the wild: the keypoints of every object of one photo, one object at a time vs all in one call.

    PYTHONPATH=. python -m benchmarks.wild_speed [--objects 10] [--repeats 3] [--model PATH] [--device cuda]

The embedded model, the KeypointWorld person example and `--objects` boxes around its person (shifted and
scaled copies of its box), the 17 person keypoints in each. Baseline, in the same process: what the demo did
before, `set_image(image, box)` + `detect(names)` per box. Measured: `detect_objects(image, boxes, names)`.
The answers must be the same (checked). Target (issue 21): at least 3x for 10 objects x 17 keypoints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "examples" / "keypointworld_person.jpg"


def boxes_around(box, count: int) -> list[tuple[float, float, float, float]]:
    x, y, w, h = box
    return [(x + (k % 3 - 1) * 0.06 * w, y + (k // 3 % 3 - 1) * 0.06 * h, w * (1 + 0.03 * k), h * (1 + 0.03 * k))
            for k in range(count)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32 keeps the two columns' answers comparable")
    args = parser.parse_args(argv)

    import torch

    from demo.model import resolve_model
    from kptllm import KeypointPredictor

    predictor = KeypointPredictor.from_pretrained(resolve_model(args.model), device=args.device,
                                                  dtype=getattr(torch, args.dtype))
    cuda = torch.device(args.device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    meta = json.loads((IMAGE.parent / "keypointworld.json").read_text())[IMAGE.name]
    names, boxes = meta["names"], boxes_around(meta["bbox"], args.objects)

    def one_at_a_time():
        out = []
        for box in boxes:
            predictor.set_image(str(IMAGE), bbox=box)
            out.append(predictor.detect(names))
        return out

    def together():
        return predictor.detect_objects(str(IMAGE), boxes, names)

    assert [[r.raw for r in rs] for rs in one_at_a_time()] == [[r.raw for r in rs] for rs in together()], \
        "the batched answers differ from one object at a time"
    timings = {}
    for label, call in (("one object at a time", one_at_a_time), ("all objects in one call", together)):
        times = []
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
        timings[label] = statistics.median(times)
    base = timings["one object at a time"]
    where = (torch.cuda.get_device_name() if cuda else
             f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    print(f"{args.objects} objects x {len(names)} keypoints, embedded model, {args.dtype}, {where}, load average "
          f"{os.getloadavg()[0]:.1f}; same answers: yes")
    print(f"{'':28} {'median s':>9} {'speed-up':>9}")
    for label, seconds in timings.items():
        print(f"{label:28} {seconds:9.3f} {base / seconds:8.2f}x")
    return timings


if __name__ == "__main__":
    main()
