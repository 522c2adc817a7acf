"""`kptllm compare`: the paired bootstrap against an independent transcription, verdicts and refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.cli import main
from evaluation.compare import compare, load_run
from evaluation.intervals import interval, read_interval, write_interval
from evaluation.runner import run_benchmark


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    """(A, B_half, B_all, annotations): a tiny model's KeypointWorld text run; the same run with the first
    half / all of its units' answers replaced by the truth, rescored by the runner from those chunks."""
    from evaluation.data.keypointworld import write_dataset

    root = tmp_path_factory.mktemp("compare")
    annotations = write_dataset(root / "kw", 6, seed=11)
    images = str(annotations.parent / "images")
    a = root / "a"
    run_benchmark(str(tiny_dir), "keypointworld", str(annotations), images, str(a), task="text", chunk_size=4,
                  progress=False)
    truth = {ann["id"]: ann["keypoints"] for ann in json.loads(annotations.read_text())["annotations"]}
    made = []
    for name, share in (("b_half", 0.5), ("b_all", 1.0)):
        b = root / name
        shutil.copytree(a, b)
        (b / "record.json").unlink()
        keys = [p["key"] for c in sorted((b / "chunks").glob("*.json")) for p in json.loads(c.read_text())["predictions"]]
        oracle = set(keys[:round(len(keys) * share)])
        for chunk in sorted((b / "chunks").glob("*.json")):
            value = json.loads(chunk.read_text())
            for p in value["predictions"]:
                if p["key"] in oracle:
                    flat = truth[int(p["key"])]
                    p["keypoints"] = [[flat[3 * k], flat[3 * k + 1], 1.0] for k in range(len(flat) // 3)]
            chunk.write_text(json.dumps(value))
        run_benchmark(str(tiny_dir), "keypointworld", str(annotations), images, str(b), task="text", chunk_size=4,
                      progress=False)  # every chunk is reused: only the scoring runs
        made.append(b)
    return a, made[0], made[1], annotations


def _hits(folder, annotations) -> list[list[bool]]:
    """Per unit (in the run's order), PCK@0.2 hits of its labelled keypoints, written from the protocol."""
    anns = {a["id"]: a for a in json.loads(annotations.read_text())["annotations"]}
    out = []
    for chunk in sorted((folder / "chunks").glob("*.json")):
        for p in json.loads(chunk.read_text())["predictions"]:
            ann = anns[int(p["key"])]
            side = max(ann["bbox"][2], ann["bbox"][3])
            kp = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
            pred = np.asarray(p["keypoints"], dtype=float)
            out.append([bool(pred[k, 2] > 0 and np.hypot(*(pred[k, :2] - kp[k, :2])) / side < 0.2)
                        for k in range(len(kp)) if kp[k, 2] > 0])
    return out


def test_bootstrap_equals_an_independent_transcription(runs):
    a, b, _, annotations = runs
    got = compare(load_run(a), load_run(b), samples=300, seed=3)
    hits_a, hits_b = _hits(a, annotations), _hits(b, annotations)
    n = len(hits_a)
    pooled = lambda hits, idx: sum(sum(hits[i]) for i in idx) / sum(len(hits[i]) for i in idx)  # noqa: E731
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(300):
        idx = rng.integers(0, n, n)
        diffs.append(pooled(hits_b, idx) - pooled(hits_a, idx))
    low, high = np.percentile(diffs, [2.5, 97.5])
    everything = range(n)
    assert got.units == n and got.metric == "PCK@0.2"
    assert got.a == pytest.approx(pooled(hits_a, everything)) and got.b == pytest.approx(pooled(hits_b, everything))
    assert (got.low, got.high) == pytest.approx((low, high))
    assert got.b_better_share == pytest.approx(np.mean(np.array(diffs) > 0))
    assert got.difference > 0.1  # half the objects answered perfectly


def test_verdicts(runs):
    a, _, b_all, _ = runs
    same = compare(load_run(a), load_run(a), samples=50)
    assert same.difference == 0 and (same.low, same.high) == (0, 0) and same.verdict.startswith("no clear")
    better = compare(load_run(a), load_run(b_all), samples=100)
    assert better.b == 1.0 and better.low > 0 and better.verdict.startswith("B is better")
    worse = compare(load_run(b_all), load_run(a), samples=100)
    assert worse.difference == pytest.approx(-better.difference) and worse.verdict.startswith("B is worse")


def test_refusals(runs, tmp_path):
    a, b, _, annotations = runs
    with pytest.raises(ValueError, match="not offered"):
        compare(load_run(a), load_run(b), metric="AP")
    with pytest.raises(ValueError, match="samples must be at least 1"):
        compare(load_run(a), load_run(b), samples=0)
    with pytest.raises(ValueError, match="records no metric 'PCK@0.5'"):
        compare(load_run(a), load_run(b), metric="PCK@0.5")
    with pytest.raises(ValueError, match="is not here"):
        load_run(a, annotations=str(tmp_path / "nowhere.json"))
    other = tmp_path / "other"
    shutil.copytree(b, other)
    record = json.loads((other / "record.json").read_text())
    (other / "record.json").write_text(json.dumps({**record, "task": "semantic"}))
    with pytest.raises(ValueError, match="differ in task"):
        compare(load_run(a), load_run(other))
    (other / "record.json").write_text(json.dumps(record))
    chunk = sorted((other / "chunks").glob("*.json"))[0]
    value = json.loads(chunk.read_text())
    value["predictions"][0]["keypoints"] = [[0.0, 0.0, 0.0]] * len(value["predictions"][0]["keypoints"])
    chunk.write_text(json.dumps(value))
    with pytest.raises(ValueError, match="rescoring gives"):
        compare(load_run(a), load_run(other))
    moved = tmp_path / "moved.json"
    moved.write_text(annotations.read_text().replace('"id": 1,', '"id": 1 ,', 1) + " ")
    with pytest.raises(ValueError, match="is not the annotation file"):
        load_run(a, annotations=str(moved))
    with pytest.raises(ValueError, match="not a finished"):
        load_run(tmp_path)
    shutil.rmtree(other / "chunks")  # a clone of a run whose chunks were not kept
    with pytest.raises(ValueError, match="has no chunks/ folder"):
        load_run(other)


def test_the_shipped_records_carry_their_chunks():
    """README and model card show `kptllm compare` on results/: a clone needs the chunks of every shipped record
    (CI runs on a copy of the tracked files only, so there this fails if they are not in git)."""
    root = Path(__file__).resolve().parents[2]
    records = list(root.glob("results/**/record.json"))
    assert records
    for record in records:
        if json.loads(record.read_text()).get("task") == "detection":
            continue  # a detector's box AP has no work units (its detections are made again by the same command)
        assert any((record.parent / "chunks").glob("*.json")), record.parent


def test_a_record_s_interval_is_compare_s_bootstrap_of_that_run(runs):
    """On the same units, samples and seed, one record's percentile interval is what compare's resampling gives
    for that run: against B = every answer right (PCK 1 on any resample), compare's B - A is 1 - A per
    resample, so its interval is 1 - A's, mirrored; and both equal an independent transcription."""
    a, _, b_all, annotations = runs
    run = load_run(a)
    got = interval(run, samples=300, seed=3)
    against_truth = compare(run, load_run(b_all), samples=300, seed=3)
    assert (got["low"], got["high"]) == pytest.approx((1 - against_truth.high, 1 - against_truth.low), abs=1e-12)
    assert got["value"] == pytest.approx(against_truth.a) and got["units"] == against_truth.units
    hits = _hits(a, annotations)
    n = len(hits)
    rng = np.random.default_rng(3)
    draws = [rng.integers(0, n, n) for _ in range(300)]
    values = [sum(sum(hits[i]) for i in idx) / sum(len(hits[i]) for i in idx) for idx in draws]
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    assert got["low"] <= got["value"] <= got["high"] and got["low"] < got["high"]


def test_per_category_intervals_resample_each_category_s_units(runs):
    a, _, _, annotations = runs
    run = load_run(a)
    got = interval(run, samples=200, seed=5)
    anns = {x["id"]: x for x in json.loads(annotations.read_text())["annotations"]}
    names = {c["id"]: c["name"] for c in json.loads(annotations.read_text())["categories"]}
    counts = {}
    for key in run.predictions:
        counts[names[anns[int(key)]["category_id"]]] = counts.get(names[anns[int(key)]["category_id"]], 0) + 1
    assert {c: v["units"] for c, v in got["per_category"].items()} == counts
    for name, c in got["per_category"].items():
        assert c["value"] == pytest.approx(run.record["per_category"][name]["PCK@0.2"])  # the record's own breakdown
        assert c["low"] <= c["value"] <= c["high"]
    one = next(iter(got["per_category"]))  # a category's interval: that category's units alone, compare's draw
    keys = [k for k in run.predictions if names[anns[int(k)]["category_id"]] == one]
    rng = np.random.default_rng(5)
    values = [run.metric([keys[i] for i in rng.integers(0, len(keys), len(keys))], "PCK@0.2") for _ in range(200)]
    assert (got["per_category"][one]["low"], got["per_category"][one]["high"]) == pytest.approx(
        tuple(np.percentile(values, [2.5, 97.5])))


def test_an_interval_is_stored_beside_its_record_and_goes_stale_with_it(runs, tmp_path, capsys):
    a, *_ = runs
    mine = tmp_path / "a"
    shutil.copytree(a, mine)
    assert read_interval(mine) is None
    assert main(["interval", str(mine), "--samples", "40"]) == 0
    printed = capsys.readouterr().out
    stored = read_interval(mine)
    assert stored and stored["samples"] == 40 and stored == interval(load_run(mine), samples=40)
    assert f"[{stored['low']:.4f}, {stored['high']:.4f}]" in printed
    record = json.loads((mine / "record.json").read_text())
    (mine / "record.json").write_text(json.dumps({**record, "date": "2030-01-01T00:00:00+00:00"}))  # scored again
    assert read_interval(mine) is None
    write_interval(load_run(mine), interval(load_run(mine), samples=10))
    assert read_interval(mine)["samples"] == 10
    assert main(["interval", str(mine), "--metric", "AP"]) == 2
    assert "not offered" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["text", "visual", "semantic"])
def test_the_fast_bootstrap_draws_and_scores_as_the_slow_one(task):
    """On the shipped decision records (pooled PCK, per-query PCK, accuracy): the weighted-mean fast path gives
    the slow path's numbers, resample for resample (same draws, same scores)."""
    from evaluation.compare import compare, load_run, unit_weights

    root = Path(__file__).resolve().parents[2] / "results" / "decision"
    a, b = load_run(root / f"keypointworld-{task}"), load_run(root / f"keypointworld-offcentre-{task}")
    keys = [k for k in a.predictions if k in b.predictions]
    assert unit_weights(a, keys, "accuracy" if task == "semantic" else "PCK@0.2") is not None
    fast, slow = compare(a, b, samples=40), compare(a, b, samples=40, fast=False)
    for field in ("difference", "low", "high", "b_better_share"):
        assert getattr(fast, field) == pytest.approx(getattr(slow, field), abs=1e-12), field


def test_no_weighted_form_means_the_slow_path(runs):
    """A metric that is no weighted mean of per-unit values (a unit's value made up here) is refused by the
    check, and compare then scores every resample itself."""
    from evaluation import compare as module

    a = load_run(runs[0])
    keys = list(a.predictions)
    metric = module.bootstrap_metric(a)
    real = module.score

    def skewed(bench, predictions, with_ap=True):
        scored = real(bench, predictions, with_ap)
        if len(predictions) == 1:  # one unit alone: a value the full scoring never averages
            scored["metrics"][metric] = scored["metrics"][metric] * 0.5 + 0.25
        return scored

    module.score, saved = skewed, module.score
    try:
        assert module.unit_weights(a, keys, metric) is None
    finally:
        module.score = saved
