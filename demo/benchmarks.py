"""Data behind the Benchmarks tab: paper numbers + measured records (with provenance), breakdowns, training curve.

`load_results` is the one adapter to `evaluation.results`: it uses `load_records(root)` (provenance columns)
when the installed evaluation package has it, else `measured_results` plus the record files themselves.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd

from evaluation import results as ev

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results"
METRICS_JSONL = ROOT / "assets" / "kptllm-keypointworld" / "metrics.jsonl"
PROVENANCE = ["model", "checkpoint_sha256", "date", "command", "annotations", "annotations_sha256", "code_version",
              "hardware", "record"]
COLUMNS = ["source", "task", "dataset", "setting", "method", "metric", "value", "low", "high", "n", "set"] + PROVENANCE
MATCH = ["task", "dataset", "setting", "metric"]  # a measured row and a paper row with these equal measure the same
MEASURED_SUFFIX = " (measured)"
# per-category entries that count things: shown as they are, not as percent
COUNT_KEYS = {"keypoints", "queries", "instances", "images", "accuracy_n"}


def public_path(value):
    """A path as visitors may see it (tables, CSV, exports): relative to the project when inside it, else
    only its last two parts; anything that is not an absolute path is returned as it is."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else "/".join(path.parts[-2:])


def public_text(text: str) -> str:
    """A message with every absolute path in it shown as `public_path` shows it (errors reach visitors)."""
    return re.sub(r"(?<![\w.])/[^\s,;:'\"()]+", lambda m: public_path(m.group(0)), str(text))


def _command(record: dict, path=None, public: bool = True) -> str:
    """The `kptllm eval` command that reproduces a record (from its fields; records before version 3 did not
    keep the image folder, which then reads IMAGES). `path`: the record file, whose folder is `--out`.
    `public`: paths as visitors may see them (`public_path`); else the server's own, runnable there."""
    if not record:
        return ""
    shown = public_path if public else (lambda value: value)
    out = Path(path).parent if path else Path("OUT")
    out = out.relative_to(ROOT) if out.is_absolute() and out.is_relative_to(ROOT) else shown(str(out))
    options = [("--model", shown(record.get("model"))), ("--benchmark", record.get("benchmark")),
               ("--task", record.get("task")), ("--shots", record.get("shots")),
               ("--annotations", shown(record.get("annotations"))),
               ("--images", shown(record.get("images")) or "IMAGES"), ("--out", out), ("--boxes", record.get("boxes")),
               ("--supercategory", record.get("supercategory")),
               ("--semantic-labels", shown(record.get("semantic_labels_file"))),
               ("--limit", record.get("limit")),
               ("--episodes", record.get("episodes") if record.get("episodes", 200) != 200 else None),
               ("--seed", record.get("seed") if record.get("seed", 1) != 1 else None)]
    parts = ["kptllm eval"] + [f"{flag} {shlex.quote(str(value))}" for flag, value in options if value]
    if record.get("constrained") is False:
        parts.append("--no-constraints")
    return " ".join(parts)


def _record(path, root=RESULTS_DIR) -> dict:
    """A measured record's JSON; {} for anything but a `record.json` under `root` (the breakdown
    endpoints take a path from the client). `path`: relative to `root` (what the page shows) or absolute."""
    try:
        path = (Path(root) / path).resolve()
        if path.name != "record.json" or not path.is_relative_to(Path(root).resolve()):
            return {}
        return json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return {}


