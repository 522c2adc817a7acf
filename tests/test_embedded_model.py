"""The embedded KeypointWorld model: loads with no argument, answers, keeps its held-out accuracy, and its
test-set records are the ones the docs report.

The thresholds are the accuracy measured for the shipped checkpoint (docs and the model card) minus a
margin for the small sample; the off-centre check is what catches crop and inverse-map bugs: the same
objects pasted at an offset into larger non-square canvases must score the same. The test set itself
(300 images) is not evaluated here: its committed records are checked to be the shipped model's, complete,
with current intervals, and to be what the docs print (`pytest -s` prints the table).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kptllm import KeypointPredictor
from kptllm.embedded import EMBEDDED_MODEL_DIR, embedded_model_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedded():
    return KeypointPredictor.from_pretrained(device="cpu")


def test_the_embedded_model_ships_small_and_loads_with_no_argument(embedded):
    assert embedded_model_path() == EMBEDDED_MODEL_DIR
    weights = sum(f.stat().st_size for f in EMBEDDED_MODEL_DIR.glob("*.safetensors"))
    assert weights <= 30 * 2 ** 20
    assert (EMBEDDED_MODEL_DIR / "README.md").is_file()
    assert embedded.model.projector.weight.dtype.is_floating_point


def test_missing_embedded_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("KPTLLM_EMBEDDED_MODEL", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="embedded model"):
        KeypointPredictor.from_pretrained()


def test_main_job_prints_parsed_answers_without_a_model_argument():
    example = json.loads((ROOT / "assets" / "examples" / "keypointworld.json").read_text())["keypointworld_person.jpg"]
    bbox = ",".join(str(v) for v in example["bbox"])
    out = subprocess.run([sys.executable, "-m", "evaluation.cli", "predict", "--image",
                          str(ROOT / "assets" / "examples" / "keypointworld_person.jpg"), "--bbox", bbox,
                          "--keypoints", "left shoulder,right knee", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["keypoints"]
    assert [r["parsed"] for r in rows] == [True, True]
    assert [r["text"] for r in rows] == ["left shoulder", "right knee"]


def test_held_out_accuracy_and_no_loss_off_centre(embedded):
    from evaluation.training.validate import validate

    # 60 objects of the checkpoint-choosing seed (900001). The shipped model (stage 19, stages 16 and 18 averaged)
    # measures 0.967 / 0.842 / 0.923 here, off-centre 0.967 / 0.844 / 0.923. Stage 16 (on the v2 scenes the seed
    # draws since v2 became the default) measured 0.969 / 0.851 / 0.912, off-centre 0.967 / 0.852 / 0.910; the
    # visual floor moved 0.845 -> 0.825 with the world's version to keep its margin. On v1 scenes: stage 12, 240
    # CPU steps on stage 10, a third of its scenes off-centre, 0.961 / 0.872 / 0.898 (stage 10: 0.955 / 0.857 /
    # 0.878; stage 9, the pixel read added: 0.958 / 0.836 / 0.863; stage 8: 0.954 / 0.813 / 0.809; stage 7:
    # 0.967 / 0.797 / 0.787; stage 6: 0.932 / 0.780 / 0.721; stage 5: 0.933 / 0.625 / 0.609); held with a
    # margin of 0.025-0.03 for other CPUs' rounding. The reported numbers are the test set's
    # (results/test, `test_the_test_set_is_reported_with_intervals_per_category`)
    # lossless renders (jpeg_quality=None): with the processor's fill colour the shifted copies' crops are then
    # pixel for pixel the plain ones, so only a frame bug can move an answer (training validates on JPEG files)
    plain = validate(embedded, objects=60, jpeg_quality=None)
    shifted = validate(embedded, objects=60, shift=True, neutral_canvas=True, jpeg_quality=None)
    assert plain["text_pck@0.2"] >= 0.93, plain
    assert plain["visual_pck@0.2"] >= 0.825, plain
    assert plain["semantic_accuracy"] >= 0.87, plain
    assert shifted["text_pck@0.2"] >= plain["text_pck@0.2"] - 0.03, (plain, shifted)
    assert shifted["visual_pck@0.2"] >= plain["visual_pck@0.2"] - 0.03, (plain, shifted)
    assert shifted["semantic_accuracy"] >= plain["semantic_accuracy"] - 0.03, (plain, shifted)


def test_kptllm_eval_on_held_out_keypointworld_and_off_centre_copies(tmp_path):
    """The benchmark of record, through the CLI: held-out seeds, then the same scenes off-centre."""
    from evaluation.cli import main

    records = {}
    for variant, extra in (("plain", []), ("offcentre", ["--offcentre"])):
        data = tmp_path / variant
        assert main(["synth", "--out", str(data), "--n", "12", "--seed", "515151", *extra]) == 0
        assert main(["eval", "--benchmark", "keypointworld", "--task", "text", "--annotations",
                     str(data / "annotations.json"), "--images", str(data / "images"), "--out", str(tmp_path / f"r-{variant}")]) == 0
        records[variant] = json.loads((tmp_path / f"r-{variant}" / "record.json").read_text())
    plain, moved = records["plain"]["metrics"]["pck@0.2"], records["offcentre"]["metrics"]["pck@0.2"]
    assert plain >= 0.85, records["plain"]["metrics"]  # 0.909 with the shipped model
    assert abs(moved - plain) <= 0.06, (plain, moved)  # 0.913 off-centre (12 images: a noisier 0.03)
    assert records["plain"]["counts"]["unparsed"] == 0


def demo_examples_answered(predictor) -> dict:
    """How the model answers the demo's own examples, given as the tabs give them (with their boxes): per
    task the share answered right. The examples are made by a rule that never looks at the model's answers
    (`demo/make_examples.py`): semantics asks each drawing's first labelled keypoint; the visual prompt marks
    the first 6 keypoints of each support; the text prompt asks every keypoint name. A location is right within
    0.2 x the longer side of the query's box (the PCK@0.2 of the benchmarks)."""
    from demo.tabs.visual import EXAMPLE_KEYPOINTS
    from PIL import Image

    folder = ROOT / "assets" / "examples"
    queries = json.loads((folder / "keypointworld.json").read_text())
    supports = json.loads((folder / "keypointworld_supports.json").read_text())
    hits = {"semantic": [], "visual": [], "text": []}

    def near(xy, truth, box) -> bool:
        return xy is not None and float(np.hypot(xy[0] - truth[0], xy[1] - truth[1])) < 0.2 * max(box[2], box[3])

    for file, query in queries.items():
        image = Image.open(folder / file)
        predictor.set_image(image, tuple(query["bbox"]))
        (answer,) = predictor.describe([tuple(query["keypoints"][0][:2])])
        hits["semantic"].append(answer.text == query["names"][0])
        labelled = [k for k, (_, _, v) in enumerate(query["keypoints"]) if v > 0]
        for k, result in zip(labelled, predictor.detect([query["names"][k] for k in labelled])):
            hits["text"].append(near(result.xy, query["keypoints"][k], query["bbox"]))
        support_file, support = next((f, s) for f, s in supports.items() if s["category"] == query["category"])
        marked = support["keypoints"][:EXAMPLE_KEYPOINTS]
        results = predictor.detect_from_example(Image.open(folder / support_file), [tuple(p) for p in marked],
                                                support_bbox=tuple(support["bbox"]))
        for k, result in enumerate(results):
            if query["keypoints"][k][2] > 0:
                hits["visual"].append(near(result.xy, query["keypoints"][k], query["bbox"]))
    return {task: sum(v) / len(v) for task, v in hits.items()} | {"n": {task: len(v) for task, v in hits.items()}}


