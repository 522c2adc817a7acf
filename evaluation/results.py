"""Paper numbers and measured result records, as pandas tables a dashboard can trust.

    from evaluation.results import load_records, paper_results, results_table, side_by_side, provenance
    measured = load_records("results/")           # one row per metric value of every record.json below results/
    paper = paper_results()                        # every number of the KptLLM++ paper (Tables 1-16)
    table = results_table("results/", benchmark="mp100")   # both, stacked (never merged)
    wide = side_by_side(table)                     # rows (dataset, setting, metric); columns (source, method)
    provenance(table)                              # one row per measured run: where its numbers come from

Long-table columns (`paper_results`, `load_records`, `results_table`):

    source              "paper" or "measured"
    table               paper table number ("" for measured rows)
    task                paper task: visual_prompt, semantic_understanding, generic_detection, text_prompt
                        (measured KeypointWorld records too: text -> text_prompt, visual -> visual_prompt, ...)
    dataset, setting    the paper's names ("MP-100", "1-shot split1"); KeypointWorld records name their data
                        "KeypointWorld seed 424242[, off-centre]", and their set when the file is one
                        ("KeypointWorld test set, seed 271828", `evaluation.data.keypointworld_sets`); free (unconstrained) decoding adds
                        ", free decoding" to the setting; measured rows get the names of the
                        paper rows they are comparable with; a run of part of a file (--limit, --allow-missing)
                        gets "(N of M units)" appended, so it never lines up with a full-protocol number
    method              paper: the method, names normalised ("Fine-tune"); measured: the run's unique label
                        (`name`, plus the record's folder when two records share a name)
    model_type          "vision-only" / "vision-language"
    metric, value       e.g. "PCK@0.2", 91.66 (percent, as the paper prints them; -1, COCOeval's
                        'not computable', is kept as it is)
    low, high           the 95 % interval of `value` (percent), on the headline metric's row of a record that
                        has a current `interval.json` beside it (`kptllm interval`); NaN elsewhere
  measured rows only (NaN / None on paper rows):
    name                the record's name (`kptllm eval --name`; default: model folder name + short hash)
    benchmark           the `kptllm eval` benchmark; `benchmark_task` its task
    model, checkpoint_sha256
    date                when the record was written (ISO 8601, UTC)
    record              path of the record.json
    annotations, annotations_sha256, annotations_label   the annotation file, its hash, and its identity
                        "file name (N instances, sha256 abcdef12)": split names are only read from file names,
                        so the label says which file it really was
    units_evaluated, units_total   work units scored / units the benchmark has in the file
    limit, boxes, supercategory, code_version, hardware
    set                 the KeypointWorld set the record is (validation / decision / test), None for others

    set_report(root, "test")          # one row per (task, variant, category): value and 95 % interval (percent)
    set_report_wide(report)           # a row per record, a column per category: "95.9 [94.8, 96.9]"
    set_report_markdown(report)       # the same as the Markdown table the docs carry

Records that cannot be read are skipped with a warning naming the file. A record's alias keys
(`pck@0.2` next to `PCK@0.2`) are not repeated as rows.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pandas as pd

from .data.keypointworld import CATEGORY_NAMES
from .data.keypointworld_sets import set_of
from .intervals import read_interval  # noqa: F401  (the dashboard reads stored intervals through here)

PAPER_CSV = Path(__file__).with_name("reference") / "paper_results.csv"
COLUMNS = ["source", "table", "task", "dataset", "setting", "method", "model_type", "metric", "value"]
INTERVAL = ["low", "high"]
PROVENANCE = ["name", "benchmark", "benchmark_task", "model", "checkpoint_sha256", "date", "record", "annotations",
              "annotations_sha256", "annotations_label", "units_evaluated", "units_total", "limit", "boxes",
              "supercategory", "code_version", "hardware", "set"]
RECORD_COLUMNS = COLUMNS + INTERVAL + PROVENANCE

# the paper CSV spells some names in two ways
METHOD_ALIASES = {"Finetune": "Fine-tune", "Fine tune": "Fine-tune", "fine-tune": "Fine-tune"}

# benchmark -> (paper task, paper dataset, paper setting); "{shots}" / "{split}" filled from the record
PAPER_NAMES = {
    ("mp100", "visual"): ("visual_prompt", "MP-100", "{shots}-shot {split}"),
    ("mp100", "semantic"): ("semantic_understanding", "MP-100", "{split}"),
    ("coco", "text"): ("generic_detection", "COCO val", "GT boxes; no flip"),
    ("humanart", "text"): ("generic_detection", "Human-Art val", ""),
    ("ap10k", "text"): ("generic_detection", "AP-10K val", "GT boxes"),
    ("macaque", "text"): ("generic_detection", "MacaquePose", ""),
    ("animalpose", "text"): ("generic_detection", "AnimalPose (unseen)", "zero-shot"),
    ("animal_kingdom", "text"): ("generic_detection", "Animal Kingdom", ""),
    ("carfusion", "text"): ("generic_detection", "CarFusion", ""),
    ("ap10k-different-order", "text"): ("text_prompt", "AP-10K", "train Bovidae test Canidae"),
    ("ap10k-same-order", "text"): ("text_prompt", "AP-10K", "train Canidae test Felidae"),
    # our own benchmark: the paper's task names, the data named by `keypointworld_dataset`
    ("keypointworld", "text"): ("text_prompt", "KeypointWorld", "GT boxes"),
    ("keypointworld", "visual"): ("visual_prompt", "KeypointWorld", "{shots}-shot"),
    ("keypointworld", "semantic"): ("semantic_understanding", "KeypointWorld", "GT points"),
    ("keypointworld", "detection"): ("object_detection", "KeypointWorld", "box AP"),
}
CROSS_SUPERCATEGORY = ("visual_prompt", "MP-100 cross-supercategory", "{shots}-shot {supercategory}")
ALIASES = {"pck@0.2": "PCK@0.2"}  # lower-case keys kept in records for scripts; one row per value here


def _normalise_text(value: str) -> str:
    return re.sub(r"\s+", " ", str(value)).strip()


def paper_results() -> pd.DataFrame:
    """The paper's numbers: one row per value, `COLUMNS`; method and setting names normalised."""
    table = pd.read_csv(PAPER_CSV, dtype={"setting": str, "table": str}, keep_default_na=False)
    table["value"] = table["value"].astype(float)
    table["source"] = "paper"
    for column in ("task", "dataset", "setting", "method", "model_type", "metric"):
        table[column] = table[column].map(_normalise_text)
    table["method"] = table["method"].replace(METHOD_ALIASES)
    return table[COLUMNS]


