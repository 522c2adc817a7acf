"""The full `kptllm` command: the library's commands (`tiny`, `predict`) plus evaluation.

    kptllm episodes --annotations FILE --shots S [--episodes N] [--queries Q] [--seed X]
    kptllm eval --model M --benchmark NAME --annotations FILE --images DIR [--task T] [--shots S] [--limit N] --out DIR
                [--allow-missing] [--name NAME] [--boxes DETECTIONS.json] [--supercategory "Human Body"]
                [--semantic-labels LABELS.json]
    kptllm results [--benchmark NAME] [--results DIR] [--csv]
    kptllm train --config CONFIG --output DIR [--resume] [--dry-run]
    kptllm synth --out DIR --n N --seed S
    kptllm interval RECORD_DIR [RECORD_DIR ...] [--samples N] [--seed X] [--no-write] [--json]
    kptllm show RECORD_DIR [--worst N | --best N] [--against RECORD_DIR] [--category C] [--keypoint NAME] --out grid.png
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from kptllm.cli import UserError, build_parser, run


def _episodes(args) -> None:
    from .data import KeypointDataset, make_episodes

    dataset = KeypointDataset.load(args.annotations)
    for episode in make_episodes(dataset, args.shots, episodes=args.episodes, queries=args.queries, seed=args.seed):
        print(json.dumps(episode.to_json()))


def _shard(text: str | None):
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard takes INDEX/COUNT, e.g. 0/4; got {text!r}") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {text}: need 0 <= INDEX < COUNT")
    return index, count


def _eval(args) -> None:
    from .runner import run_benchmark

    if args.task == "detection":
        from .detected_boxes import run_detection_benchmark

        if args.benchmark != "keypointworld":
            raise UserError("--task detection is a KeypointWorld benchmark (box AP of the embedded detector's categories)")
        try:
            record = run_detection_benchmark(args.detector, args.annotations, args.images, args.out, name=args.name)
        except (OSError, ValueError) as err:
            raise UserError(str(err)) from None
        print(json.dumps({"benchmark": record["benchmark"], "task": "detection", "metrics": record["metrics"],
                          "counts": record["counts"], "record": f"{args.out}/record.json"}, indent=1))
        return

    if args.model is None:
        from kptllm.embedded import embedded_model_path

        try:
            args.model = str(embedded_model_path())
        except FileNotFoundError as err:
            raise UserError(str(err)) from None

    record = run_benchmark(args.model, args.benchmark, args.annotations, args.images, args.out, task=args.task,
                           shots=args.shots, episodes=args.episodes, seed=args.seed, limit=args.limit,
                           chunk_size=args.chunk_size, allow_missing=args.allow_missing, name=args.name,
                           supercategory=args.supercategory, boxes=args.boxes, batch=args.batch,
                           shard=_shard(args.shard), constrained=not args.no_constraints,
                           semantic_labels=args.semantic_labels, detector=args.detector)
    if record is None:
        print(json.dumps({"shard": args.shard, "complete": False, "out": args.out}))
        return
    print(json.dumps({"benchmark": record["benchmark"], "task": record["task"], "metrics": record["metrics"],
                      "counts": record["counts"], "record": f"{args.out}/record.json"}, indent=1))


def _results(args) -> None:
    import pandas as pd

    from .results import provenance, results_table, side_by_side

    if args.results is None:  # default: ./results when there is one (the paper's numbers alone otherwise)
        args.results = "results"
    elif not Path(args.results).is_dir():
        raise UserError(f"results folder not found: {args.results}")
    table = results_table(args.results, benchmark=args.benchmark)
    if args.csv:
        table.to_csv(sys.stdout, index=False)
        return
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
        wide = side_by_side(table)
        print(wide.to_string())
        runs = provenance(table)
        if len(runs):
            print("\nmeasured runs:")
            for measured in runs.itertuples():
                units = f"{measured.units_evaluated} of {measured.units_total} units" if pd.notna(measured.units_total) else \
                    f"{measured.units_evaluated} units"
                sha = measured.checkpoint_sha256[:12] if isinstance(measured.checkpoint_sha256, str) else "-"
                kw_set = f"  {measured.set} set" if isinstance(measured.set, str) else ""
                print(f"  {measured.method}: {measured.date}  checkpoint {sha}  {measured.annotations_label}{kw_set}  {units}  "
                      f"{measured.record}")


def _compare(args) -> None:
    from .compare import as_json, compare, keypoint_changes, keypoint_report, load_run, report

    a = load_run(args.a, args.annotations_a, args.semantic_labels)
    b = load_run(args.b, args.annotations_b, args.semantic_labels)
    result = compare(a, b, args.metric, args.samples, args.seed)
    changes = keypoint_changes(a, b, args.samples, args.seed) if args.by_keypoint else None
    if args.json:
        print(as_json(result, changes))
    else:
        print(report(result, a, b) + (keypoint_report(changes) if changes is not None else ""))


def _interval(args) -> None:
    from .compare import load_run
    from .intervals import interval, report, write_interval

    results = []
    for folder in args.records:
        run = load_run(folder, args.annotations, args.semantic_labels)
        result = interval(run, args.metric, args.samples, args.seed)
        if not args.no_write:
            write_interval(run, result)
        results.append(result)
        if not args.json:
            print(report(result, folder))
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=1))


def _show(args) -> None:
    from .gallery import ORDERS, load_gallery, select
    from .gallery_render import export

    if args.worst is not None and args.best is not None:
        raise UserError("give --worst N or --best N, not both")
    count = args.worst if args.worst is not None else args.best
    order = args.order or ("best" if args.best is not None else "worst")
    if order not in ORDERS:
        raise UserError(f"--order must be one of {', '.join(ORDERS)}")
    if not 32 <= args.size <= 1024 or args.columns < 1:
        raise UserError("--size must be 32-1024 pixels and --columns at least 1")
    gallery = load_gallery(args.record, args.annotations, args.images)
    against = load_gallery(args.against, args.annotations_against, args.images_against) if args.against else None
    if args.category and args.category not in gallery.categories():
        raise UserError(f"no category {args.category!r} in {args.record}; it has {', '.join(gallery.categories())}")
    if args.keypoint and args.keypoint not in gallery.keypoint_names(args.category):
        raise UserError(f"no counted keypoint {args.keypoint!r}" + (f" of {args.category}" if args.category else "") +
                        f" in {args.record}; e.g. {', '.join(gallery.keypoint_names(args.category)[:8])}")
    pairs = select(gallery, order, args.category, args.keypoint, count or 24, against)
    selection = {"order": order, "category": args.category, "keypoint": args.keypoint, "count": len(pairs)}
    png, js = export(pairs, gallery, args.out, against, args.size, args.columns, args.keypoint, selection)
    if gallery.missing:
        print(f"kptllm show: {len(gallery.missing)} images of {args.record} are not here (drawn grey): "
              f"{', '.join(gallery.missing[:5])}" + (" ..." if len(gallery.missing) > 5 else ""), file=sys.stderr)
    print(json.dumps({"grid": str(png), "json": str(js), "entries": len(pairs), "order": order}))


def _resumable(args) -> bool:
    """--auto-resume: True when --output holds a checkpoint. A run that logged but never saved has nothing to
    resume: its log is kept aside as metrics.unsaved.jsonl and the run starts again."""
    if not args.auto_resume:
        return False
    output = Path(args.output)
    if (output / "checkpoint" / "step.json").is_file():
        return True
    if (output / "metrics.jsonl").is_file():
        os.replace(output / "metrics.jsonl", output / "metrics.unsaved.jsonl")
    return False


def _train(args) -> None:
    from .training.train import TrainConfig, train

    config = TrainConfig.load(args.config)
    for key in ("log_every", "stop_after", "steps", "time_limit", "time_budget", "num_workers", "images_per_step", "save_every", "mixed_precision",
                "seed", "validate_every"):
        value = getattr(args, key)
        if value is not None:
            setattr(config.train, key, value)
    if args.dry_run:
        from .training.data import DEFAULT_TASK_WEIGHTS, tokenizer_corpus
        from .training.model import build_model, count_parameters

        # the tokenizer a scratch model trains is part of its size (embedding and LM-head rows): build it as train does
        model, _ = build_model(config.model, meta=True, tokenizer_text=tokenizer_corpus())
        trainable, total = count_parameters(model)
        print(f"model: {config.model.get('type', 'scratch')}  trainable {trainable:,}  total {total:,} parameters")
        for spec in config.data.get("sources", []):
            print("data:", json.dumps(spec))
        print("tasks:", json.dumps(config.data.get("tasks") or DEFAULT_TASK_WEIGHTS))
        return
    if not args.output:
        raise UserError("train needs --output DIR (or --dry-run)")
    try:
        result = train(config, args.output, resume=args.resume or _resumable(args), progress=not args.no_progress)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(json.dumps(result))


def _train_detector(args) -> None:
    from .training.detector import DetectorTrainConfig, train_detector

    try:
        config = DetectorTrainConfig.load(args.config)
    except (OSError, ValueError) as err:
        raise UserError(str(err)) from None
    for key in ("steps", "time_budget", "seed", "batch_size", "save_every", "validate_every", "threads"):
        value = getattr(args, key)
        if value is not None:
            setattr(config.train, key, value)
    output = Path(args.output)
    resume = args.resume or (args.auto_resume and (output / "checkpoint" / "step.json").is_file())
    try:
        result = train_detector(config, output, resume=resume)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(json.dumps(result))


def _synth(args) -> None:
    from .data.keypointworld import DEFAULT_VERSION, write_dataset

    if args.world_version is None:
        args.world_version = DEFAULT_VERSION
    if args.n < 1:
        raise UserError("--n must be >= 1")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, not {args.seed}")
    try:
        path = write_dataset(args.out, args.n, args.seed, offcentre=args.offcentre, version=args.world_version)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(json.dumps({"annotations": str(path), "images": str(path.parent / "images"), "n": args.n, "seed": args.seed}))


def build_full_parser():
    from .benchmarks import BENCHMARKS, CROSS_SUPERCATEGORIES

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")  # the sub-command group

    episodes = commands.add_parser("episodes", help="print MP-100 episodes, one JSON line each")
    episodes.add_argument("--annotations", required=True)
    episodes.add_argument("--shots", type=int, required=True)
    episodes.add_argument("--episodes", type=int, default=200, help="per category (default 200)")
    episodes.add_argument("--queries", type=int, default=15)
    episodes.add_argument("--seed", type=int, default=1, help="1 reproduces the reference sampler")
    episodes.set_defaults(run=_episodes)

    evaluate = commands.add_parser("eval", help="run a model on a benchmark (resumable)")
    evaluate.add_argument("--model", help="checkpoint folder or hub id (default: the embedded KeypointWorld model)")
    evaluate.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    evaluate.add_argument("--annotations", required=True)
    evaluate.add_argument("--images", required=True, help="image folder")
    evaluate.add_argument("--task", choices=["semantic", "visual", "text", "detection"],
                          help="detection: box AP of --detector (default: the embedded detector)")
    evaluate.add_argument("--detector", metavar="NAME_OR_PATH",
                          help="every object's box from this detector ('embedded', a folder, a hub id), not the file: "
                               "the whole chain (an object it misses scores 0); with --task detection, the detector scored")
    evaluate.add_argument("--shots", type=int, default=1)
    evaluate.add_argument("--episodes", type=int, default=200)
    evaluate.add_argument("--seed", type=int, default=1)
    evaluate.add_argument("--limit", type=int, help="only the first N work units")
    evaluate.add_argument("--chunk-size", type=int, default=32, help="work units per resumable chunk")
    evaluate.add_argument("--batch", type=int, default=16,
                          help="work units decoded together (1 = one at a time; default 16)")
    evaluate.add_argument("--shard", help="INDEX/COUNT: compute every COUNT-th chunk; the last shard to finish "
                                          "scores the run (same --out for all shards)")
    evaluate.add_argument("--no-constraints", action="store_true",
                          help="decode without the answer grammar (coordinates may then fail to parse)")
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="score the work units whose images exist (default: refuse when any is missing)")
    evaluate.add_argument("--boxes", help="COCO detection results: score OKS AP on detected boxes (mmpose protocol)")
    evaluate.add_argument("--supercategory", choices=list(CROSS_SUPERCATEGORIES),
                          help="mp100 visual: MP-100 cross-supercategory setting (paper Table 3)")
    evaluate.add_argument("--semantic-labels", metavar="LABELS.json",
                          help="mp100 semantic: what each keypoint is called, {\"name\": ..., \"categories\": "
                               "{category: [label or null, ...]}} (default: the built-in kptllm-mp100-v1)")
    evaluate.add_argument("--name", help="method name in `kptllm results` (default: model folder name + short hash)")
    evaluate.set_defaults(run=_eval)

    results = commands.add_parser("results", help="paper numbers and measured numbers side by side")
    results.add_argument("--benchmark")
    results.add_argument("--results", help="folder searched for record.json files (default: ./results if present)")
    results.add_argument("--csv", action="store_true", help="the long table as CSV")
    results.set_defaults(run=_results)
    comparing = commands.add_parser("compare", help="is run B better than run A? paired bootstrap over their units")
    comparing.add_argument("a", help="a `kptllm eval --out` folder (the baseline)")
    comparing.add_argument("b", help="another run of the same benchmark, task and shots")
    comparing.add_argument("--metric", help="a metric of the records (default: the headline; not AP)")
    comparing.add_argument("--samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    comparing.add_argument("--seed", type=int, default=0)
    comparing.add_argument("--annotations-a", help="A's annotation file, if not at the path its record names")
    comparing.add_argument("--annotations-b", help="B's annotation file, if not at the path its record names")
    comparing.add_argument("--semantic-labels", help="mp100 semantic runs made with their own label file")
    comparing.add_argument("--json", action="store_true")
    comparing.add_argument("--by-keypoint", action="store_true",
                           help="also each keypoint's share right in A and B with its interval, worst change first")
    comparing.set_defaults(run=_compare)
    spread = commands.add_parser("interval", help="95 %% interval of a record's headline metric, overall and per "
                                                  "category (bootstrap over its units, as compare resamples)")
    spread.add_argument("records", nargs="+", metavar="RECORD_DIR", help="`kptllm eval --out` folders")
    spread.add_argument("--metric", help="a metric of the records (default: the headline; not AP)")
    spread.add_argument("--samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    spread.add_argument("--seed", type=int, default=0)
    spread.add_argument("--annotations", help="the annotation file, if not at the path the record names")
    spread.add_argument("--semantic-labels", help="mp100 semantic runs made with their own label file")
    spread.add_argument("--no-write", action="store_true", help="print only (default: also write interval.json "
                                                                 "beside record.json, read by `kptllm results` and the dashboard)")
    spread.add_argument("--json", action="store_true")
    spread.set_defaults(run=_interval)
    showing = commands.add_parser("show", help="the predictions behind a record, drawn: a PNG grid plus its JSON")
    showing.add_argument("record", help="a `kptllm eval --out` folder (e.g. results/decision/keypointworld-visual)")
    showing.add_argument("--out", required=True, help="the grid, a .png path; the JSON is written beside it")
    showing.add_argument("--worst", type=int, metavar="N", help="the N units with the lowest score (default 24)")
    showing.add_argument("--best", type=int, metavar="N", help="the N units with the highest score")
    showing.add_argument("--order", help="worst, best, file, gain or loss (gain / loss: B's score minus A's; need --against)")
    showing.add_argument("--against", help="a second record of the same benchmark and task: each unit drawn A | B")
    showing.add_argument("--category", help="only this category's units")
    showing.add_argument("--keypoint", help="only units that count this keypoint, drawn and sorted by it alone")
    showing.add_argument("--size", type=int, default=256, help="tile side in pixels (default 256)")
    showing.add_argument("--columns", type=int, default=6)
    showing.add_argument("--annotations", help="the record's annotation file, if not where the record says")
    showing.add_argument("--images", help="the record's image folder, if not where the record says")
    showing.add_argument("--annotations-against", help="--against's annotation file, if not where its record says")
    showing.add_argument("--images-against", help="--against's image folder, if not where its record says")
    showing.set_defaults(run=_show)
    training = commands.add_parser("train", help="train a model from a YAML config (resumable; accelerate-aware)")
    training.add_argument("--config", required=True)
    training.add_argument("--output", help="run folder: metrics.jsonl, loss.png, checkpoint/, model/")
    training.add_argument("--resume", action="store_true", help="continue the run in --output")
    training.add_argument("--auto-resume", action="store_true",
                          help="continue the run in --output if it has a checkpoint, else start it (for restarts)")
    training.add_argument("--validate-every", type=int, help="override train.validate_every (steps)")
    training.add_argument("--dry-run", action="store_true", help="build on the meta device, print sizes and data")
    training.add_argument("--steps", type=int, help="override train.steps")
    training.add_argument("--time-limit", type=float, help="seconds; save and stop when reached")
    training.add_argument("--time-budget", type=float,
                          help="seconds of training in all: the cosine spans them, then save and stop (--steps: upper bound)")
    training.add_argument("--num-workers", type=int, help="data loader workers")
    training.add_argument("--images-per-step", type=int, help="override train.images_per_step (per process)")
    training.add_argument("--seed", type=int,
                          help="override train.seed: item i is drawn from seed [SEED, i], so a model continued with "
                               "the seed it was trained with sees the same scenes again")
    training.add_argument("--save-every", type=int)
    training.add_argument("--log-every", type=int)
    training.add_argument("--stop-after", type=int, help="save and stop after this step (schedule unchanged)")
    training.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    training.add_argument("--no-progress", action="store_true")
    training.set_defaults(run=_train)

    det = commands.add_parser("train-detector", help="train the KeypointWorld box detector (RT-DETR) from a YAML config (resumable)")
    det.add_argument("--config", required=True)
    det.add_argument("--output", required=True, help="run folder: metrics.jsonl, checkpoint/, best/")
    det.add_argument("--resume", action="store_true", help="continue the run in --output")
    det.add_argument("--auto-resume", action="store_true", help="continue the run in --output if it has a checkpoint, else start it")
    det.add_argument("--steps", type=int)
    det.add_argument("--time-budget", type=float, help="seconds of training in all (the cosine spans them)")
    det.add_argument("--seed", type=int)
    det.add_argument("--batch-size", type=int)
    det.add_argument("--save-every", type=int)
    det.add_argument("--validate-every", type=int)
    det.add_argument("--threads", type=int, help="torch threads (default: the config's, 1)")
    det.set_defaults(run=_train_detector)

    synth = commands.add_parser("synth", help="render KeypointWorld images + a COCO annotation file")
    synth.add_argument("--out", required=True)
    synth.add_argument("--n", type=int, required=True, help="number of images")
    synth.add_argument("--seed", type=int, required=True)
    synth.add_argument("--offcentre", action="store_true",
                       help="the same scenes pasted off-centre into larger non-square canvases")
    synth.add_argument("--world-version", type=int, default=None,
                       help="KeypointWorld version (default: keypointworld.DEFAULT_VERSION; 2 draws quadrupeds' hind legs "
                            "as a real animal's)")
    synth.set_defaults(run=_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_full_parser().parse_args(argv))


def _exit_worker(code: int) -> None:
    """End a torchrun worker (WORLD_SIZE > 1) without the interpreter's teardown: with torch 2.13's gloo, a
    finished worker aborted in its C++ static destructors now and then ("terminate called without an active
    exception", exit -6, one run in ~10 after its weights and final state were written), failing the whole
    run. Everything is written and the process group destroyed by then (evaluation.training.train)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _exit_worker(code)
    sys.exit(code)
