"""Is run B better than run A, or is the difference noise? A paired bootstrap over the units both ran.

    kptllm compare results/decision/keypointworld-visual results/decision/keypointworld-offcentre-visual

Both folders are `kptllm eval` outputs (`run.json`, `record.json`, `chunks/`) of the same benchmark, task
and shots. Their annotation files may differ (the same objects off-centre, say): units are paired by
their key (annotation id, or episode and query), and each run is scored against its own file, read from
the path its record names (or `annotations_a` / `annotations_b`; a KeypointWorld file that is not there is
made again, `evaluation.record_files`) and checked against the run's hash.

Method: the units both runs hold, in A's order, are resampled with replacement `samples` times
(`numpy.random.default_rng(seed)`, one `integers(0, n, n)` draw per sample); each resample is scored
for A and for B with the benchmark's own scoring (`evaluation.benchmarks.score`, so a PCK pooled over
keypoints, a CAPE PCK averaged per query and a semantic accuracy are all resampled as what they are),
and the difference B - A is taken on the same resample. The 2.5 and 97.5 percentiles of those
differences are the 95 % interval. Units, not keypoints, are the resampled items: the keypoints of
one object are not independent. OKS AP is not offered (COCOeval cannot score an instance twice).

Fast path: where the metric of any multiset of units is a weighted mean of the units' own values (a PCK pooled
over keypoints: weight = the unit's counted keypoints; a PCK averaged per query: weight 1; an accuracy over
points), each unit is scored once and every resample is the same weighted mean of the same draws, in numpy. It is
used only after it reproduces the slow scoring on all units and on the first resamples, for both runs; else every
resample is scored the slow way.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .benchmarks import Benchmark, build_benchmark, score, unit_key
from .data import KeypointDataset
from .data.semantic_labels import load as load_semantic_labels
from .record_files import locate

DEFAULT_SAMPLES = 1000


@dataclass
class Run:
    """One `kptllm eval` output folder, rebuilt for scoring: its benchmark and its predictions by unit key."""

    folder: Path
    record: dict
    bench: Benchmark
    units: dict[str, dict]  # key -> work unit
    predictions: dict[str, dict]  # key -> prediction, in the run's order

    def metric(self, keys: list[str], name: str) -> float:
        """`name` scored on the units `keys` (repeats allowed), as the run's benchmark scores it."""
        bench = copy.copy(self.bench)
        bench.units = [self.units[k] for k in keys]
        return float(score(bench, [self.predictions[k] for k in keys], with_ap=False)["metrics"][name])


@dataclass
class Comparison:
    metric: str
    a: float  # the metric of A (and of B) on the paired units
    b: float
    difference: float  # b - a
    low: float  # 95 % bootstrap interval of the difference
    high: float
    b_better_share: float  # share of resamples in which B scored higher
    units: int
    samples: int
    seed: int
    benchmark: str
    task: str

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "B is better (the 95 % interval of B - A lies above 0)"
        if self.high < 0:
            return "B is worse (the 95 % interval of B - A lies below 0)"
        return "no clear difference (the 95 % interval of B - A contains 0)"


