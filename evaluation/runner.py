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
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .benchmarks import (GENERIC, Benchmark, build_benchmark, categories_covered, coco_results, finish_unit, plan_unit,
                         score, unit_key)
from .checks import cached_file_sha256, check_keypoint_names, check_metric_libraries, check_model, file_sha256
from .checks import missing_images_message
from .data import KeypointDataset
from .data.keypointworld import description_version
from .data.keypointworld_sets import set_of
from .data.semantic_labels import load as load_semantic_labels
from .detected_boxes import BOX_THRESHOLD, cached_detections, detector_label, detector_sha256, match_objects

RECORD_VERSION = 4  # 2: name, units_evaluated/units_total, images_missing, annotations_label; 3: images, episodes, seed, constrained, semantic_labels_file (+ annotations_description, optional); 4: set (KeypointWorld sets)


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
    from kptllm.protocols import catalog

    return catalog.get(key).sigmas


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _compute(bench: Benchmark, predictor, chunks, todo, paths, batch: int, bar) -> None:
    """Predict the chunks in `todo` through the predictor's engine, `batch` units per decoding batch (1 = one
    unit at a time), writing each chunk as it finishes; the next batch's images load in a background thread.

    A chunk's elapsed_s is the wall time of the batches that finished it (batches may span chunks).
    """
    from concurrent.futures import ThreadPoolExecutor

    from kptllm.decoding.engine import SupportCache

    engine = predictor.engine
    units = [(number, unit) for number in todo for unit in chunks[number]]
    batches = [units[i:i + batch] for i in range(0, len(units), batch)]
    supports = {}  # support key -> prepared support images (an episode's supports are loaded once)

    def load(items):
        plans = [plan_unit(bench, predictor, unit) for _, unit in items]
        for request, _ in plans:
            if request is None:
                continue
            if request.support_key is not None and request.support_key in supports:
                request.prepared_supports = supports[request.support_key]
            engine.prepare(request)
            if request.support_key is not None:
                supports[request.support_key] = request.prepared_supports
                while len(supports) > 8:
                    supports.pop(next(iter(supports)))
        return plans

    cache = SupportCache()
    results: dict[int, list] = {number: [None] * len(chunks[number]) for number in todo}
    started = {number: None for number in todo}
    position = {}
    for number in todo:
        for i, unit in enumerate(chunks[number]):
            position[id(unit)] = i
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for index, items in enumerate(batches):
            tic = time.perf_counter()
            plans = pending.result()
            pending = pool.submit(load, batches[index + 1]) if index + 1 < len(batches) else None
            requests = [request for request, _ in plans if request is not None]
            # records must not depend on the batch size: no forced tokens fed ahead (they move scores at 1e-8)
            answers = iter(engine.answer(requests, cache, feed_forced=False))
            for (number, unit), (request, context) in zip(items, plans):
                if started[number] is None:
                    started[number] = tic
                answer = next(answers) if request is not None else []
                results[number][position[id(unit)]] = finish_unit(bench, unit, context, answer)
                bar.update(1)
            for number in {number for number, _ in items}:
                if all(r is not None for r in results[number]):
                    _write_json(paths[number], {"predictions": results[number],
                                                "elapsed_s": time.perf_counter() - started[number]})


