"""Export a trained model for shipping: weights in float16 (half the size), tokenizer, training curve.

    python -m evaluation.training.export --run runs/keypointworld --out assets/kptllm-keypointworld
    python -m evaluation.training.export --detector --run runs/det/best --out assets/kptllm-keypointworld-detector

Copies `RUN/model` (weights cast to `--dtype`; `--run RUN/best` or any model folder works too) and
`RUN/metrics.jsonl` (the training curve the dashboard draws), and draws `loss.png` from that curve. `--metrics OLD.jsonl RUN/metrics.jsonl` joins stages into one
curve (`join_stages`: a new stage continues the steps and seconds of the one before). The model card
(`README.md`) is written by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kptllm.modeling.model import KptLLMForKeypoints
from kptllm.processor import KptLLMProcessor

from .train import plot_loss


def export(run, out, dtype: str = "float16", metrics=None) -> Path:
    run, out = Path(run), Path(out)
    curves = _given_curves(metrics) or [run / "metrics.jsonl"]
    model_dir = run / "model" if (run / "model" / "config.json").is_file() else run
    model = KptLLMForKeypoints.from_pretrained(model_dir, dtype=torch.float32)
    processor = KptLLMProcessor.from_pretrained(model_dir, config=model.config)
    out.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    processor.save_pretrained(out)
    _drop_load_time_keys(out / "tokenizer_config.json")
    if write_curve(out, curves):
        plot_loss(out / "metrics.jsonl", out / "loss.png")  # the joined curve, every stage
    elif (run / "loss.png").is_file():
        (out / "loss.png").write_bytes((run / "loss.png").read_bytes())
    return out


def export_detector(run, out, dtype: str = "float16", metrics=None) -> Path:
    """The box detector (`evaluation.training.detector`): `RUN` is a run folder (its best/ is taken) or a model
    folder; weights cast to `dtype`, the image processor, and the training curve beside them: the `metrics`
    files of successive stages joined (`join_stages`), else the run's metrics.jsonl."""
    from kptllm.detection import ClosedSetDetector

    run, out = Path(run), Path(out)
    curves = _given_curves(metrics) or [log for log in (run / "metrics.jsonl", run.parent / "metrics.jsonl")
                                        if log.is_file()][:1]
    folder = run / "best" if (run / "best" / "config.json").is_file() else run
    ClosedSetDetector.from_pretrained(folder).save_pretrained(out, dtype=getattr(torch, dtype))
    # the stages' curves, else the run's own (RUN is the run folder, or a model folder inside it)
    write_curve(out, curves)
    if (folder / "validation.json").is_file():
        (out / "validation.json").write_text((folder / "validation.json").read_text())
    return out


def _given_curves(metrics) -> list[Path]:
    """The `--metrics` files, every one of which must exist: a mistyped path would silently drop its stage from
    the joined curve. Checked before anything is written."""
    paths = [Path(m) for m in metrics or ()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"export: training curve(s) given with --metrics not found: {', '.join(missing)}")
    return paths


def write_curve(out: Path, curves) -> bool:
    """OUT/metrics.jsonl: the existing `curves` files joined as successive stages (`join_stages`), written afresh
    (exporting twice gives the same file); False, and nothing written, when there is no row."""
    rows = join_stages([c for c in curves if c.is_file()])
    if rows:
        (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return bool(rows)


def join_stages(paths) -> list[dict]:
    """The training curves of successive stages as one curve: one file, or one whose rows carry `stage` (an
    earlier export), is kept as it is; each other file becomes the next stage, its `step` and `elapsed` continuing
    from the last row before it."""
    rows: list[dict] = []
    for path in paths:
        stage_rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if len(paths) == 1 or (stage_rows and all("stage" in row for row in stage_rows)):
            rows += stage_rows
            continue
        last = rows[-1] if rows else {}
        stage = int(last.get("stage", 0)) + 1
        for row in stage_rows:
            row = dict(row, step=row["step"] + last.get("step", 0), stage=stage)
            if "elapsed" in row:
                row["elapsed"] = round(row["elapsed"] + last.get("elapsed", 0.0), 2)
            rows.append(row)
    return rows


def _drop_load_time_keys(path: Path) -> None:
    """The tokenizer saves how it was loaded (`local_files_only` is true in an offline run): a shipped
    checkpoint must not tell its users' loaders to stay offline."""
    if path.is_file():
        config = json.loads(path.read_text())
        if {"local_files_only", "is_local"} & set(config):
            for key in ("local_files_only", "is_local"):
                config.pop(key, None)
            path.write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a training run folder (or a model folder)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--metrics", nargs="*", help="metrics.jsonl files of successive stages, joined into one curve")
    parser.add_argument("--detector", action="store_true", help="export the box detector (train-detector's run)")
    args = parser.parse_args(argv)
    try:
        _given_curves(args.metrics)
    except FileNotFoundError as error:
        parser.error(str(error))  # exit 2, nothing written
    print(export_detector(args.run, args.out, args.dtype, args.metrics) if args.detector else export(args.run, args.out, args.dtype, args.metrics))


if __name__ == "__main__":
    main()