def _default_name(record: dict) -> str:
    model = str(record.get("model", "?"))
    base = Path(model.rstrip("/")).name or model
    sha = record.get("checkpoint_sha256")
    return f"{base} {sha[:8]}" if sha else base


def keypointworld_dataset(record: dict) -> str:
    """'KeypointWorld seed 424242' (', off-centre' for the shifted copies), from the description the
    synthesised file carries, with its set when it is one ('KeypointWorld test set, seed 271828'); the
    annotation file's label for files without one."""
    description = record.get("annotations_description") or ""
    seed = re.search(r"seed (\d+)", description)
    if not seed:
        return f"KeypointWorld {record.get('annotations_label') or Path(record.get('annotations', '')).name}".strip()
    version = re.match(r"KeypointWorld v(\d+),", description)
    world = f"KeypointWorld v{version.group(1)}" if version else "KeypointWorld"
    named = record_set(record)
    return (f"{world} {named} set, seed {seed.group(1)}" if named else f"{world} seed {seed.group(1)}") + \
        (", off-centre" if "off-centre" in description else "")


def record_set(record: dict) -> str | None:
    """The KeypointWorld set a record is: its `set` field, or (records before the field) its file's description."""
    if record.get("benchmark") != "keypointworld":
        return None
    return record.get("set") or set_of(record.get("annotations_description"))


