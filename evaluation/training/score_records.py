"""One command for a model's KeypointWorld records: the decision records and the test set, with intervals.

    python -m evaluation.training.score_records [--model MODEL] --out results            # both sets
    python -m evaluation.training.score_records --model runs/kw-cpu/best --out OUT --sets decision   # a candidate
    kptllm compare results/decision/keypointworld-visual OUT/decision/keypointworld-visual             # decide
    bash evaluation/training/score_records.sh MODEL OUT                                  # the same, as before

For each set named (`evaluation.data.keypointworld_sets`: decision, then test) the set's files are rendered
under DATA (default /tmp/kw-sets/<set>[-v<version>][-offcentre]) when missing (deterministic: same files for the
same seed and world version; `--world-version`, default `keypointworld.DEFAULT_VERSION`), then six `kptllm eval` records are written, OUT/<set>/keypointworld-<run>: text, visual (1-shot),
semantic, and the same three on the off-centre copies (offcentre-text, offcentre-visual,
offcentre-semantic). Each record says its set (`set` field, from the file's description), and gets its
95 % interval, overall and per category, beside it (`interval.json`, `evaluation.intervals`).

A candidate is scored on the decision set only (`--sets decision`); the test set is scored once, for the
model that shipped, after the decision (the rule in keypointworld_sets). Finished records are reused
(`kptllm eval` resumes), so a second call only fills what is missing.

`--detector NAME_OR_PATH` ("embedded": the detector shipped in assets/) adds, per set, the detector's box AP
(OUT/detector/<set>/keypointworld-detection and keypointworld-offcentre-detection) and the whole chain's three
records, every box from that detector (OUT/detector/<set>/keypointworld-<task>, `evaluation.detected_boxes`),
each with its interval like the others; the ratio to the same task with ground-truth boxes is what issue 27
asks. They live apart from the set's own six records, which the set's report (`results.set_report`) is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.keypointworld import VERSIONS
from ..data.keypointworld_sets import SETS

TASKS = ("text", "visual", "semantic")
DEFAULT_DATA = Path("/tmp/kw-sets")
SCORED_SETS = ("decision", "test")  # the sets with files; validation is drawn object by object during training


RUNS = [(task, off) for off in (False, True) for task in TASKS]  # (task, off-centre): the six records of a set


def record_folder(out, set_name: str, task: str, offcentre: bool = False) -> Path:
    """Where the record of `task` on set `set_name` goes under `out` (e.g. OUT/test/keypointworld-offcentre-text)."""
    return Path(out) / set_name / f"keypointworld-{'offcentre-' if offcentre else ''}{task}"


def _model_path(model: str | None) -> str:
    """The model as records name it: the embedded model when None, relative to here when inside it."""
    if model is None:
        from kptllm.embedded import embedded_model_path

        model = str(embedded_model_path())
    path = Path(model)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return path.relative_to(Path.cwd()).as_posix()
    return model


def detector_folder(out, set_name: str, task: str, offcentre: bool = False) -> Path:
    """Where a detector record goes: OUT/detector/<set>/keypointworld-[offcentre-]detection for its box AP,
    OUT/detector/<set>/keypointworld-<task> for the chain."""
    return record_folder(Path(out) / "detector", set_name, task, offcentre)


def score_records(model: str | None, out, sets=SCORED_SETS, data=DEFAULT_DATA, samples: int = 1000, batch: int = 16,
                  limit: int | None = None, predictor=None, progress: bool = True,
                  detector: str | None = None, world_version: int | None = None) -> dict[str, dict]:
    """Render (when missing) and score the named sets; {record folder: its interval} (module docstring; a
    detector's box-AP records have no interval). `limit`: only the first N units of each record (tests);
    `predictor`: an already loaded one; `detector`: add the detector's records; `world_version`: the
    KeypointWorld version of the sets' files (default: the current default)."""
    from ..compare import load_run
    from ..intervals import interval, write_interval
    from ..runner import run_benchmark

    unknown = [s for s in sets if s not in SCORED_SETS]
    if unknown:
        raise ValueError(f"unknown or file-less sets {unknown}; score {', '.join(SCORED_SETS)}")
    model = _model_path(model)
    if predictor is None:
        from kptllm import KeypointPredictor

        predictor = KeypointPredictor.from_pretrained(model)
    done = {}
    for set_name in SCORED_SETS:  # the decision records first: the test set comes after the decision
        if set_name not in sets:
            continue
        kw_set = SETS[set_name]
        files = {off: kw_set.write(Path(data) / kw_set.folder_name(off, world_version), off, world_version)
                 for off in (False, True)}
        chain = [(task, False, detector) for task in TASKS] if detector is not None else []
        for task, off, boxes_from in [(task, off, None) for task, off in RUNS] + chain:
            folder = record_folder(out, set_name, task, off) if boxes_from is None else \
                detector_folder(out, set_name, task, off)
            run_benchmark(model, "keypointworld", str(files[off]), str(files[off].parent / "images"), str(folder),
                          task=task, shots=1, predictor=predictor, batch=batch, limit=limit, progress=progress,
                          detector=boxes_from)
            run = load_run(folder)
            result = interval(run, samples=samples)
            write_interval(run, result)
            done[str(folder)] = result
        if detector is not None:
            from ..detected_boxes import run_detection_benchmark

            for off in (False, True):
                folder = detector_folder(out, set_name, "detection", off)
                record = run_detection_benchmark(detector, str(files[off]), str(files[off].parent / "images"), str(folder))
                done[str(folder)] = {"set": set_name, "metric": "AP", "value": record["metrics"]["AP"],
                                     "low": None, "high": None}
    return done


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_arg", nargs="?", metavar="MODEL", help="model folder (or --model)")
    parser.add_argument("out_arg", nargs="?", metavar="OUT", help="output folder (or --out)")
    parser.add_argument("data_arg", nargs="?", metavar="DATA", help="where the sets' files are (or --data)")
    parser.add_argument("--model", help="model folder (default: the embedded model)")
    parser.add_argument("--out", help="output folder: OUT/<set>/keypointworld-<run>")
    parser.add_argument("--data", help=f"where the sets' files are rendered (default {DEFAULT_DATA})")
    parser.add_argument("--sets", nargs="+", default=list(SCORED_SETS), choices=SCORED_SETS,
                        help="which sets (default: decision test; a candidate: decision)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples of the intervals")
    parser.add_argument("--detector", help="also the detector's box AP and the chain with its boxes ('embedded' or a folder)")
    parser.add_argument("--world-version", type=int, choices=VERSIONS,
                        help="KeypointWorld version of the sets' files (default: keypointworld.DEFAULT_VERSION)")
    args = parser.parse_args(argv)
    out = args.out or args.out_arg
    if not out:
        parser.error("give the output folder (OUT or --out)")
    done = score_records(args.model or args.model_arg, out, args.sets, args.data or args.data_arg or DEFAULT_DATA,
                         args.samples, detector=args.detector, world_version=args.world_version)
    for folder, result in done.items():
        spread = [round(result["low"], 4), round(result["high"], 4)] if result["low"] is not None else None
        print(json.dumps({"record": folder, "set": result["set"], "metric": result["metric"],
                          "value": round(result["value"], 4), "interval": spread}))


if __name__ == "__main__":
    main()