def load_results(results_dir: str | Path | None = RESULTS_DIR, public: bool = True) -> pd.DataFrame:
    """Paper rows + measured rows, one per metric value, in `COLUMNS` (provenance empty on paper rows).

    `public` (what the dashboard shows): no server path anywhere: records relative to `results_dir`, model
    and annotation paths through `public_path`; `public=False` keeps the server's paths (commands that run
    here as they are)."""
    paper = ev.paper_results()
    measured = pd.DataFrame(columns=COLUMNS)
    if results_dir is not None and Path(results_dir).exists():
        if hasattr(ev, "load_records"):  # evaluation with provenance columns
            measured = ev.load_records(results_dir)
        else:
            measured = ev.measured_results(results_dir)
            metrics = set(measured["metric"])
            measured = measured[~measured["metric"].map(lambda m: m != m.upper() and m.upper() in metrics)]
        records = {p: _record(p, results_dir) for p in measured["record"].dropna().unique()}
        for column in ("model", "checkpoint_sha256", "annotations", "annotations_sha256", "code_version", "hardware", "date"):
            from_file = measured["record"].map(lambda p, c=column: records.get(p, {}).get(c))
            measured[column] = measured[column].where(measured[column].notna(), from_file) if column in measured else from_file
        measured["command"] = measured["record"].map(lambda p: _command(records.get(p, {}), p, public))
        measured["n"] = measured["record"].map(lambda p: sample_size(records.get(p, {})))
        measured["source"] = "measured"
        # a run named like a paper method ("KptLLM++") is a column of its own, never merged with the paper's
        clash = measured["method"].isin(set(paper["method"]))
        measured.loc[clash, "method"] = measured.loc[clash, "method"] + MEASURED_SUFFIX
        folder = measured["record"].map(lambda p: Path(p).parent.name)
        measured["setting"] = measured["setting"].where(measured["setting"].fillna("") != "", folder)
        if public:  # what visitors see: records relative to the results folder, no server paths
            base = Path(results_dir).resolve()
            measured["record"] = measured["record"].map(lambda p: Path(p).resolve().relative_to(base).as_posix())
            for column in ("model", "annotations"):
                measured[column] = measured[column].map(public_path)
    table = pd.concat([paper, measured], ignore_index=True)
    for column in COLUMNS:
        if column not in table:
            table[column] = None
    table = table[COLUMNS].copy()
    for column in ("value", "low", "high"):  # low / high: the stored 95 % interval (`kptllm interval`), percent
        table[column] = pd.to_numeric(table[column], errors="coerce").round(2)
    for column in ["task", "dataset", "setting", "method", "metric", "set"]:
        table[column] = table[column].fillna("").astype(str)
    table.loc[table["task"] == "", "task"] = "keypointworld"
    return table


SET_NOTE = ("**Which KeypointWorld set a row is** (`evaluation/data/keypointworld_sets.py`): the **test set** "
            "(seed {test.seed}, {test.images} images, plain and off-centre) reports a shipped model: scored once, after "
            "the decision, never used to choose or decide; the **decision records** (seed {decision.seed}, "
            "{decision.images} images) are what a candidate is compared with (`kptllm compare`) to decide whether it "
            "ships; the **validation** seed ({validation.seed}) chooses checkpoints during training (the curve below).")


def set_note() -> str:
    from evaluation.data.keypointworld_sets import SETS

    return SET_NOTE.format(**SETS)


def reported_set_table(results_dir: str | Path | None = RESULTS_DIR, set_name: str = "test") -> pd.DataFrame:
    """The reported set's records as stored (`evaluation.results.set_report_wide`): a row per record, a
    column per category, 'value [95 % interval]' in percent; nothing recomputed here."""
    if results_dir is None or not Path(results_dir).exists():
        return ev.set_report_wide(pd.DataFrame())
    return ev.set_report_wide(ev.set_report(results_dir, set_name))


def sample_size(record: dict) -> str:
    """What a measured number averages over, from the record's counts: e.g. "108 instances · 1283 keypoints",
    "60 images · 108 objects" (box AP)."""
    counts = record.get("counts") or {}
    parts = []
    for keys, label in ((("instances", "queries"), None), (("keypoints", "prompted_keypoints"), "keypoints"),
                        (("images",), None), (("objects",), None)):
        key = next((k for k in keys if isinstance(counts.get(k), int)), None)
        if key:
            parts.append(f"{counts[key]} {label or key}")
    return " · ".join(parts)


def measured_vs_paper(table: pd.DataFrame) -> pd.DataFrame:
    """One line per measured value that has paper values on the same task, dataset, setting and metric: both
    values and the difference (measured - paper, percentage points)."""
    columns = [*MATCH, "measured", "value", "n", "paper method", "paper value", "difference"]
    measured = table[table["source"] == "measured"]
    paper = table[table["source"] == "paper"][[*MATCH, "method", "value"]]
    joined = measured.merge(paper, on=MATCH, suffixes=("", " paper"))
    if joined.empty:
        return pd.DataFrame(columns=columns)
    joined = joined.rename(columns={"method": "measured", "method paper": "paper method", "value paper": "paper value"})
    joined["difference"] = (joined["value"] - joined["paper value"]).round(2)
    return joined[columns].reset_index(drop=True)


