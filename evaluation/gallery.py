"""The predictions behind a measured number: one entry per work unit of a `kptllm eval` output, with its
ground truth, its answer and each keypoint's error; sorted, filtered and paired with a second record on the
same units. `evaluation.gallery_render` draws them; `kptllm show` and the demo's Benchmarks tab use both.

    gallery = load_gallery("results/decision/keypointworld-visual")      # data found or made again (record_files)
    shown = select(gallery, order="worst", category="person", limit=24)
    pairs = select(gallery, order="gain", against=load_gallery("results/decision/keypointworld-offcentre-visual"))

Per keypoint, in the query image's pixels: `truth` and `predicted` `[K, 2]` (NaN where no answer parsed);
`counted` `[K]` the keypoints the record's metric counts; `error` `[K]` the distance over the metric's
normaliser (max(w, h) of the box the benchmark uses; NaN where not counted); `correct` `[K]`: error < 0.2
(PCK@0.2). Semantic records: `answers[k]` the name given for keypoint k (None: unparsed), `expected[k]` the
right one, `correct[k]` as the record's accuracy judges it. `score`: the share of counted keypoints that are
correct, which is the record's own metric computed on this unit alone (a test holds them equal; for AP
benchmarks the instance's PCK@0.2, AP having no per-instance value).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .benchmarks import GENERIC
from .compare import Run, load_run
from .data import clean_bbox
from .metrics import normalized_distances, semantic_accuracy

THRESHOLD = 0.2  # PCK@0.2: the headline of every benchmark the gallery draws
ORDERS = {
    "worst": "worst first",
    "best": "best first",
    "file": "file order",
    "gain": "largest gain of B over A first",
    "loss": "largest loss of B against A first",
}
PAIRED_ORDERS = {"gain", "loss"}


@dataclass
class Support:
    """A support object of a visual-prompt unit: where its prompted keypoints were marked."""

    image: Path | None
    image_name: str
    ann_id: int
    box: tuple[float, float, float, float]  # xywh, support image pixels
    points: np.ndarray  # [K, 2] support image pixels
    marked: np.ndarray  # [K] bool: the keypoints the query is scored on (visible here and in the query)


@dataclass
class Entry:
    """One work unit of a record: the query object, its ground truth and the model's answer."""

    key: str  # the unit's key in the record's chunks (annotation id, or episode:query)
    image: Path | None  # the query image on disk; None when it is not here
    image_name: str
    image_id: int
    category: str
    box: tuple[float, float, float, float]  # xywh in image pixels: the box the metric normalises by
    names: list[str]  # keypoint names of the category
    truth: np.ndarray  # [K, 2] image pixels
    counted: np.ndarray  # [K] bool
    correct: np.ndarray  # [K] bool (False where not counted)
    predicted: np.ndarray | None = None  # [K, 2] image pixels, NaN where unparsed; None for semantic records
    error: np.ndarray | None = None  # [K] normalised distance, NaN where not counted; None for semantic records
    answers: list | None = None  # semantic: [K] the name given (None: not asked or unparsed)
    expected: list | None = None  # semantic: [K] the right name (None: not asked)
    supports: list[Support] = field(default_factory=list)  # visual prompts: the support objects

    @property
    def score(self) -> float:
        n = int(self.counted.sum())
        return float(self.correct[self.counted].sum() / n) if n else 0.0

    def keypoint_score(self, name: str) -> float | None:
        """1/0 for one keypoint (correct or not) and minus its error for sorting within 'correct'; None when
        this unit does not count that keypoint."""
        k = self.index(name)
        if k is None:
            return None
        if self.error is None:
            return float(self.correct[k])
        return float(self.correct[k]) - float(self.error[k])

    def index(self, name: str) -> int | None:
        for k, own in enumerate(self.names):
            if own == name and self.counted[k]:
                return k
        return None

    def as_dict(self) -> dict:
        """JSON-ready: what the export writes per entry (pixels of the query image)."""
        rows = []
        for k, name in enumerate(self.names):
            if not self.counted[k]:
                continue
            row = {"number": k + 1, "keypoint": name, "truth": [round(float(v), 2) for v in self.truth[k]], "correct": bool(self.correct[k])}
            if self.predicted is not None:
                row["predicted"] = None if np.isnan(self.predicted[k]).any() else [round(float(v), 2) for v in self.predicted[k]]
                row["error"] = round(float(self.error[k]), 4)
            if self.answers is not None:
                row["answer"] = self.answers[k]
                row["expected"] = self.expected[k]
            rows.append(row)
        return {"key": self.key, "image": self.image_name, "image_id": self.image_id, "category": self.category,
                "box": [round(float(v), 2) for v in self.box], "score": round(self.score, 4),
                "supports": [{"image": s.image_name, "ann_id": s.ann_id} for s in self.supports], "keypoints": rows}


