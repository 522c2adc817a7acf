"""The resumable benchmark runner behind `kptllm eval`.

    OUT/run.json                 the run's settings (a rerun with other settings into OUT is refused)
    OUT/chunks/00000.json ...    finished chunks of work units (written atomically)
    OUT/predictions.json         raw predictions as COCO keypoint results
    OUT/record.json              the result record (metrics, counts, breakdowns, provenance)

Killed half-way and started again with the same settings, it reuses the finished chunks; greedy
decoding makes the redone work identical, so the final numbers are the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from tqdm.auto import tqdm

from .benchmarks import GENERIC, Benchmark, build_benchmark, coco_results, predict, score, unit_key
from .checks import cached_file_sha256, check_keypoint_names, check_metric_libraries, check_model, file_sha256
from .checks import missing_images_message
from .data import KeypointDataset

RECORD_VERSION = 2  # 2: name, units_evaluated/units_total, images_missing, annotations_label


def checkpoint_hash(model: str) -> str | None:
    """sha256 over the weight files of a local checkpoint (None for a hub id); per-file hashes are cached."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(cached_file_sha256(path).encode())
    return digest.hexdigest()


def default_name(model: str, checkpoint_sha256: str | None) -> str:
    """The run's method name: the model folder's name (or hub id) plus the checkpoint's short hash."""
    base = Path(str(model).rstrip("/")).name or str(model)
    if not Path(model).is_dir():
        base = str(model)
    return f"{base} {checkpoint_sha256[:8]}" if checkpoint_sha256 else base


def annotations_label(path: str, dataset: KeypointDataset, sha256: str) -> str:
    """The annotation file's identity: name, instance count and short hash."""
    return f"{Path(path).name} ({len(dataset.annotations)} instances, sha256 {sha256[:8]})"


def code_version() -> str:
    import kptllm

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"kptllm {kptllm.__version__}" + (f" ({commit})" if commit else "")


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores (torch {torch.__version__})"


def load_boxes(path: str) -> list[dict]:
    """COCO detection results: a list of {"image_id", "category_id", "bbox": xywh, "score"}."""
    try:
        boxes = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"boxes file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read boxes file {path}: {err}") from None
    if not isinstance(boxes, list) or not all(isinstance(b, dict) and "image_id" in b and len(b.get("bbox", ())) == 4
                                              for b in boxes):
        raise ValueError(f"{path} is not a list of COCO detection results (image_id, bbox, score)")
    return boxes


def catalog_sigmas(key: str):
    from kptllm import catalog

    return catalog.get(key).sigmas


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def run_benchmark(model: str, benchmark: str, annotations: str, images: str, out: str, task: str | None = None,
                  shots: int = 1, episodes: int = 200, seed: int = 1, limit: int | None = None,
                  chunk_size: int = 32, predictor=None, progress: bool = True, allow_missing: bool = False,
                  name: str | None = None, supercategory: str | None = None, boxes: str | None = None) -> dict:
    """Run (or resume) a benchmark and return its result record (also written to OUT/record.json).

    `predictor` may be passed in (an already loaded `KeypointPredictor`); otherwise it is loaded from `model`.
    Everything is checked before OUT/run.json is written and before the model loads (see `evaluation.checks`);
    work units whose images are missing are refused unless `allow_missing`.
    """
    started = time.perf_counter()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if predictor is None:
        check_model(str(model))
    dataset = KeypointDataset.load(annotations, image_root=images)
    if benchmark in GENERIC:
        check_keypoint_names(benchmark, dataset, GENERIC[benchmark][0])
    detections = load_boxes(boxes) if boxes else None
    bench: Benchmark = build_benchmark(benchmark, dataset, task, shots, episodes, seed, supercategory=supercategory,
                                       boxes=detections)
    total = len(bench.units) + len(bench.missing)
    if bench.missing and not allow_missing:
        raise ValueError(missing_images_message(bench.missing, total, images, bench.missing_images))
    check_metric_libraries(benchmark in GENERIC and bench.task == "text" and
                           catalog_sigmas(GENERIC[benchmark][0]) is not None)
    units = bench.units[:limit] if limit else bench.units
    bench.units = units
    if not units:
        raise ValueError(f"benchmark {benchmark} has no work units in {annotations} (are the images under {images}?)")
    out_dir = Path(out)
    (out_dir / "chunks").mkdir(parents=True, exist_ok=True)
    annotations_sha256 = file_sha256(Path(annotations))
    settings = {"model": str(model), "checkpoint_sha256": checkpoint_hash(model), "benchmark": benchmark,
                "task": bench.task, "shots": shots if bench.task == "visual" else None, "episodes": episodes,
                "seed": seed, "limit": limit, "chunk_size": chunk_size,
                "annotations_sha256": annotations_sha256, "units": len(units)}
    if allow_missing:
        settings["allow_missing"] = True
    if supercategory:
        settings["supercategory"] = supercategory
    if boxes:
        settings["boxes_sha256"] = file_sha256(Path(boxes))
    run_file = out_dir / "run.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise ValueError(f"{out_dir} holds a run with other settings ({', '.join(changed)}); use another --out")
    else:
        _write_json(run_file, settings)

    if predictor is None:
        from kptllm import KeypointPredictor

        predictor = KeypointPredictor.from_pretrained(model)
    chunks = [units[i:i + chunk_size] for i in range(0, len(units), chunk_size)]
    predictions, elapsed, reused = [], 0.0, 0
    bar = tqdm(total=len(units), desc=f"{benchmark}/{bench.task}", disable=not progress, unit="unit")
    for number, chunk in enumerate(chunks):
        path = out_dir / "chunks" / f"{number:05d}.json"
        keys = [unit_key(u) for u in chunk]
        if path.exists():
            saved = json.loads(path.read_text())
            if [p["key"] for p in saved["predictions"]] == keys:
                predictions += saved["predictions"]
                elapsed += saved["elapsed_s"]
                reused += 1
                bar.update(len(chunk))
                continue
        tic = time.perf_counter()
        done = []
        for unit in chunk:
            done.append(predict(bench, predictor, unit))
            bar.update(1)
        seconds = time.perf_counter() - tic
        _write_json(path, {"predictions": done, "elapsed_s": seconds})
        predictions += done
        elapsed += seconds
    bar.close()

    scored = score(bench, predictions)
    _write_json(out_dir / "predictions.json", coco_results(bench, predictions))
    record = {
        "record_version": RECORD_VERSION,
        "name": name or default_name(str(model), settings["checkpoint_sha256"]),
        "model": str(model), "checkpoint_sha256": settings["checkpoint_sha256"],
        "benchmark": benchmark, "protocol": bench.protocol, "task": bench.task,
        "shots": settings["shots"], "limit": limit, "annotations": str(annotations),
        "annotations_sha256": settings["annotations_sha256"],
        "annotations_label": annotations_label(annotations, dataset, annotations_sha256),
        "supercategory": supercategory, "boxes": str(boxes) if boxes else None,
        "boxes_sha256": settings.get("boxes_sha256"),
        **scored,
        "units": len(units), "units_evaluated": len(units), "units_total": total,
        "images_missing": len(bench.missing_images), "chunks": len(chunks), "chunks_reused": reused,
        "elapsed_s": elapsed, "wall_s_this_run": time.perf_counter() - started,
        "hardware": hardware(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
    }
    _write_json(out_dir / "record.json", record)
    return record
