"""The `kptllm` command line.

    kptllm tiny OUT_DIR [--seed N]
    kptllm convert locllm --checkpoint DIR --base-llm DIR_OR_ID --source LOCLLM_CODE_DIR --out OUT
    kptllm predict --model M --image IMG [--bbox x,y,w,h]
                   (--keypoints "nose,left eye" | --point x,y | --support IMG --support-points "x,y;x,y" [--support-bbox ...])
                   [--names "a,b"] [--json]

User mistakes print one line to stderr and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake in the command line or its inputs."""


def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise UserError(f"{what} must be {count} comma-separated numbers, got {text!r}") from None
    if len(values) != count:
        raise UserError(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def _points(text: str) -> list[tuple[float, float]]:
    items = [p for p in text.split(";") if p.strip()]
    if not items:
        raise UserError("--support-points is empty")
    return [_numbers(p, 2, "a support point") for p in items]


def _names(text: str) -> list[str]:
    """Comma-separated names, or `@FILE`: one name / description per line (so a description may hold commas)."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise UserError(f"names file not found: {path}")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        names = [n.strip() for n in text.split(",")]
    if not any(names):
        raise UserError("no keypoint names given")
    return names


def _print_results(results, as_json: bool, point=None) -> None:
    """`point`: the asked (x, y) of a describe call, carried in every row as "point" (None for detections)."""
    point = None if point is None else [float(v) for v in point]
    rows = [{"name": r.name, "point": point, "x": None if r.xy is None else round(r.xy[0], 2),
             "y": None if r.xy is None else round(r.xy[1], 2), "score": round(r.score, 4),
             "text": r.text, "parsed": r.parsed, "error": r.error, "raw": r.raw} for r in results]
    if as_json:
        print(json.dumps({"keypoints": rows}, ensure_ascii=False, indent=2))
        return
    for row in rows:
        where = "-" if row["x"] is None else f"({row['x']:.1f}, {row['y']:.1f})"
        status = "" if row["parsed"] else f"  [unparsed: {row['error']}; raw={row['raw']!r}]"
        print(f"{row['name'] or '?'}\t{where}\tscore={row['score']:.3f}{status}")


def _predict(args) -> None:
    from .predictor import KeypointPredictor

    modes = sum(x is not None for x in (args.keypoints, args.point, args.support))
    if modes != 1:
        raise UserError("give exactly one of --keypoints, --point or --support")
    if args.support is not None and args.support_points is None:
        raise UserError("--support needs --support-points")
    if args.model is None:
        from .embedded import embedded_model_path

        try:
            args.model = str(embedded_model_path())
        except FileNotFoundError as err:
            raise UserError(str(err)) from None
    if not os.path.exists(args.model) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"model not found: {args.model}")
    if not os.path.isfile(args.image):
        raise UserError(f"image not found: {args.image}")
    # the arguments' syntax is checked before the model loads (seconds for a large one)
    bbox = None if args.bbox is None else _numbers(args.bbox, 4, "--bbox")
    names = None if args.keypoints is None else _names(args.keypoints)
    point = None if args.point is None else _numbers(args.point, 2, "--point")
    support_points = None if args.support is None else _points(args.support_points)
    support_bbox = None if args.support_bbox is None else _numbers(args.support_bbox, 4, "--support-bbox")
    support_names = None if args.names is None else _names(args.names)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is for the one line that says what went wrong
    try:
        predictor = KeypointPredictor.from_pretrained(args.model, device=args.device)
    except OSError as err:
        raise UserError(f"cannot load model {args.model!r}: {str(err).splitlines()[0]}") from None
    predictor.set_image(args.image, bbox=bbox)
    if names is not None:
        results = predictor.detect(names)
    elif point is not None:
        results = [predictor.describe(point)]
    else:
        results = predictor.detect_from_example(args.support, support_points, support_bbox=support_bbox,
                                                names=support_names)
    _print_results(results, args.json, point)


def _tiny(args) -> None:
    from .build import save_tiny

    save_tiny(args.out_dir, seed=args.seed)
    print(f"wrote a tiny random KptLLM++ model to {args.out_dir}")


def _convert_locllm(args) -> None:
    import torch

    from .convert.locllm import convert_locllm

    dtype = None if args.dtype == "source" else getattr(torch, args.dtype)
    convert_locllm(args.checkpoint, args.base_llm, args.source, out=args.out, dtype=dtype)
    print(f"wrote the converted LocLLM checkpoint to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kptllm", description="Generic keypoint comprehension with KptLLM++.")
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("tiny", help="write a small randomly initialised model (tests, smoke runs)")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=_tiny)

    convert = commands.add_parser("convert", help="import another model's checkpoint")
    formats = convert.add_subparsers(dest="format", required=True)
    locllm = formats.add_parser("locllm", help="LocLLM (CVPR 2024): DINOv2-L + Vicuna-7B, text-prompted COCO keypoints")
    locllm.add_argument("--checkpoint", required=True, help="LocLLM checkpoint folder (hub d0ntcare/LocLLM, coco/)")
    locllm.add_argument("--base-llm", required=True, help="Vicuna-7B v1.5 folder or hub id (config + tokenizer)")
    locllm.add_argument("--source", required=True, help="LocLLM code folder (github kennethwdk/LocLLM): descriptions")
    locllm.add_argument("--out", required=True, help="output folder")
    locllm.add_argument("--dtype", default="source", choices=["source", "bfloat16", "float16", "float32"],
                        help="source (default): each part keeps its precision in the checkpoint (LocLLM: vision "
                             "tower, projector, LoRA float32; LLM bfloat16); else one dtype for all")
    locllm.set_defaults(run=_convert_locllm)

    predict = commands.add_parser("predict", help="run one of the three keypoint tasks on an image")
    predict.add_argument("--model", help="checkpoint folder or hub id (default: the embedded KeypointWorld model)")
    predict.add_argument("--image", required=True, help="query image")
    predict.add_argument("--bbox", help="object box x,y,w,h in pixels (default: whole image)")
    predict.add_argument("--keypoints", help='task (c): comma-separated names, e.g. "nose,left eye", or @FILE (one per line)')
    predict.add_argument("--point", help="task (a): x,y of a point on the image")
    predict.add_argument("--support", help="task (b): support image with marked keypoints")
    predict.add_argument("--support-points", help='task (b): "x,y;x,y" on the support image')
    predict.add_argument("--support-bbox", help="task (b): object box on the support image")
    predict.add_argument("--names", help="task (b)+(c): comma-separated names of the support points, or @FILE")
    predict.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(run=_predict)
    return parser


def run(args) -> int:
    """Run a parsed command: user mistakes -> one line on stderr and status 2; a closed pipe is not an error."""
    try:
        args.run(args)
    except (UserError, ValueError) as err:
        print(f"kptllm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = {"eval": f"; finished chunks are kept in {getattr(args, 'out', 'OUT')}: the same command resumes",
                "train": "; --resume continues from the last saved checkpoint"}.get(getattr(args, "command", None), "")
        print(f"kptllm: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `kptllm episodes ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as err:  # a path that cannot be read or written (a folder given for a file, no permission, ...)
        print(f"kptllm: error: {err.strerror or err}: {err.filename}" if err.filename else f"kptllm: error: {err}",
              file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
