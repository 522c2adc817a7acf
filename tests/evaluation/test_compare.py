"""`kptllm compare`: the paired bootstrap against an independent transcription, verdicts and refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.cli import main
from evaluation.compare import compare, load_run
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
    records = list(root.glob("results/*/record.json"))
    assert records
    for record in records:
        assert any((record.parent / "chunks").glob("*.json")), record.parent