@dataclass
class Gallery:
    """Every unit of one record, in the record's order."""

    folder: Path
    record: dict
    entries: list[Entry]
    kind: str  # "points" (predicted locations) or "semantic" (predicted names)
    metric: str  # what `Entry.score` is, e.g. "PCK@0.2", "accuracy"

    @property
    def name(self) -> str:
        return self.record.get("name") or self.folder.name

    @property
    def missing(self) -> list[str]:
        """File names of the query images that are not on disk."""
        return sorted({e.image_name for e in self.entries if e.image is None})

    def categories(self) -> list[str]:
        return sorted({e.category for e in self.entries})

    def keypoint_names(self, category: str | None = None) -> list[str]:
        return sorted({n for e in self.entries if category in (None, e.category)
                       for k, n in enumerate(e.names) if e.counted[k]})


def _points_entry(bench, key, unit, prediction) -> Entry:
    ds = bench.dataset
    query = ds.annotation(unit["query_id"] if "episode" in unit else unit["ann_id"])
    image = ds.images[query.image_id]
    names = list(ds.category_of(query).keypoint_names)
    rows = np.asarray(prediction["keypoints"], dtype=np.float64).reshape(-1, 3)
    truth = query.keypoints[:len(rows), :2]
    predicted = np.where(rows[:, 2:3] > 0, rows[:, :2], np.nan)
    supports = []
    if "episode" in unit:  # CAPE protocol: visible in the query and every support, clean box, float32 distances
        support_anns = [ds.annotation(i) for i in unit["support_ids"]]
        counted = query.visible[:len(rows)] & np.all([s.visible[:len(rows)] for s in support_anns], axis=0)
        box = clean_bbox(query.bbox, image.width, image.height) or query.bbox
        side = max(box[2], box[3])
        distances = normalized_distances(rows[None, :, :2], truth[None], counted[None], np.array([[side, side]]))[0]
        error = np.where(distances == -1, np.nan, distances).astype(np.float64)
        correct = (distances < THRESHOLD) & (distances != -1)
        supports = [Support(ds.images[s.image_id].path, ds.images[s.image_id].file_name, s.id, tuple(s.bbox),
                            s.keypoints[:len(rows), :2], counted) for s in support_anns]
    else:  # text prompts: every labelled keypoint, max(w, h) of the file's box, unparsed answers wrong
        box = query.bbox
        side = max(box[2], box[3])
        labelled = query.keypoints[:len(rows), 2] > 0
        counted = labelled
        error = np.where(counted, np.hypot(*(rows[:, :2] - truth).T) / side, np.nan)
        correct = counted & (rows[:, 2] > 0) & (np.nan_to_num(error, nan=np.inf) < THRESHOLD)
    if bench.name in GENERIC:
        names = names[:len(rows)]
    return Entry(key, image.path, image.file_name, image.id, ds.category_of(query).name, tuple(box), names[:len(rows)],
                 truth, counted, correct, predicted=predicted, error=error, supports=supports)


