"""95 % intervals of one record's headline number, overall and per category: a bootstrap over its units.

    kptllm interval results/test/keypointworld-text     # prints it and writes interval.json beside record.json
    value = interval(load_run("results/test/keypointworld-text"))   # the same, as a dict
    stored = read_interval("results/test/keypointworld-text")       # what was written (None if stale / absent)

Method: `kptllm compare`'s bootstrap (`evaluation.compare`) for one run: the run's units, in its order,
resampled with replacement `samples` times by `compare.resamples` (`default_rng(seed)`, one
`integers(0, n, n)` draw each), each resample scored with the benchmark's own scoring (`Run.metric`, i.e.
`evaluation.benchmarks.score`); the 2.5 and 97.5 percentiles. On the same units, seed and samples these are
the resampled values of compare's run A. Per category: that category's units alone, resampled the same way
(same seed), so a category's interval is the one a run of only that category would get. Units (objects,
queries), not keypoints, are resampled: the keypoints of one object are not independent.

The result is written beside the record (`interval.json`; record.json stays what `kptllm eval` wrote) with
the record's date and value, so a record scored again makes it stale (`read_interval` then returns None);
`evaluation.results` reads it for its tables and the dashboard, which never recompute a metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # compare (benchmarks, datasets) is imported where a bootstrap runs: `read_interval` stays light
    from .compare import Run

INTERVAL_FILE = "interval.json"
LEVEL = 95


def unit_category(run: Run, key: str) -> str:
    """The category name of a run's unit (its query object's category)."""
    unit = run.units[key]
    dataset = run.bench.dataset
    if "category_id" in unit:
        return dataset.categories[unit["category_id"]].name
    return dataset.category_of(dataset.annotation(unit["ann_id"])).name


def percentile_interval(run: Run, keys: list[str], metric: str, samples: int, seed: int) -> tuple[float, float]:
    """(2.5, 97.5) percentiles of `metric` over `samples` bootstrap resamples of `keys`."""
    from .compare import resamples

    values = np.array([run.metric(drawn, metric) for drawn in resamples(keys, samples, seed)])
    low, high = np.percentile(values, [(100 - LEVEL) / 2, 100 - (100 - LEVEL) / 2])
    return float(low), float(high)


def interval(run: Run, metric: str | None = None, samples: int = 1000, seed: int = 0) -> dict:
    """The 95 % bootstrap interval of `metric` (default: the record's headline) overall and per category."""
    from .compare import bootstrap_metric, check_rescoring

    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    metric = bootstrap_metric(run, metric)
    value = check_rescoring(run, metric)
    keys = list(run.predictions)
    by_category: dict[str, list[str]] = {}
    for key in keys:
        by_category.setdefault(unit_category(run, key), []).append(key)
    low, high = percentile_interval(run, keys, metric, samples, seed)
    per_category = {}
    for name, chosen in sorted(by_category.items()):
        c_low, c_high = percentile_interval(run, chosen, metric, samples, seed)
        per_category[name] = {"value": run.metric(chosen, metric), "low": c_low, "high": c_high, "units": len(chosen)}
    return {"metric": metric, "level": LEVEL, "value": value, "low": low, "high": high, "units": len(keys),
            "samples": samples, "seed": seed, "method": "bootstrap over units (kptllm compare's resampling)",
            "per_category": per_category,
            # what it was computed from: a record scored again makes this stale (`read_interval`)
            "record_date": run.record.get("date"), "set": run.record.get("set")}


def write_interval(run: Run, result: dict) -> Path:
    path = Path(run.folder) / INTERVAL_FILE
    path.write_text(json.dumps(result, indent=1))
    return path


def read_interval(folder, record: dict | None = None) -> dict | None:
    """The stored interval of the record in `folder`; None when there is none or it was computed for another
    scoring of the record (its date or value differ from record.json's)."""
    folder = Path(folder)
    try:
        stored = json.loads((folder / INTERVAL_FILE).read_text())
        record = record if record is not None else json.loads((folder / "record.json").read_text())
        recorded = record["metrics"][stored["metric"]]
        current = stored["record_date"] == record.get("date") and np.isclose(stored["value"], recorded, rtol=0, atol=1e-9)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stored if current else None


def report(result: dict, folder) -> str:
    """The interval as text: the overall line, then one line per category."""
    lines = [f"{result['metric']}  {result['value']:.4f}  {result['level']} % interval [{result['low']:.4f}, "
             f"{result['high']:.4f}]  {result['units']} units  ({result['samples']} resamples, seed {result['seed']})  "
             f"{folder}" + (f"  [{result['set']} set]" if result.get("set") else "")]
    for name, c in result["per_category"].items():
        lines.append(f"  {name:<10} {c['value']:.4f}  [{c['low']:.4f}, {c['high']:.4f}]  {c['units']} units")
    return "\n".join(lines)