PAPER_METHODS_SHOWN_FIRST = ("KptLLM", "KptLLM++")
HEADLINES = ("PCK@0.2", "accuracy", "AP")


def default_view(table: pd.DataFrame) -> dict[str, list[str]]:
    """The filters the tab opens with: the measured records' tasks and headline metrics, the measured methods
    and the paper's own (KptLLM, KptLLM++); all of it when nothing is measured."""
    measured = table[table["source"] == "measured"]
    if measured.empty:
        return {"tasks": [], "metrics": [], "methods": []}
    methods = sorted(set(measured["method"])) + [m for m in PAPER_METHODS_SHOWN_FIRST if m in set(table["method"])]
    return {"tasks": sorted(set(measured["task"])), "metrics": [m for m in HEADLINES if m in set(measured["metric"])],
            "methods": methods}


def filter_table(table: pd.DataFrame, tasks=(), datasets=(), metrics=(), methods=(), sources=()) -> pd.DataFrame:
    keep = pd.Series(True, index=table.index)
    for column, wanted in (("task", tasks), ("dataset", datasets), ("metric", metrics), ("method", methods),
                           ("source", sources)):
        if wanted:
            keep &= table[column].isin(list(wanted))
    return table[keep].reset_index(drop=True)


def side_by_side(table: pd.DataFrame, methods) -> pd.DataFrame:
    """Rows (task, dataset, setting, metric), one column per chosen method (2-3)."""
    chosen = table[table["method"].isin(list(methods))]
    if chosen.empty:
        return pd.DataFrame(columns=["metric", *methods, "dataset", "setting", "task"])
    wide = chosen.pivot_table(index=["task", "dataset", "setting", "metric"], columns="method", values="value",
                              aggfunc="last").reset_index()
    wide.columns.name = None
    # the values next to the metric, before the long dataset / setting names: visible at 1280 px
    return wide[["metric", *[m for m in methods if m in wide], "dataset", "setting", "task"]]


def _is_count(key: str, value) -> bool:
    return key in COUNT_KEYS or (isinstance(value, int) and not isinstance(value, bool))


def read_record(record) -> dict:
    """A record given as its path (only `record.json` files under results/ are read) or as the dict read."""
    if isinstance(record, dict):
        return record
    return _record(record) if record else {}


def headline(record) -> str | None:
    """The record's headline metric (e.g. PCK@0.2, accuracy), None when it names none."""
    return read_record(record).get("headline_metric")


def breakdowns(record, path=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per category, per keypoint) of one record (path or dict), metric values in percent, counts as they
    are; empty frames where it has none. Per category, the stored 95 % interval of the headline (`low`,
    `high`) when the record's folder (`path`, or the path given) has a current one."""
    if path is None and isinstance(record, (str, Path)):
        path = record
    record = read_record(record)
    folder = Path(RESULTS_DIR / path).parent if path and record else None
    spread = (ev.read_interval(folder, record) or {}).get("per_category", {}) if folder else {}
    cats = [{"category": c, **{k: (v if _is_count(k, v) or v is None else round(v * 100, 2)) for k, v in m.items()},
             **({"low": round(spread[c]["low"] * 100, 2), "high": round(spread[c]["high"] * 100, 2)} if c in spread else {})}
            for c, m in (record.get("per_category") or {}).items()]
    kpts = []
    for key, value in (record.get("per_keypoint") or {}).items():
        category, _, name = key.rpartition("/")
        kpts.append({"category": category, "keypoint": name, "value": round(value * 100, 2) if value is not None else None})
    return pd.DataFrame(cats), pd.DataFrame(kpts, columns=["category", "keypoint", "value"])


def semantic_errors(record) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answers by kind in percent, most frequent confusions) of a semantic record (path or dict); empty
    frames otherwise."""
    record = read_record(record)
    kinds = [{"answer": kind.replace("_", "/"), "percent": round(value * 100, 2)}
             for kind, value in (record.get("errors") or {}).items()]
    return (pd.DataFrame(kinds, columns=["answer", "percent"]),
            pd.DataFrame(record.get("confusions") or [], columns=["category", "expected", "predicted", "count"]))


def training_curve(path: Path = METRICS_JSONL) -> pd.DataFrame:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return pd.DataFrame(rows)