def load_run(folder, annotations: str | None = None, semantic_labels: str | None = None, images: str | None = None) -> Run:
    """Rebuild a finished `kptllm eval` run (no images or model needed to score it; the gallery draws on the
    images under `images`, default: where `evaluation.record_files.locate` finds them)."""
    folder = Path(folder)
    for name in ("run.json", "record.json"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} is not a finished `kptllm eval` output (no {name})")
    try:
        settings = json.loads((folder / "run.json").read_text())
        record = json.loads((folder / "record.json").read_text())
    except ValueError as err:
        raise ValueError(f"{folder}: unreadable run.json / record.json ({err})") from None
    if settings.get("boxes_sha256"):
        raise ValueError(f"{folder} was scored on detected boxes (OKS AP only): no bootstrap of AP is offered")
    try:  # the file the record names, a copy passed here, or (KeypointWorld) the same file made again
        files = locate({**record, "annotations_sha256": settings.get("annotations_sha256")}, annotations, images)
    except ValueError as err:
        raise ValueError(f"{folder}: {err}") from None
    path = files.annotations
    labels = None
    if settings.get("semantic_labels_sha256"):
        if semantic_labels is None:
            raise ValueError(f"{folder} used its own --semantic-labels file; pass it with --semantic-labels")
        labels = load_semantic_labels(semantic_labels)
        if labels.sha256 != settings["semantic_labels_sha256"]:
            raise ValueError(f"{semantic_labels} is not the label set {folder} was run with")
    bench = build_benchmark(settings["benchmark"], KeypointDataset.load(path, files.images), settings["task"],
                            settings.get("shots") or 1, settings.get("episodes", 200), settings.get("seed", 1),
                            supercategory=settings.get("supercategory"), semantic_labels=labels)
    units = {unit_key(u): u for u in bench.units + bench.missing}  # images are not needed to score
    if not any((folder / "chunks").glob("*.json")):
        raise ValueError(f"{folder} has no chunks/ folder: the per-unit answers compare rescores are written there "
                         "by `kptllm eval` (git ignores chunks/ except for the records shipped under results/)")
    predictions = {}
    for chunk in sorted((folder / "chunks").glob("*.json")):
        for prediction in json.loads(chunk.read_text())["predictions"]:
            predictions[prediction["key"]] = prediction
    unknown = [k for k in predictions if k not in units]
    if unknown or not predictions:
        raise ValueError(f"{folder}: its predictions do not match the units of {path} "
                         f"({len(unknown)} unknown keys, {len(predictions)} predictions)")
    return Run(folder, record, bench, units, predictions)


def bootstrap_metric(run: Run, metric: str | None = None) -> str:
    """`metric`, else the run's headline metric; AP / AR refused (COCOeval cannot score an instance twice)."""
    metric = metric or run.record.get("headline_metric") or "PCK@0.2"
    if metric.upper().startswith(("AP", "AR")):
        raise ValueError(f"{metric} is not offered: COCOeval cannot score a resampled instance twice; "
                         "compare a PCK (e.g. --metric PCK@0.2)")
    return metric


def check_rescoring(run: Run, metric: str) -> float:
    """The run's `metric` rescored on all its units, checked to be its record's own number (same data, same
    code); a record from other code or edited chunks is refused."""
    recorded = run.record.get("metrics", {}).get(metric)
    if recorded is None:
        raise ValueError(f"{run.folder} records no metric {metric!r}; it has {', '.join(run.record.get('metrics', {}))}")
    rebuilt = run.metric(list(run.predictions), metric)
    if not np.isclose(rebuilt, recorded, rtol=0, atol=1e-9):
        raise ValueError(f"{run.folder}: rescoring gives {metric} {rebuilt:.6f}, its record says {recorded:.6f} "
                         "(record from other code or edited chunks?)")
    return rebuilt


def draws(n: int, samples: int, seed: int):
    """The bootstrap's draws over `n` units (module docstring): `default_rng(seed)`, one `integers(0, n, n)`
    array of unit indices per resample; every resample of this package is drawn here."""
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        yield rng.integers(0, n, n)


def resamples(keys: list[str], samples: int, seed: int):
    """The bootstrap's resamples of `keys` (`draws` as keys); `kptllm compare` and `evaluation.intervals` both
    draw here."""
    for drawn in draws(len(keys), samples, seed):
        yield [keys[i] for i in drawn]


CHECKED_RESAMPLES = 3  # resamples scored the slow way too before the fast path is trusted


def _each_unit_scored(run: Run, keys: list[str]):
    """The benchmark's scoring of each unit of `keys` alone, in order (what the fast paths decompose)."""
    for key in keys:
        bench = copy.copy(run.bench)
        bench.units = [run.units[key]]
        yield score(bench, [run.predictions[key]], with_ap=False)


