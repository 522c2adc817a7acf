"""Tab: Benchmarks — paper numbers next to measured records, filters, side by side, breakdowns, provenance, training curve."""

from __future__ import annotations

import textwrap

import gradio as gr
import pandas as pd
import plotly.express as px

from .. import benchmarks as data
from ..export import request_folder
from ..inputs import refuse
from . import gallery

MAX_BARS = 60


def _choices(table: pd.DataFrame, column: str) -> list[str]:
    return sorted(v for v in table[column].dropna().unique() if v != "")


LEGEND_CHARS = 28  # longer method names are cut in the legend (the full name is in the hover)
LABEL_CHARS = 46  # a bar's label: the method, then dataset · setting · metric on lines of about this many characters
LINE_PX = 15  # the chart's height per line of a bar's label (and BAR_GAP_PX per bar)
BAR_GAP_PX = 14
# the table's columns: what tells rows apart first (two rows of one method may differ only in setting), then the
# values; the widths fit 1280 px without scrolling sideways (long cells wrap), the method column stays pinned
TABLE_ORDER = ["method", "setting", "metric", "value", "low", "high", "n", "set", "dataset", "task", "source", "record"]
TABLE_WIDTHS = ["17%", "13%", "6%", "5%", "5%", "5%", "9%", "5%", "11%", "7%", "6%", "11%"]


