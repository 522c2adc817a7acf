"""`kptllm compare`: the paired bootstrap against an independent transcription, verdicts and refusals."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.cli import main
from evaluation.benchmarks import score
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


# ----------------------------------------------------------------------------------------- --by-keypoint
def _keypoint_shares(folder, annotations) -> dict[str, tuple[int, int]]:
    """"category/name" -> (hits, labelled) of a text run, written from the protocol (PCK@0.2 of max(w, h))."""
    data = json.loads(annotations.read_text())
    anns, cats = {a["id"]: a for a in data["annotations"]}, {c["id"]: c for c in data["categories"]}
    out: dict[str, list[int]] = {}
    for chunk in sorted((folder / "chunks").glob("*.json")):
        for p in json.loads(chunk.read_text())["predictions"]:
            ann = anns[int(p["key"])]
            side = max(ann["bbox"][2], ann["bbox"][3])
            kp = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
            pred = np.asarray(p["keypoints"], dtype=float)
            for k, name in enumerate(cats[ann["category_id"]]["keypoints"]):
                if kp[k, 2] > 0:
                    tally = out.setdefault(f"{cats[ann['category_id']]['name']}/{name}", [0, 0])
                    tally[0] += bool(pred[k, 2] > 0 and np.hypot(*(pred[k, :2] - kp[k, :2])) / side < 0.2)
                    tally[1] += 1
    return {name: (hits, n) for name, (hits, n) in out.items()}


def test_each_keypoint_s_change_is_its_pooled_share_in_both_runs(runs):
    """A against B_half (half the units answered with the truth): every keypoint's A and B equal an independent
    count from the chunks and annotations, its interval is the same unit draws as compare's, and a keypoint that
    A already finds everywhere cannot move."""
    from evaluation.compare import draws, keypoint_changes

    a_folder, b_folder, _, annotations = runs
    a, b = load_run(a_folder), load_run(b_folder)
    changes = keypoint_changes(a, b, samples=200, seed=3)
    truth_a, truth_b = _keypoint_shares(a_folder, annotations), _keypoint_shares(b_folder, annotations)
    assert {c.keypoint for c in changes} == set(truth_a)
    assert [c.difference for c in changes] == sorted(c.difference for c in changes)  # worst first
    for c in changes:
        (hits_a, n), (hits_b, n_b) = truth_a[c.keypoint], truth_b[c.keypoint]
        assert (c.counted, c.a, c.b) == (n, pytest.approx(hits_a / n), pytest.approx(hits_b / n_b))
        assert c.low <= c.difference <= c.high and c.b >= c.a  # B only ever gained right answers
        if hits_a == n:
            assert (c.low, c.high, c.beyond) == (0.0, 0.0, False)
    # the interval of one keypoint, transcribed: the same draws over the units in A's order
    keys = [k for k in a.predictions if k in b.predictions]
    moved = next(c for c in reversed(changes) if c.difference > 0)
    held = []
    for key in keys:
        one = {}
        for run in (a, b):
            bench = copy.copy(run.bench)
            bench.units = [run.units[key]]
            one[run is b] = score(bench, [run.predictions[key]], with_ap=False)["per_keypoint"].get(moved.keypoint)
        held.append(one)
    differences = []
    for drawn in draws(len(keys), 200, 3):
        got = [held[i] for i in drawn if held[i][False] is not None]
        if got:
            differences.append(np.mean([g[True] for g in got]) - np.mean([g[False] for g in got]))
    assert (moved.low, moved.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])), abs=1e-12)


def test_visual_runs_break_down_by_keypoint_where_query_and_support_show_it():
    """The visual (CAPE) scoring's per-keypoint shares: pooled over the instances where the keypoint counts (seen in
    the query and the support; distances over max(w, h) of the protocol's sanitised query box), transcribed here
    from the shipped decision record's chunks."""
    from evaluation.compare import keypoint_table
    from evaluation.data import clean_bbox

    run = load_run(Path(__file__).resolve().parents[2] / "results" / "decision" / "keypointworld-visual")
    keys = list(run.predictions)[:120]
    names, values, counted = keypoint_table(run, keys)
    ds = run.bench.dataset
    tally: dict[str, list[int]] = {}
    for key in keys:
        unit, pred = run.units[key], np.asarray(run.predictions[key]["keypoints"], dtype=float)
        query = ds.annotation(unit["query_id"])
        shown = np.all([ds.annotation(i).visible for i in unit["support_ids"]], axis=0) & query.visible
        image = ds.images[query.image_id]
        box = clean_bbox(query.bbox, image.width, image.height) or query.bbox
        side = max(box[2], box[3])
        category = ds.category_of(query)
        for k in np.flatnonzero(shown):
            t = tally.setdefault(f"{category.name}/{category.keypoint_names[k]}", [0, 0])
            t[0] += bool(np.hypot(*(pred[k, :2] - query.keypoints[k, :2])) / side < 0.2)
            t[1] += 1
    assert set(names) == set(tally)
    for g, name in enumerate(names):
        assert (values[:, g] * counted[:, g]).sum() == pytest.approx(tally[name][0])
        assert counted[:, g].sum() == tally[name][1]


def test_compare_by_keypoint_on_the_command_line(runs, capsys):
    a, b, _, _ = runs
    assert main(["compare", str(a), str(b), "--samples", "50", "--by-keypoint"]) == 0
    out = capsys.readouterr().out
    assert "per keypoint" in out and "person/" in out.split("per keypoint")[1]
    assert main(["compare", str(a), str(b), "--samples", "50", "--by-keypoint", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["per_keypoint"]
    assert rows and {"keypoint", "a", "b", "difference", "low", "high", "counted", "beyond"} <= set(rows[0])
    assert main(["compare", str(a), str(b), "--samples", "50", "--json"]) == 0
    assert "per_keypoint" not in json.loads(capsys.readouterr().out)