def unit_weights(run: Run, keys: list[str], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, weights) per unit such that `metric` on any multiset of `keys` is sum(w * v) / sum(w), checked
    against the slow scoring on all keys and on the first resamples; None when no such form reproduces it."""
    values, counted, scored_at_all = np.zeros(len(keys)), np.zeros(len(keys)), np.zeros(len(keys))
    for n, scored in enumerate(_each_unit_scored(run, keys)):
        value = scored["metrics"].get(metric)
        if value is not None and np.isfinite(value):  # else nothing of this unit counts: weight 0 (checked below)
            values[n], scored_at_all[n] = value, 1.0
            counted[n] = scored.get("counts", {}).get("keypoints", 0)
    checks = [np.arange(len(keys)), *draws(len(keys), CHECKED_RESAMPLES, 0)]
    for weights in (counted, scored_at_all):  # pooled over keypoints, or a mean per unit
        if all(weights[idx].sum() > 0 and np.isclose((weights[idx] * values[idx]).sum() / weights[idx].sum(),
                                                    run.metric([keys[i] for i in idx], metric), rtol=0, atol=1e-9)
               for idx in checks):
            return values, weights
    return None


def _fast_differences(a, b, keys: list[str], samples: int, seed: int) -> np.ndarray:
    """B - A on each resample from (values, weights) pairs: the draws of `resamples`, as index counts."""
    (va, wa), (vb, wb) = a, b
    out = np.empty(samples)
    for s, indices in enumerate(draws(len(keys), samples, seed)):
        drawn = np.bincount(indices, minlength=len(keys))
        out[s] = (drawn * wb * vb).sum() / (drawn * wb).sum() - (drawn * wa * va).sum() / (drawn * wa).sum()
    return out


def compare(a: Run, b: Run, metric: str | None = None, samples: int = DEFAULT_SAMPLES, seed: int = 0,
            fast: bool = True) -> Comparison:
    """Paired bootstrap of `metric` (default: A's headline metric) between two runs (module docstring);
    `fast=False` scores every resample the slow way."""
    for field in ("benchmark", "task", "shots", "supercategory"):
        if a.record.get(field) != b.record.get(field):
            raise ValueError(f"the runs differ in {field}: {a.record.get(field)!r} vs {b.record.get(field)!r}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    metric = bootstrap_metric(a, metric)
    keys = [k for k in a.predictions if k in b.predictions]
    if not keys:
        raise ValueError("the two runs share no work units")
    for run in (a, b):
        check_rescoring(run, metric)
    forms = [unit_weights(run, keys, metric) for run in (a, b)] if fast else [None]
    if all(form is not None for form in forms):  # the same draws, scored as weighted means (module docstring)
        differences = _fast_differences(*forms, keys, samples, seed)
    else:
        differences = np.array([b.metric(drawn, metric) - a.metric(drawn, metric)
                                for drawn in resamples(keys, samples, seed)])
    value_a, value_b = a.metric(keys, metric), b.metric(keys, metric)
    low, high = np.percentile(differences, [2.5, 97.5])
    return Comparison(metric, value_a, value_b, value_b - value_a, float(low), float(high),
                      float((differences > 0).mean()), len(keys), samples, seed,
                      a.record["benchmark"], a.record["task"])


# ----------------------------------------------------------------------------------------- which keypoints moved
@dataclass
class KeypointChange:
    """One keypoint ("category/name") in both runs: its share right in each (pooled over the paired units that
    count it), B - A, and the 95 % interval of B - A over the same unit resamples as `compare`."""

    keypoint: str
    a: float
    b: float
    difference: float
    low: float
    high: float
    counted: int  # how many times the keypoint counts over the paired units

    @property
    def beyond(self) -> bool:
        return self.low > 0 or self.high < 0


def keypoint_table(run: Run, keys: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, values [U, G], counted [U, G]): each unit scored alone by the benchmark (its "per_keypoint"), so a
    keypoint's share on any multiset of units is sum(c * v) / sum(c). Checked against the scoring of all `keys`
    at once; a benchmark whose scoring has no per-keypoint breakdown, or whose units hold a keypoint more than
    once, is refused."""
    per_unit = [scored.get("per_keypoint") for scored in _each_unit_scored(run, keys)]
    if any(p is None for p in per_unit):
        raise ValueError(f"{run.bench.name}/{run.bench.task} scores no per-keypoint breakdown")
    names = sorted({name for p in per_unit for name in p})
    column = {name: g for g, name in enumerate(names)}
    values, counted = np.zeros((len(keys), len(names))), np.zeros((len(keys), len(names)))
    for u, p in enumerate(per_unit):
        for name, value in p.items():
            values[u, column[name]], counted[u, column[name]] = value, 1.0
    bench = copy.copy(run.bench)
    bench.units = [run.units[k] for k in keys]
    overall = score(bench, [run.predictions[k] for k in keys], with_ap=False)["per_keypoint"]
    pooled = (values * counted).sum(0) / np.maximum(counted.sum(0), 1)
    if set(overall) != set(names) or not np.allclose(pooled, [overall[n] for n in names], rtol=0, atol=1e-9):
        raise ValueError(f"{run.folder}: a unit holds a keypoint more than once; no per-keypoint breakdown")
    return names, values, counted


def keypoint_changes(a: Run, b: Run, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> list[KeypointChange]:
    """Every keypoint both runs count, worst change first: the paired units resampled as `compare` draws them
    (`draws`), each keypoint's share recomputed on each resample for A and B."""
    keys = [k for k in a.predictions if k in b.predictions]
    if not keys:
        raise ValueError("the two runs share no work units")
    names_a, va, ca = keypoint_table(a, keys)
    names_b, vb, cb = keypoint_table(b, keys)
    if names_a != names_b or not np.array_equal(ca, cb):
        raise ValueError("the two runs count different keypoints on the same units (different annotation files?)")
    counts = np.stack([np.bincount(drawn, minlength=len(keys)) for drawn in draws(len(keys), samples, seed)])
    with np.errstate(invalid="ignore", divide="ignore"):  # a keypoint no resampled unit holds: NaN, left out
        share_a = (counts @ (ca * va)) / (counts @ ca)
        share_b = (counts @ (cb * vb)) / (counts @ cb)
    low, high = np.nanpercentile(share_b - share_a, [2.5, 97.5], axis=0)
    total = ca.sum(0)
    full_a, full_b = (ca * va).sum(0) / total, (cb * vb).sum(0) / total
    changes = [KeypointChange(name, float(full_a[g]), float(full_b[g]), float(full_b[g] - full_a[g]), float(low[g]),
                              float(high[g]), int(total[g])) for g, name in enumerate(names_a)]
    return sorted(changes, key=lambda c: (c.difference, c.keypoint))


def keypoint_report(changes: list[KeypointChange]) -> str:
    rows = ["", "per keypoint (pooled over the paired units that count it; * = the interval excludes 0), worst first:",
            f"  {'keypoint':<36} {'n':>5} {'A':>7} {'B':>7} {'B - A':>8}  95 % interval"]
    for c in changes:
        rows.append(f"  {c.keypoint:<36} {c.counted:>5} {c.a:>7.3f} {c.b:>7.3f} {c.difference:>+8.3f}  "
                    f"[{c.low:+.3f}, {c.high:+.3f}]{' *' if c.beyond else ''}")
    return "\n".join(rows)


def report(comparison: Comparison, a: Run, b: Run) -> str:
    c = comparison
    return "\n".join([
        f"{c.benchmark}/{c.task}  {c.metric}  {c.units} paired units  ({c.samples} bootstrap samples, seed {c.seed})",
        f"  A  {c.a:.4f}  {a.folder}",
        f"  B  {c.b:.4f}  {b.folder}",
        f"  B - A  {c.difference:+.4f}   95 % interval [{c.low:+.4f}, {c.high:+.4f}]   "
        f"B higher in {100 * c.b_better_share:.1f} % of resamples",
        f"  {c.verdict}",
    ])


def as_json(comparison: Comparison, changes: list[KeypointChange] | None = None) -> str:
    out = {**asdict(comparison), "verdict": comparison.verdict}
    if changes is not None:
        out["per_keypoint"] = [{**asdict(c), "beyond": c.beyond} for c in changes]
    return json.dumps(out, indent=1)