def _record_rows(path: Path, record: dict) -> list[dict]:
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise ValueError("no metrics")
    benchmark, task = record["benchmark"], record["task"]
    if record.get("supercategory"):
        names = CROSS_SUPERCATEGORY
    else:
        names = PAPER_NAMES.get((benchmark, task), ("", benchmark, ""))
    paper_task, dataset, setting = names
    if benchmark == "keypointworld":
        dataset = keypointworld_dataset(record)
    split = re.search(r"split\s*(\d)", Path(record.get("annotations", "")).name)
    label = record.get("annotations_label") or Path(record.get("annotations", "")).name
    setting = setting.format(shots=record.get("shots") or 1, supercategory=record.get("supercategory"),
                             split=f"split{split.group(1)}" if split else label)
    if record.get("boxes"):
        setting = f"detected boxes {Path(record['boxes']).name}"
    if record.get("detector") and task != "detection":  # the whole chain: every box from a detector
        setting = re.sub(r"^GT boxes", "", setting).strip(", ")
        setting = f"{setting}, boxes by the {record['detector']} detector".strip(", ")
    if record.get("constrained") is False:
        setting = f"{setting}, free decoding".strip(", ")
    evaluated = record.get("units_evaluated", record.get("units"))
    total = record.get("units_total")
    if record.get("limit") and total is None:
        setting = f"{setting} (first {record['limit']} units)".strip()
    elif total is not None and evaluated is not None and evaluated < total:
        setting = f"{setting} ({evaluated} of {total} units)".strip()
    provenance = {"name": record.get("name") or _default_name(record), "benchmark": benchmark, "benchmark_task": task,
                  "model": record.get("model"), "checkpoint_sha256": record.get("checkpoint_sha256"),
                  "date": record.get("date"), "record": str(path), "annotations": record.get("annotations"),
                  "annotations_sha256": record.get("annotations_sha256"), "annotations_label": label,
                  "units_evaluated": evaluated, "units_total": total, "limit": record.get("limit"),
                  "boxes": record.get("boxes") or (f"detector {record['detector']}" if record.get("detector") else None),
                  "supercategory": record.get("supercategory"),
                  "code_version": record.get("code_version"), "hardware": record.get("hardware"),
                  "set": record_set(record)}
    spread = read_interval(path.parent, record) or {}
    rows = []
    for metric, value in record["metrics"].items():
        if ALIASES.get(metric) in record["metrics"]:
            continue
        scaled = float(value) * 100 if value is not None and value >= 0 else value
        low, high = (spread["low"] * 100, spread["high"] * 100) if spread.get("metric") == metric else (None, None)
        rows.append({"source": "measured", "table": "", "task": paper_task, "dataset": dataset, "setting": setting,
                     "method": provenance["name"], "model_type": "vision-language", "metric": metric,
                     "value": scaled, "low": low, "high": high, **provenance})
    return rows


