"""What JPEG costs: the keypoint model and the detector on the same held-out scenes, lossless and through JPEG.

    PYTHONPATH=. python -m benchmarks.jpeg_cost [--objects 80] [--images 100] [--qualities 95 75] [--model M] [--detector D]
    PYTHONPATH=. python -m benchmarks.jpeg_cost --images 300 --seed 424242 --no-model   # the detector on the decision scenes

Rendered scenes are lossless in memory, but every file a set, a visitor or a camera gives is JPEG (the sets' files
are JPEG 95, `keypointworld.FILE_QUALITY`). For each quality (and the lossless render first, the baseline) this
prints the keypoint model's held-out numbers (`evaluation.training.validate`: text / visual PCK@0.2 and semantic
accuracy on `--objects` objects of the validation seed) and the detector's box AP / AP50 (`validate_detector`, plain
and off-centre, `--images` scenes of `--seed`), and each one's change against lossless. The same scenes every row:
only the encoding differs. Defaults: the embedded model and detector.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_KEYS = ("text_pck@0.2", "visual_pck@0.2", "semantic_accuracy")


def model_rows(predictor, objects: int, qualities, version=None) -> list[dict]:
    """One row per quality (None = lossless): the three held-out numbers of `validate` on the same objects."""
    from evaluation.training.validate import validate

    rows = []
    for quality in qualities:
        scores = validate(predictor, objects, version=version, jpeg_quality=quality)
        rows.append({"quality": quality, **{k: scores[k] for k in MODEL_KEYS}})
    return rows


def detector_rows(detector, images: int, qualities, seed: int | None = None) -> list[dict]:
    """One row per quality (None = lossless): box AP / AP50, plain and off-centre, on the same scenes."""
    from evaluation.training.detector import validate_detector
    from evaluation.training.validate import HELD_OUT_SEED

    rows = []
    for quality in qualities:
        found = validate_detector(detector, images, HELD_OUT_SEED if seed is None else seed, jpeg_quality=quality)
        rows.append({"quality": quality, **{f"{kind} {metric}": found[kind][metric]
                                            for kind in ("plain", "offcentre") for metric in ("AP", "AP50")}})
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: each quality's numbers and their change against the first (lossless) row ("-": not measured, e.g.
    no support of the category among a few objects)."""
    keys = [k for k in rows[0] if k != "quality"]
    lines = ["| images | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]

    def cell(row, key):
        value, base = row[key], rows[0][key]
        if value is None:
            return "-"
        return f"{value:.3f}" if row is rows[0] or base is None else f"{value:.3f} ({value - base:+.3f})"

    for row in rows:
        cells = [cell(row, k) for k in keys]
        name = "lossless" if row["quality"] is None else f"JPEG {row['quality']}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=80, help="keypoint model: objects of the validation seed")
    parser.add_argument("--images", type=int, default=100, help="detector: scenes of --seed")
    parser.add_argument("--seed", type=int, default=None, help="detector's scenes (default: the validation seed)")
    parser.add_argument("--qualities", type=int, nargs="+", default=[95, 75])
    parser.add_argument("--model", default=None, help="keypoint model folder (default: the embedded model)")
    parser.add_argument("--detector", default=None, help="detector folder (default: the embedded detector)")
    parser.add_argument("--no-model", action="store_true")
    parser.add_argument("--no-detector", action="store_true")
    args = parser.parse_args(argv)
    if any(not 1 <= q <= 100 for q in args.qualities):
        parser.error("--qualities are JPEG qualities, 1..100")
    qualities = [None, *args.qualities]
    out = {}
    if not args.no_model:
        from kptllm import KeypointPredictor
        from kptllm.embedded import embedded_model_path

        predictor = KeypointPredictor.from_pretrained(args.model or str(embedded_model_path()))
        out["model"] = model_rows(predictor, args.objects, qualities)
        print(f"keypoint model, {args.objects} objects of the validation seed\n{table(out['model'])}\n", flush=True)
    if not args.no_detector:
        from kptllm.detection import load_detector
        from kptllm.embedded import embedded_detector_path

        detector = load_detector(args.detector or str(embedded_detector_path()))
        out["detector"] = detector_rows(detector, args.images, qualities, args.seed)
        print(f"detector, {args.images} scenes (plain and off-centre)\n{table(out['detector'])}", flush=True)
    return out


if __name__ == "__main__":
    main()