def _semantic_entry(bench, key, unit, prediction) -> Entry:
    ds = bench.dataset
    ann = ds.annotation(unit["ann_id"])
    image = ds.images[ann.image_id]
    names = list(ds.category_of(ann).keypoint_names)
    answers, expected = [None] * len(names), [None] * len(names)
    counted = np.zeros(len(names), bool)
    correct = np.zeros(len(names), bool)
    for k, said, right in zip(prediction["indices"], prediction["predicted"], prediction["expected"]):
        answers[k], expected[k], counted[k] = said, right, True
        correct[k] = semantic_accuracy([said], [right]) == 1.0
    return Entry(key, image.path, image.file_name, image.id, ds.category_of(ann).name, tuple(ann.bbox), names,
                 ann.keypoints[:, :2], counted, correct, answers=answers, expected=expected)


def gallery_of(run: Run) -> Gallery:
    """The entries of a loaded run (`evaluation.compare.load_run`), in the run's order."""
    bench = run.bench
    if bench.boxes is not None:
        raise ValueError(f"{run.folder} was scored on detected boxes: the gallery draws GT-box and prompt records")
    semantic = bench.task == "semantic"
    make = _semantic_entry if semantic else _points_entry
    entries = [make(bench, key, run.units[key], prediction) for key, prediction in run.predictions.items()]
    metric = "accuracy" if semantic else "PCK@0.2"
    return Gallery(run.folder, run.record, entries, "semantic" if semantic else "points", metric)


@functools.lru_cache(maxsize=16)
def _cached(folder: str, stamp: float, annotations: str | None, images: str | None) -> Gallery:
    return gallery_of(load_run(folder, annotations, images=images))


def load_gallery(folder, annotations: str | None = None, images: str | None = None) -> Gallery:
    """The gallery of a `kptllm eval` output folder (cached while its record.json is unchanged). Raises
    ValueError (from `load_run` / `record_files.locate`) when its data cannot be found or made."""
    folder = Path(folder).resolve()
    record = folder / "record.json"
    stamp = record.stat().st_mtime if record.is_file() else 0.0
    return _cached(str(folder), stamp, annotations, images)


def select(gallery: Gallery, order: str = "worst", category: str | None = None, keypoint: str | None = None,
           limit: int | None = None, against: Gallery | None = None) -> list[tuple[Entry, Entry | None]]:
    """Entries to show, as (A, B) pairs (B is None without `against`).

    `order`: a key of ORDERS ("gain" / "loss" sort by B's score minus A's and need `against`). `category`,
    `keypoint`: keep the units of that category / that count that keypoint; with `keypoint` the sort uses
    that keypoint alone. `against`: a second record's gallery; only units both hold are kept, paired by key
    (the same query object, its image as each record had it)."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; one of {', '.join(ORDERS)}")
    if order in PAIRED_ORDERS and against is None:
        raise ValueError(f"order {order!r} compares two records: pick a second record")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if against is not None:
        for what in ("benchmark", "task", "shots"):
            if gallery.record.get(what) != against.record.get(what):
                raise ValueError(f"the two records differ in {what} ({gallery.record.get(what)!r} vs "
                                 f"{against.record.get(what)!r}): side by side needs the same units")
    others = {e.key: e for e in against.entries} if against is not None else {}
    # a unit with nothing counted (all its keypoints hidden, say) adds nothing to the number: not shown
    pairs = [(e, others.get(e.key)) for e in gallery.entries
             if e.counted.any() and (against is None or e.key in others)]
    if category:
        pairs = [p for p in pairs if p[0].category == category]
    if keypoint:
        pairs = [p for p in pairs if p[0].index(keypoint) is not None]

    def value(entry: Entry) -> float:
        return entry.keypoint_score(keypoint) if keypoint else entry.score

    if order in ("worst", "best"):
        pairs.sort(key=lambda p: value(p[0]), reverse=order == "best")  # stable: ties keep the file order
    elif order in PAIRED_ORDERS:
        pairs = [p for p in pairs if p[1] is not None and (keypoint is None or p[1].index(keypoint) is not None)]
        pairs.sort(key=lambda p: value(p[1]) - value(p[0]), reverse=order == "gain")
    return pairs[:limit] if limit else pairs