def test_the_demo_examples_are_answered_as_measured(embedded):
    """The demo's own examples with their boxes (issue 18): the shipped model (stage 19, as stage 16) finds every
    text-prompt keypoint (67 of 67) and 28 of the 30 visual-prompt ones, and names all 5 semantics examples (stage
    12: 67, 29, 5; stage 10: 67, 28, 5; stage 9: 67, 29, 5 of 5; stage 8: 67, 30, 4; stage 7: 67, 29, 4; stage 6: 27
    of 30 and 3 of 5; stages 17 and 18, not shipped: 26 and 27 of 30). Floors set with one keypoint / one example of
    margin under stage 12; stages 16 and 19 sit on the visual floor."""
    answered = demo_examples_answered(embedded)
    assert answered["n"] == {"semantic": 5, "visual": 30, "text": 67}
    assert answered["text"] >= 66 / 67, answered
    assert answered["visual"] >= 28 / 30, answered
    assert answered["semantic"] >= 4 / 5, answered


def test_the_test_set_is_reported_with_intervals_per_category():
    """The shipped model's records on the decision and test sets (`evaluation.data.keypointworld_sets`): six each,
    every one saying its set, scored on the whole set by the shipped checkpoint (a new model ships with both sets
    scored again: `bash evaluation/training/score_records.sh`), with a current 95 % interval overall and per
    category; and the test set's table is the one README, BENCHMARKS and the model card print."""
    from evaluation.data.keypointworld import CATEGORY_NAMES
    from evaluation.data.keypointworld_sets import DECISION, TEST
    from evaluation.intervals import read_interval
    from evaluation.results import set_report, set_report_markdown
    from evaluation.runner import checkpoint_hash
    from evaluation.training.score_records import RUNS, record_folder

    shipped = checkpoint_hash(str(EMBEDDED_MODEL_DIR))
    for kw_set in (DECISION, TEST):
        folders = {record_folder(ROOT / "results", kw_set.name, task, off): off for task, off in RUNS}
        assert set((ROOT / "results" / kw_set.name).glob("keypointworld-*")) == set(folders)
        for folder, off in folders.items():
            record = json.loads((folder / "record.json").read_text())
            assert record["set"] == kw_set.name and record["annotations_description"] == kw_set.description(off)
            assert record["checkpoint_sha256"] == shipped, f"{folder}: not the shipped model's record"
            assert record["units_evaluated"] == record["units_total"] and not record["limit"]
            spread = read_interval(folder, record)
            assert spread and spread["samples"] >= 1000 and spread["units"] == record["units"], folder
            assert spread["low"] <= spread["value"] <= spread["high"] and spread["high"] - spread["low"] < 0.15
            assert set(spread["per_category"]) == set(CATEGORY_NAMES)
            assert sum(c["units"] for c in spread["per_category"].values()) == spread["units"]
            assert all(c["low"] <= c["value"] <= c["high"] for c in spread["per_category"].values())
    table = set_report_markdown(set_report(ROOT / "results", "test"))
    assert table.count("\n") == 7  # header, rule, six records
    print(f"\nKeypointWorld test set (seed {TEST.seed}, {TEST.images} images), value [95 % interval], percent:\n{table}")
    for doc in (ROOT / "README.md", ROOT / "docs" / "BENCHMARKS.md", EMBEDDED_MODEL_DIR / "README.md"):
        assert table in doc.read_text(), f"{doc.relative_to(ROOT)} does not print the test set's table as it is"