def run_benchmark(model: str, benchmark: str, annotations: str, images: str, out: str, task: str | None = None,
                  shots: int = 1, episodes: int = 200, seed: int = 1, limit: int | None = None,
                  chunk_size: int = 32, predictor=None, progress: bool = True, allow_missing: bool = False,
                  name: str | None = None, supercategory: str | None = None, boxes: str | None = None,
                  batch: int = 1, shard: tuple[int, int] | None = None, constrained: bool = True,
                  wait_s: float = 86400.0, semantic_labels: str | None = None, detector: str | None = None) -> dict | None:
    """Run (or resume) a benchmark and return its result record (also written to OUT/record.json).

    `predictor` may be passed in (an already loaded `KeypointPredictor`); otherwise it is loaded from `model`.
    Everything is checked before OUT/run.json is written and before the model loads (see `evaluation.checks`);
    work units whose images are missing are refused unless `allow_missing`.
    `batch`: work units decoded together (1 = one unit at a time; more: one decoding batch over all their
    images); either way through the predictor's engine, images prefetched in a background thread, an episode's
    supports encoded once). Predictions do not depend on it (greedy decoding, checked by the tests).
    `shard=(i, n)`: compute only chunks i, i+n, ...; the run is scored (and the record returned) once
    every chunk is in OUT, so n processes (or `accelerate launch`: RANK / WORLD_SIZE are read) into one
    OUT give the one-process record; a shard that is not last returns None. Rank 0 of an accelerate
    launch waits up to `wait_s` for the other ranks' chunks.
    `constrained`: decode with the answer grammar (kptllm.decoding.constraints); part of the run's settings.
    `semantic_labels`: mp100 semantic: a label-set JSON file (evaluation/data/semantic_labels.py);
    default the built-in `kptllm-mp100-v1`. The record names the set and the categories covered.
    `detector`: take each object's box from this detector ("embedded", a folder or hub id) instead of the file
    (`evaluation.detected_boxes`: the whole chain, scored as with ground-truth boxes otherwise).
    """
    from kptllm.predictor import MAX_SHOTS

    started = time.perf_counter()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    if not 1 <= shots <= MAX_SHOTS:
        raise ValueError(f"shots must be 1 to {MAX_SHOTS}, got {shots}")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if predictor is None:
        check_model(str(model))
    else:  # a passed predictor decodes as it is configured
        constrained = getattr(predictor, "constrained", constrained)
    launched = shard is None and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched:  # accelerate launch / torchrun: one shard per rank
        shard = (int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]))
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    dataset = KeypointDataset.load(annotations, image_root=images)
    if benchmark in GENERIC:
        check_keypoint_names(benchmark, dataset, GENERIC[benchmark][0])
    detections = load_boxes(boxes) if boxes else None
    labels = load_semantic_labels(semantic_labels) if semantic_labels else None
    bench: Benchmark = build_benchmark(benchmark, dataset, task, shots, episodes, seed, supercategory=supercategory,
                                       boxes=detections, semantic_labels=labels)
    if detector is not None and boxes:
        raise ValueError("--detector gives every object its box; it does not go with --boxes")
    total = len(bench.units) + len(bench.missing)
    if bench.missing and not allow_missing:
        raise ValueError(missing_images_message(bench.missing, total, images, bench.missing_images))
    check_metric_libraries(benchmark in GENERIC and bench.task == "text" and
                           catalog_sigmas(GENERIC[benchmark][0]) is not None)
    units = bench.units[:limit] if limit else bench.units
    bench.partial = len(units) < len(bench.units) or bool(bench.missing)
    bench.units = units
    if not units:
        few = (f"; or too few instances per category for --shots {shots} (a support and a query of each, "
               "other objects)") if bench.task == "visual" else ""
        raise ValueError(f"benchmark {benchmark} has no work units in {annotations} (are the images under {images}?{few})")
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
    if detector is not None:
        settings["detector"], settings["detector_sha256"] = detector_label(detector), detector_sha256(detector)
    if semantic_labels:  # only when given, so runs recorded before the option existed still resume
        settings["semantic_labels_sha256"] = bench.semantic_labels.sha256
    if not constrained:  # only when off, so runs recorded before the flag existed still resume
        settings["constrained"] = False
    run_file = out_dir / "run.json"
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text())
        except ValueError:
            raise ValueError(f"{run_file} is not valid json (a run stopped while writing it?); delete it or use another --out") from None
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise ValueError(f"{out_dir} holds a run with other settings ({', '.join(changed)}); use another --out")
    else:
        _write_json(run_file, settings)

    if detector is not None:
        bench.object_boxes = match_objects(dataset, cached_detections(out_dir, detector, dataset))
    if predictor is None:
        from kptllm import KeypointPredictor

        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if launched and torch_cuda() else None
        try:
            predictor = KeypointPredictor.from_pretrained(model, device=device, constrained=constrained)
        except OSError as err:
            raise ValueError(f"cannot load model {model!r}: {str(err).splitlines()[0]}") from None
    chunks = [units[i:i + chunk_size] for i in range(0, len(units), chunk_size)]
    paths = [out_dir / "chunks" / f"{number:05d}.json" for number in range(len(chunks))]

    def saved(number):
        """The finished chunk's json, or None (also for a damaged chunk file, which is then computed again)."""
        if not paths[number].exists():
            return None
        try:
            value = json.loads(paths[number].read_text())
            keys = [p["key"] for p in value["predictions"]]
            float(value["elapsed_s"])
        except (ValueError, TypeError, KeyError):
            warnings.warn(f"{paths[number]} is damaged; computing that chunk again")
            return None
        return value if keys == [unit_key(u) for u in chunks[number]] else None

    mine = [n for n in range(len(chunks)) if shard is None or n % shard[1] == shard[0]]
    todo = [n for n in mine if saved(n) is None]
    bar = tqdm(total=sum(len(chunks[n]) for n in todo), desc=f"{benchmark}/{bench.task}", disable=not progress,
               unit="unit")
    try:
        _compute(bench, predictor, chunks, todo, paths, batch, bar)
    finally:  # an error or Ctrl-C prints below the bar, not on its line
        bar.close()
    if shard is not None:
        missing = [n for n in range(len(chunks)) if saved(n) is None]
        if missing and launched and shard[0] == 0:
            deadline = time.monotonic() + wait_s
            while missing and time.monotonic() < deadline:
                time.sleep(2.0)
                missing = [n for n in missing if saved(n) is None]
        if missing:
            return None
    predictions, elapsed, reused = [], 0.0, 0
    for number in range(len(chunks)):
        value = saved(number)
        predictions += value["predictions"]
        elapsed += value["elapsed_s"]
        reused += number not in todo

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
        "annotations_description": dataset.description or None,
        **({"world_version": description_version(dataset.description)}
           if benchmark == "keypointworld" and description_version(dataset.description) else {}),
        # which KeypointWorld set (validation / decision / test) the file is, None for other files
        "set": set_of(dataset.description) if benchmark == "keypointworld" else None,
        "supercategory": supercategory, "boxes": str(boxes) if boxes else None,
        "boxes_sha256": settings.get("boxes_sha256"),
        **({"detector": settings["detector"], "detector_sha256": settings["detector_sha256"],
            "detector_box_threshold": BOX_THRESHOLD, "objects_detected": sum(
                b is not None for b in bench.object_boxes.values()), "objects": len(bench.object_boxes)}
           if detector is not None else {}),
        # with the fields above, what `kptllm eval` needs to run this again (the dashboard rebuilds the command)
        "images": str(images), "episodes": episodes, "seed": seed, "constrained": constrained,
        "semantic_labels_file": str(semantic_labels) if semantic_labels else None,
        **scored,
        **({"semantic_labels": bench.semantic_labels.describe(), "categories_covered": categories_covered(bench)}
           if bench.semantic_labels is not None else {}),
        "units": len(units), "units_evaluated": len(units), "units_total": total,
        "images_missing": len(bench.missing_images), "chunks": len(chunks), "chunks_reused": reused,
        "elapsed_s": elapsed, "wall_s_this_run": time.perf_counter() - started,
        "hardware": hardware(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
    }
    _write_json(out_dir / "record.json", record)
    return record
