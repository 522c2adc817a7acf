"""Paper numbers and measured result records in one pandas table.

    from evaluation.results import results_table, side_by_side
    table = results_table("results/")            # paper rows + one row per metric of every record.json below results/
    print(side_by_side(table, benchmark="mp100"))

Values are percentages (as the paper prints them). The paper's rows come from
`evaluation/reference/paper_results.csv` (every number of the KptLLM++ paper, Tables 1-16).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

PAPER_CSV = Path(__file__).with_name("reference") / "paper_results.csv"
COLUMNS = ["source", "table", "task", "dataset", "setting", "method", "model_type", "metric", "value"]

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
}


def paper_results() -> pd.DataFrame:
    table = pd.read_csv(PAPER_CSV, dtype={"setting": str}, keep_default_na=False)
    table["value"] = table["value"].astype(float)
    table["source"] = "paper"
    return table[COLUMNS]


def _record_rows(path: Path) -> list[dict]:
    record = json.loads(path.read_text())
    task, dataset, setting = PAPER_NAMES.get((record["benchmark"], record["task"]),
                                             ("", record["benchmark"], ""))
    split = re.search(r"split\s*(\d)", Path(record.get("annotations", "")).name)
    setting = setting.format(shots=record.get("shots") or 1, split=f"split{split.group(1)}" if split else "")
    if record.get("limit"):
        setting = f"{setting} (first {record['limit']} units)".strip()
    method = Path(record["model"].rstrip("/")).name or record["model"]
    rows = []
    for metric, value in record["metrics"].items():
        scaled = value * 100 if value is not None and value >= 0 else value
        rows.append({"source": "measured", "table": "", "task": task, "dataset": dataset, "setting": setting,
                     "method": method, "model_type": "vision-language", "metric": metric, "value": scaled,
                     "record": str(path), "date": record.get("date")})
    return rows


def measured_results(results_dir: str | Path) -> pd.DataFrame:
    """One row per metric of every `record.json` under `results_dir` (recursively)."""
    rows = [row for path in sorted(Path(results_dir).rglob("record.json")) for row in _record_rows(path)]
    return pd.DataFrame(rows, columns=COLUMNS + ["record", "date"])


def results_table(results_dir: str | Path | None = None, benchmark: str | None = None) -> pd.DataFrame:
    """Paper rows plus measured rows; `benchmark` (e.g. "mp100", "coco") keeps that benchmark's dataset only."""
    parts = [paper_results()]
    if results_dir is not None and Path(results_dir).exists():
        parts.append(measured_results(results_dir))
    table = pd.concat([p for p in parts if len(p)], ignore_index=True)
    if benchmark is not None:
        datasets = {dataset for (name, _), (_, dataset, _) in PAPER_NAMES.items() if name == benchmark}
        if not datasets:
            raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(sorted({k[0] for k in PAPER_NAMES}))}")
        table = table[table["dataset"].isin(datasets)]
    return table.reset_index(drop=True)


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, setting, metric), one column per method, paper and measured methods together."""
    if table.empty:
        return table
    wide = table.pivot_table(index=["dataset", "setting", "metric"], columns="method", values="value", aggfunc="last")
    return wide.round(2)