def short_name(name: str, limit: int = LEGEND_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


def bar_label(method: str, dataset: str, setting: str, metric: str) -> str:
    """The method (cut to LEGEND_CHARS), then 'dataset · setting · metric' on lines of about LABEL_CHARS
    characters (Plotly breaks lines at <br>)."""
    where = textwrap.wrap(" · ".join(v for v in (dataset, setting, metric) if v), LABEL_CHARS)
    return "<br>".join([f"<b>{short_name(method)}</b>", *where])


def bar_chart(rows: pd.DataFrame):
    """Horizontal bars, one per row in the table's order from the top (labels read level whatever their length),
    one colour per method; at most `MAX_BARS` values, the title says when the rows were cut, and how many there are."""
    if rows.empty:
        return px.bar(title="No rows match the filters")
    shown = rows.head(MAX_BARS).copy()
    labels = [bar_label(*row) for row in shown[["method", "dataset", "setting", "metric"]].itertuples(index=False)]
    seen: dict[str, int] = {}
    for k, label in enumerate(labels):  # one bar per label: a repeated one gets its row number
        seen[label] = seen.get(label, 0) + 1
        labels[k] = label if seen[label] == 1 else f"{label} ({seen[label]})"
    shown["where"] = labels
    shown["legend"] = shown["method"].map(short_name)
    title = (f"All {len(shown)} values (percent)" if len(shown) == len(rows) else
             f"First {len(shown)} of {len(rows)} values (percent): narrow the filters to see the rest")
    figure = px.bar(shown, y="where", x="value", color="legend", barmode="overlay", pattern_shape="source",
                    orientation="h", hover_data=["method", "setting", "task", "source"], title=title,
                    category_orders={"where": labels})
    figure.update_yaxes(title="", automargin=True)
    height = 160 + sum(LINE_PX * (label.count("<br>") + 1) + BAR_GAP_PX for label in labels)
    figure.update_layout(xaxis_title="%", legend_title="method", height=height, bargap=0.3, showlegend=False)
    return figure


VALIDATION_SERIES = {"text_pck@0.2": "text PCK@0.2", "visual_pck@0.2": "visual 1-shot PCK@0.2",
                     "semantic_accuracy": "semantic accuracy"}


def curve_chart(curve: pd.DataFrame):
    """The training loss per step (rows with a loss; validation rows have none), one line per stage."""
    if curve.empty or "loss" not in curve:
        return px.line(title="No training log")
    curve = curve[curve["loss"].notna()]
    curve = curve.assign(stage=curve["stage"].fillna(1).astype(int).astype(str) if "stage" in curve else "1")
    figure = px.line(curve, x="step", y="loss", color="stage", log_y=True,
                     title="Embedded model: training loss (answer tokens) per step", hover_data=["lr", "elapsed"])
    figure.update_layout(height=380)
    return figure


def validation_chart(curve: pd.DataFrame):
    """Held-out validation at intervals (`validation` rows of metrics.jsonl): what chose the checkpoint."""
    if curve.empty or "validation" not in curve:
        return px.line(title="No held-out validation in the training log")
    rows = []
    for _, row in curve[curve["validation"].notna()].iterrows():
        for key, label in VALIDATION_SERIES.items():
            if row["validation"].get(key) is not None:
                quality = row["validation"].get("jpeg_quality")  # rows before 2026-12-08: lossless renders
                rows.append({"step": row["step"], "value": row["validation"][key], "metric": label,
                             "seed": row["validation"].get("seed"),
                             "images": f"JPEG {quality}" if quality else "lossless"})
    if not rows:
        return px.line(title="No held-out validation in the training log")
    figure = px.line(pd.DataFrame(rows), x="step", y="value", color="metric", markers=True, hover_data=["seed", "images"],
                     title="Held-out validation during training (KeypointWorld, the checkpoint-choosing seed)")
    figure.update_layout(height=340, yaxis_range=[0, 1])
    return figure


def filtered(tasks, datasets, metrics, methods, sources):
    table = data.load_results()
    rows = data.filter_table(table, tasks, datasets, metrics, methods, sources)
    # our own numbers first (in the table and the chart), the paper's after them, each in its own order
    rows = rows.sort_values("source", key=lambda source: source != "measured", kind="stable").reset_index(drop=True)
    csv = request_folder() / "kptllm-benchmarks.csv"
    rows.to_csv(csv, index=False)
    return rows[TABLE_ORDER], bar_chart(rows), str(csv)


def compare(methods, tasks, datasets, metrics):
    methods = list(methods or [])
    if not 2 <= len(methods) <= 3:
        raise refuse("Pick 2 or 3 methods to put side by side.")
    table = data.filter_table(data.load_results(), tasks, datasets, metrics)
    return data.side_by_side(table, methods)


def provenance() -> pd.DataFrame:
    table = data.load_results()
    measured = table[table["source"] == "measured"]
    return measured[["method", "setting", "metric", "value", *data.PROVENANCE]].reset_index(drop=True)


def breakdown(path: str | None):
    record = data.read_record(path)  # read once for the tables, the chart and the error kinds
    categories, keypoints = data.breakdowns(record, path)
    chart = px.bar(title="No per-category numbers in this record")
    if not categories.empty:
        metrics = [c for c in categories.columns if c not in ("category", "low", "high") and c not in data.COUNT_KEYS]
        wanted = data.headline(record)
        metric = wanted if wanted in metrics else metrics[0]
        bars = {}
        if metric == wanted and "low" in categories:  # the stored 95 % interval of the headline, as error bars
            bars = {"error_y": categories["high"] - categories[metric], "error_y_minus": categories[metric] - categories["low"]}
        chart = px.bar(categories, x="category", y=metric, title=f"{metric} per category (%)" +
                       (", 95 % intervals" if bars else ""), hover_data=categories.columns, **bars)
        chart.update_layout(height=360)
    kinds, confusions = data.semantic_errors(record)
    return categories, keypoints, chart, kinds, confusions


def build() -> None:
    table = data.load_results()
    records = sorted(table["record"].dropna().unique())
    gr.Markdown("Paper numbers (KptLLM++ paper, Tables 1-16) next to the numbers measured with `kptllm eval` "
                "(records under `results/`), in percent. Measured KeypointWorld numbers are **not** comparable to the "
                "paper's benchmarks: different data and a 8.7 M-parameter model.")
    view = data.default_view(table)
    with gr.Accordion("Filters: task, dataset, metric, method, source" + (
            " (opens on the measured records beside the paper's own methods on the same tasks and headline "
            "metrics: clear the filters and apply for every row)" if view["methods"] else ""), open=False,
            elem_id="bench-filters"):
        with gr.Row():
            tasks = gr.Dropdown(_choices(table, "task"), value=view["tasks"], multiselect=True, label="Task",
                                elem_id="bench-task")
            datasets = gr.Dropdown(_choices(table, "dataset"), multiselect=True, label="Dataset", elem_id="bench-dataset")
            metrics = gr.Dropdown(_choices(table, "metric"), value=view["metrics"], multiselect=True, label="Metric",
                                  elem_id="bench-metric")
            methods = gr.Dropdown(_choices(table, "method"), value=view["methods"], multiselect=True, label="Method",
                                  elem_id="bench-method")
            sources = gr.CheckboxGroup(["paper", "measured"], value=["paper", "measured"], label="Source")
        with gr.Row():
            apply = gr.Button("Apply filters", variant="primary", elem_id="bench-apply")
    first_rows, first_chart, first_csv = filtered(view["tasks"], [], view["metrics"], view["methods"], ["paper", "measured"])
    rows = gr.Dataframe(first_rows, label="Results (search / filter in the header)", show_search="filter", interactive=False,
                        max_height=420, wrap=True, column_widths=TABLE_WIDTHS, pinned_columns=1, elem_id="bench-table")
    csv = gr.DownloadButton("Download these rows (CSV)", value=first_csv, size="sm", elem_id="bench-csv")
    chart = gr.Plot(first_chart, label="Chart", elem_id="bench-chart")
    with gr.Accordion("Test set: the reported numbers (95 % intervals, per category)", open=True):
        gr.Markdown(data.set_note() + " Cells: value [95 % interval], percent; the interval is a bootstrap over "
                    "objects (`kptllm interval`, the resampling of `kptllm compare`).")
        gr.Dataframe(data.reported_set_table(), interactive=False, wrap=True, elem_id="bench-test-set")
    with gr.Accordion("Side by side (2-3 methods)", open=False):
        pick = gr.Dropdown(_choices(table, "method"), value=["KptLLM", "KptLLM++"], multiselect=True, max_choices=3,
                           label="Methods")
        compare_btn = gr.Button("Compare", elem_id="bench-compare")
        wide = gr.Dataframe(interactive=False, show_search="search", elem_id="bench-side")
    with gr.Accordion("Breakdowns of a measured record (per category / per keypoint)", open=False):
        record = gr.Dropdown(records, value=records[0] if records else None, label="Record", elem_id="bench-record")
        first_cats, first_kpts, first_cat_chart, first_kinds, first_confusions = breakdown(records[0] if records else None)
        cat_chart = gr.Plot(first_cat_chart, label="Per category")
        with gr.Row():
            cats = gr.Dataframe(first_cats, label="Per category", interactive=False)
            kpts = gr.Dataframe(first_kpts, label="Per keypoint", interactive=False, show_search="filter", max_height=360)
        with gr.Row():  # semantic records: what the wrong names are
            kinds = gr.Dataframe(first_kinds, label="Semantic answers by kind (mirror = left/right swapped)",
                                 interactive=False, elem_id="bench-kinds")
            confusions = gr.Dataframe(first_confusions, label="Most frequent confusions", interactive=False,
                                      elem_id="bench-confusions")
    with gr.Accordion("Predictions behind a record (gallery, side by side, export)", open=False,
                      elem_id="bench-gallery") as shown:
        gallery.build(shown)
    with gr.Accordion("Measured next to the paper (same task, data, setting and metric)", open=False):
        matched = data.measured_vs_paper(table)
        gr.Markdown("No measured record shares its data and setting with a paper row yet (the shipped records are on "
                    "KeypointWorld, our own benchmark): run `kptllm eval` on MP-100 or COCO to fill this table."
                    if matched.empty else "Difference = measured - paper, in percentage points.")
        gr.Dataframe(matched, interactive=False, elem_id="bench-vs-paper")
    with gr.Accordion("Provenance of every measured number", open=False):
        gr.Dataframe(provenance(), interactive=False, show_search="search", wrap=True, elem_id="bench-prov")
    with gr.Accordion("Training curve of the embedded model", open=True):
        curve = data.training_curve()
        gr.Plot(curve_chart(curve), elem_id="bench-curve")
        gr.Plot(validation_chart(curve), elem_id="bench-validation")
    inputs = [tasks, datasets, metrics, methods, sources]
    apply.click(filtered, inputs, [rows, chart, csv], api_name="benchmarks", queue=False)
    compare_btn.click(compare, [pick, tasks, datasets, metrics], wide, api_name="benchmarks_side_by_side", queue=False)
    record.change(breakdown, record, [cats, kpts, cat_chart, kinds, confusions], api_name="benchmarks_breakdown",
                  queue=False)
