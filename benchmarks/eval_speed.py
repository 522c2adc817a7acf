"""Evaluation throughput: the runner one unit at a time (`--batch 1`) vs batched (both through the engine).

    python -m benchmarks.eval_speed [--batch 16] [--limit 24] [--model PATH] [--device cpu] [--json]

Two workloads on the real test images (tests/data/real/coco): COCO-style instances (17 text-prompted
keypoints each; the 12 labelled people repeated to `--limit`) and MP-100-style 1-shot episodes (15 queries per episode, visual prompts). Each runs
twice into fresh folders, `--batch 1` then `--batch N`, in this process; the table gives queries
(work units) per second and keypoints per second of both, the ratio, and whether the two records'
metrics, counts and predictions are identical.

`--warmup` (default on a GPU) first runs each timed configuration once untimed (batch 1 on two units):
kernel selection and the CUDA-graph captures of each batch shape are one-off costs that a full benchmark
(thousands of units, a few shapes) pays once, so the timed pass measures the steady state. At paper size
one batch's static state is tens of GB and only the newest is kept beyond `KPTLLM_STATIC_CACHE_GB`: let
`--batch` divide the unit count, so that every batch has one shape. `--episodes E` sets the MP-100
workload's size (15 queries per episode).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "real"
COCO_JSON = REAL / "coco" / "test_coco.json"
SAME = ("metrics", "counts", "per_category", "per_keypoint")


def mp100_like(out: Path) -> Path:
    """An MP-100-style file (20 person instances of one category) on the COCO test images."""
    data = json.loads(COCO_JSON.read_text())
    people = [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    anns = [dict(people[i % len(people)], id=1000 + i) for i in range(20)]
    category = dict(data["categories"][0], skeleton=[[a - 1, b - 1] for a, b in data["categories"][0]["skeleton"]])
    path = out / "mp100_split1_test.json"
    path.write_text(json.dumps({"images": data["images"], "annotations": anns, "categories": [category]}))
    return path


def coco_like(out: Path, count: int) -> Path:
    """The COCO test file with its 12 labelled people repeated to `count` instances (new ids, same images)."""
    data = json.loads(COCO_JSON.read_text())
    people = [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    anns = [dict(people[i % len(people)], id=2000 + i) for i in range(count)]
    path = out / "coco_like.json"
    path.write_text(json.dumps({**data, "annotations": anns}))
    return path


def _predictor(model: str | None, device: str, max_new_tokens: int, size: str = "tiny", dtype=torch.float32):
    from kptllm import KeypointPredictor

    if model is not None:
        return KeypointPredictor.from_pretrained(model, device=device, dtype=dtype, max_new_tokens=max_new_tokens)
    if size != "tiny":
        from benchmarks.bench_batching import build_predictor

        from kptllm.inference import merge_lora

        predictor = build_predictor(size, device, dtype)
        merge_lora(predictor.model)  # as KeypointPredictor.from_pretrained loads a model for inference
        predictor.max_new_tokens = max_new_tokens
        return predictor
    from kptllm.build import build_tiny

    tiny, processor = build_tiny(seed=0)
    return KeypointPredictor(tiny.to(device), processor, max_new_tokens=max_new_tokens)


def run(batch: int = 16, limit: int = 24, model: str | None = None, device: str = "cpu",
        max_new_tokens: int = 32, size: str = "tiny", dtype=torch.float32, workloads=("coco", "mp100"),
        skip_one: bool = False, warmup: bool = False, episodes: int = 2) -> list[dict]:
    """One row per workload: seconds and units/s of `--batch 1` and `--batch N`, ratio, identical records."""
    from evaluation.runner import run_benchmark

    predictor = _predictor(model, device, max_new_tokens, size, dtype)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        known = {"coco": ("coco instances", "coco", coco_like(tmp, limit), {}),
                 "mp100": ("mp100 1-shot episodes", "mp100", mp100_like(tmp), {"shots": 1, "episodes": episodes})}
        for name, bench, annotation_file, extra in (known[w] for w in workloads):
            row = {"workload": name}
            records = {}
            sizes = (("batched", batch),) if skip_one else (("one", 1), ("batched", batch))
            for label, size in sizes if warmup else ():  # batch 1 needs its one shape, batch N all of its shapes
                run_benchmark(model or "tiny", bench, str(annotation_file), str(REAL / "coco"), str(tmp / f"{bench}-warmup-{label}"),
                              limit=limit if size > 1 else 2, chunk_size=8, predictor=predictor, progress=False,
                              batch=size, **extra)
            for label, size in sizes:
                out = tmp / f"{bench}-{label}"
                tic = time.perf_counter()
                records[label] = run_benchmark(model or "tiny", bench, str(annotation_file), str(REAL / "coco"), str(out),
                                               limit=limit, chunk_size=8, predictor=predictor, progress=False,
                                               batch=size, **extra)
                seconds = time.perf_counter() - tic
                row[f"{label}_s"] = seconds
                row[f"{label}_qps"] = records[label]["units"] / seconds
                row["predictions_" + label] = json.loads((out / "predictions.json").read_text())
            row["units"] = records["batched"]["units"]
            if skip_one:
                row.pop("predictions_batched")
            else:
                row["ratio"] = row["one_s"] / row["batched_s"]
                row["identical"] = (all(records["one"].get(k) == records["batched"].get(k) for k in SAME)
                                    and row.pop("predictions_one") == row.pop("predictions_batched"))
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--limit", type=int, default=24, help="work units per workload")
    parser.add_argument("--model", help="a saved checkpoint (default: the tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--size", choices=["tiny", "small", "paper"], default="tiny",
                        help="random-weight model size when no --model is given")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--workloads", nargs="+", choices=["coco", "mp100"], default=["coco", "mp100"])
    parser.add_argument("--skip-one", action="store_true", help="time only --batch N (skip the batch-1 baseline)")
    parser.add_argument("--episodes", type=int, default=2, help="MP-100 episodes (15 queries each)")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                        help="one untimed batched pass first (default: on for a GPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.batch, args.limit, args.model, args.device, args.max_new_tokens, args.size,
               getattr(torch, args.dtype), args.workloads, args.skip_one, args.warmup, args.episodes)
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"model={args.model or args.size} dtype={args.dtype} device={device} torch={torch.__version__} batch={args.batch} "
          f"limit={args.limit} max_new_tokens={args.max_new_tokens} warmup={args.warmup}")
    print(f"{'workload':<24}{'units':>6}{'batch 1 q/s':>13}{f'batch {args.batch} q/s':>15}{'ratio':>8}{'identical':>11}")
    for row in rows:
        one = f"{row['one_qps']:.2f}" if "one_qps" in row else "-"
        ratio = f"{row['ratio']:.1f}x" if "ratio" in row else "-"
        print(f"{row['workload']:<24}{row['units']:>6}{one:>13}{row['batched_qps']:>15.2f}"
              f"{ratio:>8}{str(row.get('identical', '-')):>11}")


if __name__ == "__main__":
    main()
