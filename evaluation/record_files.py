"""Where a measured record's data is: its annotation file and image folder, found where the record says, or
made again for a KeypointWorld record (its files are deterministic in n and seed; the record's sha256 checks
the result).

    files = locate(record)          # RecordFiles(annotations, images, regenerated)
    files = locate(record, annotations="my/val.json", images="my/images")   # a user's own copy

Regenerated files go to `<cache>/keypointworld/n300-seed424242[-offcentre]` (the cache: `$KPTLLM_CACHE_DIR`,
else `$XDG_CACHE_HOME/kptllm`, else `~/.cache/kptllm`, as for checkpoint hashes), made once (a few seconds for 300
images on a 2-core CPU) and reused while their hash matches.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from .checks import cache_dir, file_sha256
from .data.keypointworld import description_version, parse_description, write_dataset

_LOCK = threading.Lock()  # one regeneration at a time in this process (the demo serves requests in threads)


@dataclass(frozen=True)
class RecordFiles:
    annotations: Path
    images: Path  # the image root the dataset resolves file names under
    regenerated: bool  # made here from the record's description (not the files the run read)


def _sha_matches(path: Path, expected: str | None) -> bool:
    return not expected or file_sha256(path) == expected


def locate(record: dict, annotations=None, images=None, cache: Path | None = None) -> RecordFiles:
    """The data `record` (a record.json dict) was scored on.

    `annotations` / `images`: a copy the caller names (checked against the record's sha256). Without them:
    the paths the record names, when that file is there and unchanged; else, for KeypointWorld records, the
    same files made again. Raises ValueError saying what is missing and how to pass it."""
    expected = record.get("annotations_sha256")
    if annotations is not None:
        path = Path(annotations)
        if not path.is_file():
            raise ValueError(f"the annotation file {path} is not here")
        if not _sha_matches(path, expected):
            raise ValueError(f"{path} is not the annotation file the record was scored on (its sha256 differs)")
        return RecordFiles(path, Path(images) if images else path.parent, False)
    named = Path(record.get("annotations") or "")
    if record.get("annotations") and named.is_file() and _sha_matches(named, expected):
        root = images or record.get("images") or named.parent
        return RecordFiles(named, Path(root), False)
    spec = parse_description(record.get("annotations_description"))
    if record.get("benchmark") == "keypointworld" and spec:
        return _regenerate(*spec, expected, Path(cache) if cache else cache_dir(),
                           version=description_version(record.get("annotations_description")))
    where = record.get("annotations") or "(none named)"
    raise ValueError(f"the record's annotation file {where} is not here (or has changed) and cannot be made again "
                     "(only KeypointWorld records can); pass the file and its image folder (--annotations, --images)")


def _regenerate(n: int, seed: int, offcentre: bool, expected: str | None, cache: Path, version: int = 1) -> RecordFiles:
    world = "keypointworld" if version == 1 else f"keypointworld-v{version}"
    folder = cache / world / f"n{n}-seed{seed}{'-offcentre' if offcentre else ''}"
    path = folder / "annotations.json"
    with _LOCK:
        if not (path.is_file() and _sha_matches(path, expected)):
            # written beside, then moved in: a reader never sees half a folder (another process may race us)
            partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}")
            write_dataset(partial, n, seed, offcentre=offcentre, version=version)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            try:
                partial.rename(folder)
            except OSError:  # made meanwhile by another process: keep theirs
                shutil.rmtree(partial, ignore_errors=True)
    if not _sha_matches(path, expected):
        raise ValueError(f"KeypointWorld n={n} seed={seed}{' off-centre' if offcentre else ''} made again here differs "
                         "from the file the record was scored on (sha256): the record comes from other KeypointWorld code")
    return RecordFiles(path, folder / "images", True)
