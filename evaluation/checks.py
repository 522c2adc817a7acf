"""Checks `kptllm eval` makes before it writes run.json or loads a model, so a run cannot drift from its
protocol silently: the model folder, the shots, the images, the keypoint names of the file against the
benchmark's catalog, and the metric libraries. Each failure is a `ValueError` with a one-line message.

Also the cached checkpoint hash: sha256 per weight file, cached by (path, size, mtime) in a user cache
folder (`$KPTLLM_CACHE_DIR`, else `$XDG_CACHE_HOME/kptllm`, else `~/.cache/kptllm`); a read-only or
missing cache folder only means no caching.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from kptllm.protocols import catalog

from .metrics import normalize_keypoint_name

# Human-Art files carry the 21-keypoint definition; the benchmark scores its first 17 (COCO's)
EXTRA_KEYPOINTS_ALLOWED = {"humanart": 21}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_model(model: str) -> None:
    """A local folder must exist and hold a config.json; anything else must look like a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model folder {model} has no config.json (is it a checkpoint folder?)")
        return
    if path.exists():
        raise ValueError(f"model {model} is a file; give the checkpoint folder")
    if os.path.isabs(model) or model.startswith((".", "~")) or not _HUB_ID.match(model) \
            or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ValueError(f"model folder not found: {model}")


def check_keypoint_names(benchmark: str, dataset, catalog_key: str) -> None:
    """Every category of `dataset` that has instances must carry the benchmark's catalog keypoints, in order."""
    kset = catalog.get(catalog_key)
    wanted = [normalize_keypoint_name(n) for n in kset.source_names]
    used = {a.category_id for a in dataset.annotations}
    for cid in sorted(used):
        category = dataset.categories[cid]
        names = list(category.keypoint_names)
        count_ok = len(names) == len(wanted) or len(names) == EXTRA_KEYPOINTS_ALLOWED.get(benchmark)
        if all(n.isdigit() for n in names):  # the file names no keypoints: only the count can be checked
            names_ok = True
        else:
            names_ok = [normalize_keypoint_name(n) for n in names[:len(wanted)]] == wanted
        if not (count_ok and names_ok):
            raise ValueError(f"category {category.name!r} of the annotation file has {len(names)} keypoints "
                             f"({', '.join(names[:3])}, ...); benchmark {benchmark} expects the {len(wanted)} "
                             f"{kset.title} keypoints ({', '.join(kset.source_names[:3])}, ...)")


def check_metric_libraries(needs_ap: bool) -> None:
    """Import what scoring needs now, not after inference."""
    if not needs_ap:
        return
    try:
        from xtcocotools.coco import COCO  # noqa: F401
        from xtcocotools.cocoeval import COCOeval  # noqa: F401
    except ImportError as err:
        missing = (getattr(err, "name", None) or "").split(".")[0]
        if missing and not missing.startswith("xtcocotools"):
            raise ValueError(f"OKS AP needs xtcocotools, which cannot import {missing!r}: pip install {missing}") from None
        raise ValueError("OKS AP needs xtcocotools: pip install numpy cython && "
                         "pip install --no-binary xtcocotools --no-build-isolation xtcocotools") from None


def missing_images_message(missing: list, total: int, images: str, image_names: list[str]) -> str:
    example = f", e.g. {image_names[0]}" if image_names else ""
    return (f"{len(missing)} of {total} work units need images not found under {images} "
            f"({len(set(image_names))} images{example}); pass --allow-missing to score the rest")


# --------------------------------------------------------------------------- checkpoint hash
def cache_dir() -> Path:
    if os.environ.get("KPTLLM_CACHE_DIR"):
        return Path(os.environ["KPTLLM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kptllm"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (absolute path, size, mtime_ns) in `cache_dir()/sha256.json`."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    store = cache_dir() / "sha256.json"
    try:
        cache = json.loads(store.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), str):
        return cache[key]
    digest = file_sha256(path)
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f"sha256.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, store)
    except OSError:
        pass  # read-only home or cache: hash again next time
    return digest