def load_records(root: str | Path) -> pd.DataFrame:
    """One row per metric value of every `record.json` under `root` (recursively), with provenance columns
    (`RECORD_COLUMNS`, see the module docstring). Unreadable records are skipped with a warning."""
    rows = []
    for path in sorted(Path(root).rglob("record.json")):
        try:
            rows.append(_record_rows(path, json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            warnings.warn(f"skipping {path}: not a readable result record ({type(err).__name__}: {err})", stacklevel=2)
    table = pd.DataFrame([r for part in rows for r in part], columns=RECORD_COLUMNS)
    # one label per record: records sharing a name get their folder (relative to root) appended
    runs = table.drop_duplicates("record")[["record", "name"]]
    shared = runs["name"].duplicated(keep=False)
    labels = {rec: (f"{name} ({_folder(rec, root)})" if dup else name)
              for rec, name, dup in zip(runs["record"], runs["name"], shared)}
    table["method"] = table["record"].map(labels)
    return _integers(table)


def _integers(table: pd.DataFrame) -> pd.DataFrame:
    for column in ("units_evaluated", "units_total", "limit"):
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    for column in INTERVAL:
        table[column] = pd.to_numeric(table[column]).astype(float)
    return table


def _folder(record: str, root) -> str:
    try:
        return str(Path(record).parent.relative_to(Path(root)))
    except ValueError:
        return str(Path(record).parent)


def measured_results(results_dir: str | Path) -> pd.DataFrame:
    """Alias of `load_records`."""
    return load_records(results_dir)


def results_table(results_dir: str | Path | None = None, benchmark: str | None = None) -> pd.DataFrame:
    """Paper rows plus measured rows (stacked, never merged); `benchmark` (e.g. "mp100") keeps its datasets."""
    parts = [paper_results()]
    if results_dir is not None and Path(results_dir).exists():
        parts.append(load_records(results_dir))
    table = pd.concat([p for p in parts if len(p)], ignore_index=True)
    table = _integers(table.reindex(columns=RECORD_COLUMNS))
    if benchmark is not None:
        datasets = {dataset for (name, _), (_, dataset, _) in PAPER_NAMES.items() if name == benchmark}
        if benchmark == "mp100":
            datasets.add(CROSS_SUPERCATEGORY[1])
        from .benchmarks import BENCHMARKS

        known = {k[0] for k in PAPER_NAMES} | set(BENCHMARKS)
        if benchmark not in known:
            raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(sorted(known))}")
        table = table[table["dataset"].isin(datasets) | (table["benchmark"] == benchmark)]
    return table.reset_index(drop=True)


def provenance(table: pd.DataFrame) -> pd.DataFrame:
    """One row per measured run of `table`: its label (`method`) and where its numbers come from."""
    columns = ["method"] + [c for c in PROVENANCE if c != "name"]
    if "source" not in table or not (table["source"] == "measured").any():
        return pd.DataFrame(columns=columns)
    measured = table[table["source"] == "measured"]
    return measured.drop_duplicates("record")[columns].reset_index(drop=True)


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, setting, metric); columns (source, method): paper methods and measured runs apart,
    one column per run. `.attrs["provenance"]` holds `provenance(table)`."""
    if table.empty:
        return table
    if table.duplicated(["source", "method", "dataset", "setting", "metric"]).any():
        raise ValueError("two values for one (source, method, dataset, setting, metric): labels are not unique")
    wide = table.pivot(index=["dataset", "setting", "metric"], columns=["source", "method"], values="value")
    order = [c for c in wide.columns if c[0] == "paper"] + [c for c in wide.columns if c[0] == "measured"]
    wide = wide[order].astype(float).round(2)
    wide.attrs["provenance"] = provenance(table)
    return wide


# ----------------------------------------------------------------------------------------- a set's report
REPORT = ["set", "task", "variant", "category", "metric", "value", "low", "high", "units", "record"]
TASK_LABELS = {"text": "text", "visual": "visual 1-shot", "semantic": "semantic"}


def set_report(root: str | Path, set_name: str = "test") -> pd.DataFrame:
    """The records of one KeypointWorld set under `root` with their stored 95 % intervals: one row per (task,
    variant plain / off-centre, category "all" or a category name), values in percent. Records without a
    current `interval.json` give their value and no interval."""
    rows = []
    for path in sorted(Path(root).rglob("record.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record_set(record) != set_name:
            continue
        if record.get("detector") or record.get("task") == "detection":  # the detector's records: a table of their own
            continue
        spread = read_interval(path.parent, record)
        metric = record.get("headline_metric")
        variant = "off-centre" if "off-centre" in (record.get("annotations_description") or "") else "plain"
        task = TASK_LABELS.get(record.get("task"), record.get("task"))
        base = {"set": set_name, "task": task, "variant": variant, "metric": metric, "record": str(path)}
        if spread:
            parts = [("all", spread)] + list(spread["per_category"].items())
        else:
            parts = [("all", {"value": record["metrics"][metric], "units": record.get("units")})] + \
                [(name, {"value": c.get(metric)}) for name, c in sorted((record.get("per_category") or {}).items())]
        for category, c in parts:
            percent = {k: (c[k] * 100 if c.get(k) is not None else None) for k in ("value", "low", "high")}
            rows.append({**base, "category": category, **percent, "units": c.get("units")})
    table = pd.DataFrame(rows, columns=REPORT)
    order = {label: i for i, label in enumerate(["plain", "off-centre", *TASK_LABELS.values(), "all", *CATEGORY_NAMES])}
    return table.sort_values(["variant", "task", "category"], key=lambda col: col.map(lambda v: order.get(v, len(order))),
                             kind="stable").reset_index(drop=True)


def set_report_wide(report: pd.DataFrame) -> pd.DataFrame:
    """`set_report` as one table: a row per record (task, variant, metric, objects), a column per category
    ("all" first, then the world's order), cells 'value [low, high]' in percent with one decimal."""
    if report.empty:
        return pd.DataFrame(columns=["record", "all"])
    present = set(report["category"])
    categories = ["all"] + [c for c in CATEGORY_NAMES if c in present] + \
        sorted(c for c in present if c not in CATEGORY_NAMES and c != "all")
    rows = []
    for (variant, task, metric), part in report.groupby(["variant", "task", "metric"], sort=False):
        cells = part.set_index("category")
        units = cells.loc["all", "units"] if "all" in cells.index else None
        label = f"{task}{', off-centre' if variant == 'off-centre' else ''} ({metric}" + \
            (f", {int(units)} objects)" if pd.notna(units) else ")")
        row = {"record": label}
        for category in categories:
            if category not in cells.index:
                row[category] = "-"
                continue
            c = cells.loc[category]
            row[category] = f"{c['value']:.1f}" + (f" [{c['low']:.1f}, {c['high']:.1f}]" if pd.notna(c["low"]) else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=["record", *categories])


def set_report_markdown(report: pd.DataFrame) -> str:
    """`set_report_wide` as the Markdown table the docs carry (tests check the docs hold it as it is)."""
    wide = set_report_wide(report)
    if report.empty:
        return ""
    lines = ["| " + " | ".join(wide.columns) + " |", "|---|" + "---|" * (len(wide.columns) - 1)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.itertuples(index=False)]
    return "\n".join(lines)
